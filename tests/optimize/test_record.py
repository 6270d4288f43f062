"""The study record: written and read in one module, with one judgement of feasibility."""

from __future__ import annotations

import optuna
import pytest

from autocompress.config import Budget
from autocompress.errors import StudyError
from autocompress.optimize import record
from autocompress.optimize.record import Baseline, StudyRecord, violations


def _study() -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(directions=["maximize", "minimize", "minimize"])


def test_what_is_written_reads_back_typed() -> None:
    study = _study()
    dense = Baseline(accuracy=0.9, latency_ms=2.0, size_bytes=3000, params=700)
    record.write_identity(study, {"model": "digits-cnn", "target": "cpu"})
    record.write_baseline(study, dense, {"cpu": "zen4"})
    record.write_setup(
        study,
        budget=Budget(latency_ms=1.0, max_drop=0.01),
        space={"source": "default.yaml", "knobs": 4},
        versions={"torch": "2.13.0"},
        metric_name="top1",
        finetune_steps=30,
    )
    record.write_alternatives(study, [{"label": "onnxruntime int8", "latency_ms": 0.5}])
    record.write_verified(study, {"3": {"measured_ms": 0.8, "ratio": 0.4}})

    got = record.read(study)
    assert got.version == record.RECORD_VERSION
    assert got.identity == {"model": "digits-cnn", "target": "cpu"}
    assert got.baseline == dense and got.dense() == dense
    assert got.fingerprint == {"cpu": "zen4"}
    assert got.budget == Budget(latency_ms=1.0, max_drop=0.01)
    assert (got.metric_name, got.finetune_steps) == ("top1", 30)
    assert got.alternatives == ({"label": "onnxruntime int8", "latency_ms": 0.5},)
    assert got.verified == {"3": {"measured_ms": 0.8, "ratio": 0.4}}
    assert record.is_ours(study)


def test_a_study_from_before_the_record_reads_with_defaults() -> None:
    study = _study()
    study.set_user_attr("identity", {"model": "digits-cnn"})  # no version, no budget, no figures
    got = record.read(study)
    assert got.version == 1 and got.budget is None and got.baseline is None
    assert got.verified == {} and got.alternatives == () and got.finetune_steps is None
    with pytest.raises(StudyError, match="has no dense figures yet"):
        got.dense()


def _trial(study: optuna.Study, constraints: dict[str, float], **attrs: object) -> int:
    trial = study.ask()
    for name, value in constraints.items():
        trial.set_constraint(name, value)
    for name, value in attrs.items():
        trial.set_user_attr(name, value)
    study.tell(trial, [0.9, 1.0, 1000])
    return trial.number


def test_violations_take_the_verify_steps_word_over_the_searchs() -> None:
    study = _study()
    slow = _trial(study, {"latency_ms": -0.2, "size_bytes": -5.0}, predicted_ms=0.8)
    fast = _trial(study, {"latency_ms": 0.3}, predicted_ms=1.3)
    broken = _trial(study, {"latency_ms": -0.5}, predicted_ms=0.5)
    verified = {
        str(slow): {"measured_ms": 1.25},
        str(fast): {"measured_ms": 0.9},
        str(broken): {"measured_ms": None, "error": "RuntimeError: no kernel"},
    }
    rec = StudyRecord(name="s", budget=Budget(latency_ms=1.0), verified=verified)
    trials = {t.number: t for t in study.trials}

    # As the search scored them (predicted latency).
    assert violations(trials[slow]) == {}
    assert violations(trials[fast]) == {"latency_ms": 0.3}
    # As measured: the measured latency replaces the predicted one, an unbuilt plan is over.
    assert violations(trials[slow], rec) == {"latency_ms": pytest.approx(0.25)}
    assert violations(trials[fast], rec) == {}
    assert violations(trials[broken], rec) == {"verify": 1.0}


def test_the_reference_a_trial_was_carried_by_is_the_measurement_that_gave_its_latency() -> None:
    study = _study()
    searched = _trial(study, {}, measured_ms=0.4, measurement={"ratio": 0.2, "to_dense": 0.45})
    verified = _trial(study, {}, predicted_ms=0.5)
    predicted = _trial(study, {}, predicted_ms=0.6)
    old = _trial(study, {}, measured_ms=0.7, measurement={"ratio": 0.35})
    rec = StudyRecord(name="s", verified={str(verified): {"measured_ms": 0.5, "to_dense": 0.5}})
    trials = {t.number: t for t in study.trials}
    assert record.reference_to_dense(trials[searched], rec) == 0.45
    assert record.reference_to_dense(trials[verified], rec) == 0.5
    assert record.reference_to_dense(trials[predicted], rec) is None
    assert record.reference_to_dense(trials[old], rec) is None  # recorded before to_dense


def test_dense_figures_written_by_hand_are_refused_by_name() -> None:
    study = _study()
    study.set_user_attr("baseline", {"accuracy": 0.9, "latency_ms": 1.0})
    with pytest.raises(StudyError, match="holds dense figures autocompress did not write"):
        record.read(study)

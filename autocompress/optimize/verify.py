"""The verify step: after a search, build and measure every front candidate on the target."""

from __future__ import annotations

import logging
from typing import Any

import optuna

from autocompress.compress.apply import plan_notes
from autocompress.config import Plan
from autocompress.latency.profile import Bar, time_plan
from autocompress.optimize import record
from autocompress.optimize.objectives import SearchContext
from autocompress.optimize.pareto import Candidate, pareto_front

log = logging.getLogger(__name__)


def verify_front(study: optuna.Study, ctx: SearchContext, *, show_progress: bool = True) -> int:
    """Measure each front candidate that has no measured latency yet, and store the figures.

    A candidate's measured latency replaces its predicted one in `show`, the report and
    `--pick`; one that misses the latency budget when measured is flagged infeasible there.
    A candidate measured slower than predicted can leave the front and let a trial it hid
    onto it, so the front is measured again until every candidate on it is measured. The
    figures go to the study's `verified` attribute (trial number -> `measured_ms`, `ratio`,
    `predicted_ms`, `to_dense`: see `record.reference_to_dense`), since finished trials
    cannot be changed. A plan that fails to build or time is recorded with its `error` and
    marked infeasible; the others are measured still.

    Args:
        study: the study, after its trials.
        ctx: the search context (dense model, task, target, inputs, baseline).
        show_progress: draw a progress bar.

    Returns:
        How many candidates were measured now.
    """
    todo = _unmeasured(study)
    if not todo:
        return 0
    verified = dict(record.read(study).verified)
    measured = 0
    with Bar(len(todo), enabled=show_progress) as bar:
        while todo:
            bar.describe(f"verify: measuring {measured + len(todo)} front candidates")
            for c in todo:
                verified[str(c["trial"])] = _measure(c, ctx)
                measured += 1
                bar.advance()
            record.write_verified(study, verified)
            # Each round measures trials never measured before, so this ends.
            todo = _unmeasured(study)
            bar.grow(len(todo))
    return measured


def _unmeasured(study: optuna.Study) -> list[Candidate]:
    return [
        c for c in pareto_front(study) if c["measured_ms"] is None and c["verify_error"] is None
    ]


def _measure(c: Candidate, ctx: SearchContext) -> dict[str, Any]:
    """One candidate's verify figures, or the reason its plan could not be built or timed."""
    try:
        with plan_notes() as not_applied:
            measurement = time_plan(
                ctx.dense, Plan.from_dict(c["plan"]), ctx.task, ctx.target, ctx.latency_inputs
            )
    except Exception as exc:  # one broken build must not cost the user the whole front
        detail = (str(exc).splitlines() or [""])[0][:160]
        log.warning("verify: trial %d could not be built or timed: %s", c["trial"], detail)
        return {
            "measured_ms": None,
            "error": f"{type(exc).__name__}: {detail}",
            "predicted_ms": c["predicted_ms"],
        }
    ratio = measurement.ratio
    assert ratio is not None
    figures = {
        "measured_ms": ratio * ctx.baseline.latency_ms,
        "ratio": ratio,
        "predicted_ms": c["predicted_ms"],
        # export times the file against the same reference and carries it by this same ratio
        "to_dense": measurement.to_dense,
    }
    return figures | ({"not_applied": not_applied} if not_applied else {})

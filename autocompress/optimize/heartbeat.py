"""Crash safety for the ask/tell loop: heartbeats of running trials, and failing and retrying
the trials of workers that died (SIGKILL, a lost machine) without telling the study.

Optuna records heartbeats only inside `study.optimize`; our loop uses ask/tell, so it keeps
them itself with the storage's public `record_heartbeat`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # optuna is imported where used, so `autocompress --help` stays instant
    import optuna

DEFAULT_HEARTBEAT_S = 30
MAX_RETRY = 2  # a plan whose workers died three times is not tried again

_log = logging.getLogger(__name__)
# What a queued trial was given (`optimize.refine`, `optimize.polish`); a retry keeps it.
_QUEUED_ATTRS = frozenset(
    {"warm_start", "refined_from", "refine_step", "polished_from", "polish_steps"}
)


def storage_options(url: str, heartbeat_s: int | None) -> dict[str, Any]:
    """Keyword arguments of `optuna.storages.RDBStorage` for `url`.

    SQLite waits for a lock instead of failing at once (several local workers write to one
    file); PostgreSQL and MySQL give up connecting after 10 s, so an unreachable server is
    reported quickly; a dropped connection is reopened.
    """
    if url.startswith("sqlite"):
        # isolation_level None: the driver leaves transactions to serialize_sqlite_transactions
        engine: dict[str, Any] = {"connect_args": {"timeout": 60, "isolation_level": None}}
    elif url.startswith(("postgresql", "mysql")):
        engine = {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
    else:
        engine = {}
    options: dict[str, Any] = {"engine_kwargs": engine}
    if heartbeat_s:
        if heartbeat_s < 1:
            raise ValueError(f"heartbeat_s must be a positive integer, got {heartbeat_s}")
        options["heartbeat_interval"] = int(heartbeat_s)
        options["grace_period"] = 2 * int(heartbeat_s)
    else:
        options["heartbeat_interval"] = None
    return options


def serialize_sqlite_transactions(engine: Any) -> None:
    """Make every SQLite transaction take the write lock when it begins (BEGIN IMMEDIATE).

    Python's sqlite3 driver runs a SELECT outside any transaction, so two workers could both
    read a queued trial as WAITING and both take it (Optuna's SELECT ... FOR UPDATE means
    nothing to SQLite); seen here with 2 local workers. Serialized, the second one waits and
    then sees the trial RUNNING. The waits are short: a transaction is a few statements.
    """
    from sqlalchemy import event

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _interval(storage: optuna.storages.BaseStorage) -> int | None:
    import optuna

    if isinstance(storage, optuna.storages.RDBStorage):
        return storage.get_heartbeat_interval()
    return None


@contextmanager
def heartbeat(storage: optuna.storages.BaseStorage, trial_id: int) -> Iterator[None]:
    """Record the trial's heartbeat now and then every interval until the block ends."""
    interval = _interval(storage)
    if not interval:
        yield
        return
    storage.record_heartbeat(trial_id)  # before any work: a worker killed now is still seen
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            try:
                storage.record_heartbeat(trial_id)
            except Exception as exc:  # a missed beat is retried next interval; never fatal
                _log.warning("heartbeat of trial id %d not recorded: %s", trial_id, exc)

    thread = threading.Thread(target=beat, name=f"heartbeat-{trial_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def fail_stale_trials(study: optuna.Study, storage: optuna.storages.BaseStorage) -> list[int]:
    """Fail the running trials whose worker stopped sending heartbeats, and queue them again.

    Each such trial gets a `fail_reason`, and a copy with the same parameters is enqueued
    (user attribute `retry_of`; Optuna's `failed_trial`/`retry_history` system attributes),
    at most MAX_RETRY times per plan. Several workers may call this at once: only the one that
    moves a trial to FAIL enqueues its retry.

    Returns:
        The numbers of the trials this call failed.
    """
    import optuna
    from optuna.trial import TrialState

    interval = _interval(storage)
    if not interval:
        return []
    assert isinstance(storage, optuna.storages.RDBStorage)
    study_id = storage.get_study_id_from_name(study.study_name)
    grace = storage.grace_period or 2 * interval
    failed = []
    # The only way to ask the storage for stale trials; optuna's own fail_stale_trials calls it.
    for trial_id in storage._get_stale_trial_ids(study_id):
        reason = (
            f"its worker stopped sending heartbeats for over {grace} s (killed, crashed or "
            "lost its machine); queued again"
        )
        try:
            storage.set_trial_user_attr(trial_id, "fail_reason", reason)
            if not storage.set_trial_state_values(trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker failed it first
        frozen = storage.get_trial(trial_id)
        failed.append(frozen.number)
        _enqueue_retry(study, frozen)
    return failed


def _enqueue_retry(study: optuna.Study, frozen: optuna.trial.FrozenTrial) -> None:
    import optuna

    history = [*frozen.system_attrs.get("retry_history", []), frozen.number]
    if len(history) > MAX_RETRY:
        _log.warning("trial %d failed %d times; not retried again", frozen.number, len(history))
        return
    kept = {k: v for k, v in frozen.user_attrs.items() if k in _QUEUED_ATTRS}
    study.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.WAITING,
            params=frozen.params,
            distributions=frozen.distributions,
            user_attrs={**kept, "retry_of": frozen.number},
            system_attrs={"failed_trial": history[0], "retry_history": history},
        )
    )

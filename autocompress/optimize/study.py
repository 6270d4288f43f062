"""Optuna study plumbing: storage URLs, samplers, and opening a study safely."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna

from autocompress.errors import StudyError, UnknownNameError, UserInputError
from autocompress.optimize import record

DEFAULT_STORAGE = "sqlite:///reports/autocompress.db"
SAMPLERS = ("nsga2", "tpe", "random")
DIRECTIONS = ("maximize", "minimize", "minimize")  # accuracy, latency_ms, size_bytes
OBJECTIVES = ("accuracy", "latency_ms", "size_bytes")


def resolve_storage(
    url: str | None, *, heartbeat_s: int | None = None, read_only: bool = False
) -> optuna.storages.BaseStorage:
    """Turn `--storage` into an Optuna storage; SQLite parent folders are created.

    Args:
        url: an RDB URL (sqlite:///path.db, postgresql://...), or None for the default.
        heartbeat_s: when set, running trials record a heartbeat this often (seconds), and a
            trial silent for twice as long is failed and queued again (its worker died).
        read_only: only reads (show, report): SQLite transactions need not take the write lock,
            so a database file the user can only read still opens.

    Raises:
        UserInputError: the storage cannot be opened; says which URL and why.
    """
    from autocompress.optimize.heartbeat import serialize_sqlite_transactions, storage_options

    url = url or DEFAULT_STORAGE
    path = _sqlite_path(url)
    if path is not None:
        _check_sqlite_file(url, path)
        if not read_only and path.is_file() and not os.access(path, os.W_OK):
            raise UserInputError(
                f"storage {shown_url(url)!r} is read-only; a search writes its trials there: "
                "give --storage a file you can write (show and report can read this one)"
            )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a file where a folder is asked for, no permission, ...
            raise UserInputError(
                f"cannot open storage {shown_url(url)!r}: cannot create its folder "
                f"({exc.strerror or exc}); give --storage a path under a writable folder"
            ) from None
    try:
        with warnings.catch_warnings():  # optuna 5 calls heartbeats "experimental"
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = optuna.storages.RDBStorage(url, **storage_options(url, heartbeat_s))
    except Exception as exc:  # SQLAlchemy raises many kinds; the user needs the URL and the cause
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if isinstance(exc, ImportError) and url.startswith("postgresql"):
            first = "no PostgreSQL driver; install it with: pip install 'autocompress[postgres]'"
        raise UserInputError(
            f"cannot open storage {shown_url(url)!r}: {first}; check the URL and that the "
            "database is reachable"
        ) from None
    if not read_only:
        _check_writable(storage, url)
    if url.startswith("sqlite") and not read_only:
        serialize_sqlite_transactions(storage.engine)
    return storage


def _check_writable(storage: optuna.storages.RDBStorage, url: str) -> None:
    """Refuse a database this process cannot write (a read-only file, even to root, opened
    with `?mode=ro`; a read-only database role) before a search writes anything: an update
    that matches no row, rolled back.

    Raises:
        UserInputError: the database refuses writes.
    """
    import sqlalchemy

    try:
        with storage.engine.connect() as connection, connection.begin() as transaction:
            connection.execute(
                sqlalchemy.text("UPDATE studies SET study_name = study_name WHERE 1 = 0")
            )
            transaction.rollback()
    except sqlalchemy.exc.SQLAlchemyError as exc:
        cause = str(getattr(exc, "orig", exc)).strip().splitlines()
        raise UserInputError(
            f"storage {shown_url(url)!r} cannot be written ({cause[0] if cause else 'refused'});"
            " a search writes its trials there: give --storage a database you can write (show "
            "and report can read this one)"
        ) from None


def _sqlite_path(url: str) -> Path | None:
    """The database file of a `sqlite:///` URL; None for any other storage."""
    if not url.startswith("sqlite:///"):
        return None
    raw = url.removeprefix("sqlite:///")
    if raw.startswith("file:"):  # SQLite's URI form (sqlite:///file:x.db?mode=ro&uri=true)
        raw = raw.removeprefix("file:").split("?", 1)[0]
    return Path(raw).expanduser()


def storage_exists(url: str | None) -> bool:
    """False only for a SQLite database file that is not there yet (a server is assumed up)."""
    path = _sqlite_path(url or DEFAULT_STORAGE)
    return path is None or path.exists()


def _check_sqlite_file(url: str, path: Path) -> None:
    """Refuse an existing SQLite database that is not Optuna's, before Optuna adds its tables.

    A file SQLite cannot read is left to Optuna, whose error names it.

    Raises:
        UserInputError: the file holds tables and none of them is Optuna's `version_info`.
    """
    if not path.is_file() or path.stat().st_size == 0:
        return
    try:
        with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            rows = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    except sqlite3.Error:
        return
    tables = sorted(str(name) for (name,) in rows)
    if tables and "version_info" not in tables:
        listed = ", ".join(tables[:4]) + (", ..." if len(tables) > 4 else "")
        raise UserInputError(
            f"storage {url!r} is another application's database (tables: {listed}), not an "
            "Optuna one; give --storage a new file or one autocompress wrote"
        )


def shown_url(url: str) -> str:
    """The storage URL as messages show it: any password replaced by ***."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL SQLAlchemy can parse: nothing to hide in it
        return url


def make_sampler(name: str, *, seed: int, population_size: int) -> optuna.samplers.BaseSampler:
    """The sampler for `--sampler` (nsga2, tpe or random), seeded.

    Budgets reach every sampler through `trial.set_constraint`, so infeasible trials are
    ranked below feasible ones.
    """
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=population_size, seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise UnknownNameError("sampler", name, list(SAMPLERS))


def open_study(
    name: str,
    storage: optuna.storages.BaseStorage,
    *,
    sampler: optuna.samplers.BaseSampler | None = None,
    identity: dict[str, Any] | None = None,
) -> optuna.Study:
    """Create the study, or continue it when it exists and belongs to the same model and task.

    Args:
        name: study name.
        storage: from `resolve_storage`.
        sampler: used for new trials.
        identity: attributes that must match an existing study (model, task, target); stored
            on a new one.

    Raises:
        StudyError: the study exists for another model, task or target.
    """
    identity = identity or {}
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        sampler=sampler,
        directions=list(DIRECTIONS),
        load_if_exists=True,
    )
    if not record.is_ours(study):
        record.write_identity(study, identity)
    else:
        _check_same(name, record.read(study).identity, identity)
    return study


def check_identity(
    name: str, storage: optuna.storages.BaseStorage, identity: dict[str, Any]
) -> None:
    """Refuse early, before any model is loaded, to continue a study made for something else.

    Raises:
        StudyError: the study exists and one of `identity`'s values differs.
    """
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        return
    _check_ours(study)
    _check_same(name, record.read(study).identity, identity)


def _check_ours(study: optuna.Study) -> None:
    """Refuse a study autocompress did not make (plain Optuna, another tool): reading it would
    fail on missing figures, and writing would mix our attributes into it.

    A study with no trials and no identity yet is let through: another worker sharing the
    storage may have just created it and not yet written its identity (`open_study` writes it
    right after creating), and an empty study holds nothing to mix with.
    """
    if not record.is_ours(study) and study.trials:
        raise StudyError(
            f"study {study.study_name!r} was not made by autocompress (it has no identity "
            "record); choose another --study name"
        )


def _check_same(name: str, stored: Mapping[str, Any], identity: Mapping[str, Any]) -> None:
    for key, value in identity.items():
        if key in stored and stored[key] != value:
            raise StudyError(
                f"study {name!r} was made for {key} {stored[key]!r}, not {value!r}; "
                "choose another --study name"
            )


def load_study(name: str, storage_url: str | None) -> optuna.Study:
    """Open an existing study for reading.

    Raises:
        StudyError: no such study; lists the studies the storage holds.
    """
    url = storage_url or DEFAULT_STORAGE
    if not storage_exists(url):  # reading never creates a database (nor its folders)
        raise StudyError(
            f"no study {name!r} in {shown_url(url)}; the file does not exist (run autocompress "
            "search first, or give --storage)"
        )
    storage = resolve_storage(url, read_only=True)
    names = [s.study_name for s in optuna.study.get_all_study_summaries(storage)]
    if name not in names:
        listing = ", ".join(names) if names else "none yet (run autocompress search first)"
        raise StudyError(f"no study {name!r} in {shown_url(url)}; studies: {listing}")
    study = optuna.load_study(study_name=name, storage=storage)
    _check_ours(study)
    return study

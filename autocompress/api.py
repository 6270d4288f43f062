"""`autocompress.search()`: the search (`optimize.run.search`), then the study's HTML report.

The search itself never imports report/: the report is written here, from the stored study,
as `autocompress report` writes it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import ParamSpec

import optuna

from autocompress.errors import UserInputError
from autocompress.optimize import run
from autocompress.optimize.run import SearchResult

P = ParamSpec("P")
log = logging.getLogger(__name__)


def _with_report(search: Callable[P, SearchResult]) -> Callable[P, SearchResult]:
    """`search`, whose result comes with the study's report."""

    @functools.wraps(search)
    def search_and_report(*args: P.args, **kwargs: P.kwargs) -> SearchResult:
        result = search(*args, **kwargs)
        storage = kwargs.get("storage")
        assert storage is None or isinstance(storage, str)
        return replace(result, report=_report(result.study, storage))

    return search_and_report


search = _with_report(run.search)


def _report(name: str, storage: str | None) -> Path | None:
    """The report of the study `name` a search has just filled; None if it cannot be read."""
    from autocompress.optimize.study import load_study

    try:
        study = load_study(name, storage)
    except Exception as exc:  # the search's results still come back
        log.warning("report not written: %s: %s", type(exc).__name__, exc)
        return None
    return _write_report(study, storage)


def _write_report(study: optuna.Study, storage: str | None) -> Path | None:
    """The study's HTML report under reports/<study>/; a failure to write it ends no search."""
    from autocompress.report.html import write_report

    try:
        return write_report(study, storage_url=storage)
    except UserInputError as exc:
        log.warning("report not written: %s", exc)
        return None
    except Exception as exc:  # a drawing bug must not lose the search it reports on
        log.warning("report not written: %s: %s", type(exc).__name__, exc, exc_info=True)
        return None

"""A study's failed trials and why, as plain rows: what `show` lists under the front."""

from __future__ import annotations

from typing import Any

import optuna


def failed_trials(study: optuna.Study) -> list[dict[str, Any]]:
    """Each failed trial: its number, the reason stored with it, and its retry if one was queued.

    Returns:
        Rows `{"trial", "reason", "retried_as"}` in trial order.
    """
    trials = study.get_trials(deepcopy=False)
    retries = {t.user_attrs["retry_of"]: t.number for t in trials if "retry_of" in t.user_attrs}
    return [
        {
            "trial": t.number,
            "reason": t.user_attrs.get("fail_reason", "no reason recorded"),
            "retried_as": retries.get(t.number),
        }
        for t in trials
        if t.state == optuna.trial.TrialState.FAIL
    ]


def describe_failures(rows: list[dict[str, Any]], *, limit: int = 10) -> list[str]:
    """Lines for a person: a count, then one line per failed trial (the first `limit`)."""
    if not rows:
        return []
    lines = [f"{len(rows)} trial{'s' if len(rows) != 1 else ''} failed:"]
    for row in rows[:limit]:
        retry = f" (retried as #{row['retried_as']})" if row["retried_as"] is not None else ""
        lines.append(f"  #{row['trial']}: {row['reason']}{retry}")
    if len(rows) > limit:
        lines.append(f"  ... and {len(rows) - limit} more (see the report's trial timeline)")
    return lines

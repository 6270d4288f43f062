"""The Pareto front as a terminal table, the dense baseline as its first row."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.table import Table

from autocompress.compress.method import ordered

Candidate = dict[str, Any]

_CAPTION = (
    "drop: accuracy points lost vs dense; faster/smaller: ratio to dense; fits: within budget; "
    "vs alt: the best plain alternative's latency / latency (the fastest alternative at least "
    "as accurate, see the alt rows); "
    "plan: mean channel keep ratio x layers pruned, then layers per other method; "
    "from: a uniform warm start, a plan allocated from the sensitivity, a refinement of the "
    "fastest plan within reach of the accuracy floor, a plan polished (fine-tuned again for "
    "longer), or the sampler's"
)


def plan_summary(plan: dict[str, Any]) -> str:
    """E.g. 'keep 0.62 x9, rank x2, int8 x4': what each method does, to how many layers
    (`Method.summary`, in `apply`'s order)."""
    layers = plan.get("layers", {})
    if not layers:
        return "dense"
    configs = list(layers.values())
    return ", ".join(part for method in ordered() for part in method.summary(configs))


def front_table(
    baseline: Candidate,
    front: Sequence[Candidate],
    *,
    title: str,
    alternatives: Sequence[dict[str, Any]] = (),
) -> Table:
    """A rich Table: the dense model first, its plain alternatives, then each front candidate.

    Args:
        baseline: the dense row (`pareto.baseline_row`).
        front: candidates (`pareto.pareto_front`).
        title: shown above the table.
        alternatives: the study's plain alternatives (`pareto.alternatives`).

    Returns:
        The table, ready for `Console.print`.
    """
    table = Table(title=title, title_justify="left", caption=_CAPTION, caption_justify="left")
    for name, justify in [
        ("trial", "right"),
        ("acc %", "right"),
        ("drop", "right"),
        ("ms", "right"),
        ("faster", "right"),
        ("kB", "right"),
        ("smaller", "right"),
        ("fits", "center"),
        ("vs alt", "right"),
        ("plan", "left"),
        ("from", "left"),
    ]:
        # On a narrow terminal (or a pipe) the plan wraps; the figures keep their width.
        wraps = name in ("plan", "from")
        table.add_column(name, justify=justify, no_wrap=not wraps)  # type: ignore[arg-type]
    base_ms, base_size, base_acc = (
        baseline["latency_ms"],
        baseline["size_bytes"],
        baseline["accuracy"],
    )
    rows = [baseline, *front]
    for row in rows:
        is_base = row["trial"] is None
        feasible = "" if is_base else ("ok" if row["feasible"] else "[red]over[/]")
        if row.get("verify_error"):
            feasible = "[red]unbuilt[/]"
        best = row.get("best_alternative_ms")
        table.add_row(
            "dense" if is_base else str(row["trial"]),
            f"{100 * row['accuracy']:.2f}",
            "" if is_base else f"{100 * (base_acc - row['accuracy']):+.2f}",
            f"{row['latency_ms']:.3f}",
            f"{base_ms / row['latency_ms']:.2f}x",
            f"{row['size_bytes'] / 1000:.1f}",
            f"{base_size / row['size_bytes']:.2f}x",
            feasible,
            "" if best is None else f"{best / row['latency_ms']:.2f}x",
            plan_summary(row["plan"]),
            "" if is_base else row.get("origin", ""),
            style="dim" if is_base else None,
            end_section=is_base and not alternatives,
        )
        if is_base:
            for i, alt in enumerate(alternatives):
                _alternative_row(table, alt, baseline, last=i == len(alternatives) - 1)
    return table


def _alternative_row(table: Table, alt: dict[str, Any], baseline: Candidate, *, last: bool) -> None:
    """One plain alternative under the dense row: same figures, its label as the plan."""
    if "latency_ms" not in alt:
        table.add_row("alt", "", "", "", "", "", "", "", "", f"{alt['label']}: not measured", "",
                      style="dim", end_section=last)  # fmt: skip
        return
    table.add_row(
        "alt",
        f"{100 * alt['accuracy']:.2f}",
        f"{100 * (baseline['accuracy'] - alt['accuracy']):+.2f}",
        f"{alt['latency_ms']:.3f}",
        f"{baseline['latency_ms'] / alt['latency_ms']:.2f}x",
        "",
        "",
        "",
        "",
        alt["label"],
        "",
        style="dim",
        end_section=last,
    )

"""The package's layers (README, Development: Layers): every module of autocompress imports only
its own layer or the layers below it, and no modules, nor top-level packages, import each other
in a cycle. Every `import` and `from ... import` counts, inside functions and `TYPE_CHECKING`
blocks too."""

from __future__ import annotations

import ast
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "autocompress"

# Lowest first. An entry is a top-level module or package of autocompress ("__init__" is the
# package's own __init__.py, the public API); a module may import its own layer and those below.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("config", "errors", "task", "registry", "quiet", "cache"),  # values that cross boundaries
    ("hardware",),  # targets, timing, runtimes: models and callables, never plans
    ("compress",),  # the methods: apply, deploy, size
    ("space",),  # discover, spec, sample, uniform
    ("latency",),  # shapes, kernels, profile, predictor
    ("evaluate",),  # fine-tune, metrics, sensitivity
    ("zoo", "resolve"),  # built-in models (trained with evaluate), --model/--task resolution
    ("optimize",),  # study, trials, pareto, verify, the search
    ("report", "export"),  # read the study record
    ("api", "cli", "commands", "__main__", "__init__"),  # the public API and the command line
)


@dataclass(frozen=True)
class Import:
    """One import of a package module: who imports what, where."""

    source: str  # the importing module, e.g. "autocompress.compress.prune"
    target: str  # the imported package module, e.g. "autocompress.space.discover"
    path: Path  # the importing file, relative to the folder that holds the package
    line: int

    def where(self) -> str:
        return f"{self.path.as_posix()}:{self.line}"


def modules(root: Path, package: str) -> dict[str, Path]:
    """Every module of `package` (a folder under `root`) by dotted name; a package by its own."""
    found = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(root: Path, package: str) -> list[Import]:
    """Every import of a module of `package` by a module of `package`.

    `from a.b import c` imports the module `a.b.c` when there is one, else `a.b`; a name
    below a module (`import a.b.Thing`) counts as the module.
    """
    known = modules(root, package)
    found = []
    for name, path in known.items():
        own_package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = own_package.split(".")[: len(own_package.split(".")) - node.level + 1]
                    base = ".".join([*parent, *([base] if base else [])])
                targets = [
                    f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                    for alias in node.names
                ]
            else:
                continue
            for target in targets:
                while target and target not in known:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    found.append(Import(name, target, path.relative_to(root), node.lineno))
    return found


def unit(module: str) -> str:
    """The top-level module or package a module belongs to ("__init__" for the package)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def layer_of(name: str, layers: tuple[tuple[str, ...], ...] = LAYERS) -> int:
    return next(i for i, members in enumerate(layers) if name in members)


def upward_imports(found: list[Import], layers: tuple[tuple[str, ...], ...] = LAYERS) -> list[str]:
    """One line per import of a higher layer."""
    lines = []
    for imp in found:
        low, high = unit(imp.source), unit(imp.target)
        if layer_of(high, layers) > layer_of(low, layers):
            lines.append(
                f"{imp.where()} imports {imp.target}: {low} (layer {layer_of(low, layers) + 1}) "
                f"may not import {high} (layer {layer_of(high, layers) + 1})"
            )
    return lines


def cycles(edges: dict[tuple[str, str], Import]) -> list[list[Import]]:
    """The import cycles of a graph given as (source, target) -> one import making that edge:
    one cycle per strongly connected component of more than one node."""
    graph: dict[str, list[str]] = {}
    for source, target in edges:
        graph.setdefault(source, []).append(target)
        graph.setdefault(target, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    components = []

    def visit(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
            if len(component) > 1:
                components.append(set(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_cycle_in(component, graph, edges) for component in components]


def _cycle_in(
    component: set[str], graph: dict[str, list[str]], edges: dict[tuple[str, str], Import]
) -> list[Import]:
    """One cycle through the component's first node (breadth first: a shortest one)."""
    start = min(component)
    came_from: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt_frontier = []
        for node in frontier:
            for nxt in sorted(graph[node]):
                if nxt not in component or nxt in came_from:
                    continue
                came_from[nxt] = node
                if nxt == start:
                    path = [start]
                    while len(path) == 1 or path[-1] != start:
                        path.append(came_from[path[-1]])
                    path.reverse()
                    return [edges[(a, b)] for a, b in itertools.pairwise(path)]
                nxt_frontier.append(nxt)
        frontier = nxt_frontier
    raise AssertionError(f"no cycle through {start}")  # a component always has one


def describe(cycle: list[Import], name: Callable[[str], str] = str) -> str:
    chain = " -> ".join([name(cycle[0].source), *(name(imp.target) for imp in cycle)])
    steps = "; ".join(f"{imp.where()} imports {imp.target}" for imp in cycle)
    return f"{chain} ({steps})"


def module_cycles(found: list[Import]) -> list[str]:
    return [describe(c) for c in cycles({(i.source, i.target): i for i in found})]


def package_cycles(found: list[Import]) -> list[str]:
    edges = {(unit(i.source), unit(i.target)): i for i in found if unit(i.source) != unit(i.target)}
    return [describe(c, unit) for c in cycles(edges)]


FOUND = imports(ROOT, PACKAGE)


def test_every_top_level_module_has_a_layer() -> None:
    placed = [name for members in LAYERS for name in members]
    present = {unit(name) for name in modules(ROOT, PACKAGE)}
    assert len(placed) == len(set(placed)), f"placed twice in LAYERS: {placed}"
    missing = sorted(present - set(placed))
    assert not missing, f"autocompress/{missing} has no layer: add it to LAYERS in {__file__}"
    stale = sorted(set(placed) - present)
    assert not stale, f"LAYERS names {stale}, which autocompress no longer has"


def test_no_module_imports_a_higher_layer() -> None:
    upward = upward_imports(FOUND)
    assert not upward, (
        f"{len(upward)} import(s) of a higher layer (move the code down, or the import up; "
        "layers lowest first: "
        + " < ".join("/".join(m) for m in LAYERS)
        + "):\n  "
        + "\n  ".join(upward)
    )


def test_no_modules_import_each_other_in_a_cycle() -> None:
    found = module_cycles(FOUND)
    assert not found, "import cycle(s) between modules:\n  " + "\n  ".join(found)


def test_no_top_level_packages_import_each_other_in_a_cycle() -> None:
    found = package_cycles(FOUND)
    assert not found, "import cycle(s) between packages:\n  " + "\n  ".join(found)


@pytest.fixture
def toy(tmp_path: Path) -> Path:
    """A package `toy` of two layers: `low` (a module) below `high` (a package)."""
    (tmp_path / "toy" / "high").mkdir(parents=True)
    for name in ("toy/__init__.py", "toy/high/__init__.py", "toy/high/b.py"):
        (tmp_path / name).write_text("")
    (tmp_path / "toy" / "low.py").write_text("import os\n\n\ndef f():\n    from toy import high\n")
    (tmp_path / "toy" / "high" / "a.py").write_text("from . import b\nfrom toy.low import f\n")
    return tmp_path


def test_the_checks_find_an_upward_import_inside_a_function_and_cycles(toy: Path) -> None:
    layers = (("low",), ("high",))
    found = imports(toy, "toy")
    assert {(i.source, i.target) for i in found} == {
        ("toy.low", "toy.high"),
        ("toy.high.a", "toy.high.b"),
        ("toy.high.a", "toy.low"),
    }
    assert upward_imports(found, layers) == [
        "toy/low.py:5 imports toy.high: low (layer 1) may not import high (layer 2)"
    ]
    assert module_cycles(found) == []
    assert package_cycles(found) == [
        "high -> low -> high (toy/high/a.py:2 imports toy.low; toy/low.py:5 imports toy.high)"
    ]
    (toy / "toy" / "high" / "b.py").write_text("import toy.high.a\n")
    assert module_cycles(imports(toy, "toy")) == [
        "toy.high.a -> toy.high.b -> toy.high.a "
        "(toy/high/a.py:1 imports toy.high.b; toy/high/b.py:1 imports toy.high.a)"
    ]

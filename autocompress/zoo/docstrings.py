"""A text corpus that is always there offline: the docstrings of the installed Python's standard
library, each labelled with the top-level module it comes from."""

from __future__ import annotations

import ast
import functools
import sysconfig
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

# Folders of the standard library that are tests, demos or vendored code, not the library.
_SKIPPED = frozenset(
    {"test", "tests", "idlelib", "lib2to3", "turtledemo", "ensurepip", "site-packages", "venv"}
)
MIN_CHARS = 40


@dataclass(frozen=True)
class Docstring:
    """One docstring and where it comes from.

    Args:
        text: the docstring, whitespace collapsed.
        module: the top-level standard-library module or package ("email", "asyncio").
    """

    text: str
    module: str


def _stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _docstrings_of(path: Path, module: str) -> list[Docstring]:
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, UnicodeDecodeError, ValueError, OSError):
        return []
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, kinds):
            text = " ".join((ast.get_docstring(node) or "").split())
            if len(text) >= MIN_CHARS:
                found.append(Docstring(text, module))
    return found


@functools.lru_cache(maxsize=1)
def stdlib_docstrings() -> tuple[Docstring, ...]:
    """Every docstring of at least 40 characters in the standard library's Python sources.

    Files are read in sorted order, so the corpus is the same on every run of one Python.

    Returns:
        The docstrings (about 7-8 thousand on CPython 3.11), duplicates removed.
    """
    root = _stdlib_dir()
    seen: dict[str, Docstring] = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if any(p in _SKIPPED for p in parts) or parts[0].startswith("_"):
            continue
        module = parts[0].removesuffix(".py")
        for doc in _docstrings_of(path, module):
            seen.setdefault(doc.text, doc)
    return tuple(seen.values())


def probe_modules(docs: tuple[Docstring, ...], *, classes: int) -> list[str]:
    """The `classes` modules with the most docstrings (ties broken by name): the probe's labels.

    Args:
        docs: the corpus.
        classes: how many modules to keep.

    Returns:
        Module names, most docstrings first.
    """
    counts = Counter(d.module for d in docs)
    return [m for m, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:classes]]

"""autocompress: hardware-aware compression search for PyTorch models.

The front door is small: `search`, `apply`, `load`, `load_space`, `Plan`, `LayerConfig`, `Budget`,
`Task`.
Heavy modules (torch, optuna) load on first use, so `autocompress --help` stays instant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from autocompress.config import Budget, LayerConfig, Plan, load_settings_with

if TYPE_CHECKING:
    from autocompress.api import search
    from autocompress.compress.apply import apply
    from autocompress.export.artifact import load
    from autocompress.space.spec import load_space
    from autocompress.task import Task

__all__ = ["Budget", "LayerConfig", "Plan", "Task", "apply", "load", "load_space", "search"]
__version__ = "0.1.0"

_LAZY = {
    "apply": "autocompress.compress.apply",
    "load": "autocompress.export.artifact",
    "search": "autocompress.api",
    "load_space": "autocompress.space.spec",
    "Task": "autocompress.task",
}


def _load_methods() -> None:
    """Import the compression methods, which register their knobs with `config`: the values
    layer cannot import them itself, and importing them here eagerly would load torch for
    `autocompress --help`."""
    import autocompress.compress  # noqa: F401


load_settings_with(_load_methods)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'autocompress' has no attribute {name!r}")

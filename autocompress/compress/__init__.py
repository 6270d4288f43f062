"""Compression methods and the one function that applies a plan to a model.

`METHODS` holds every method (`compress.method`). Importing this package imports each of its
modules, and each method module registers its method there: adding a method is adding a
module.
"""

import importlib
import pkgutil

from autocompress.compress.method import METHODS, Method, register

__all__ = ["METHODS", "Method", "register"]

for _module in pkgutil.iter_modules(__path__):
    if not _module.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_module.name}")

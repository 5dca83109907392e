"""Distillation methods: one module, one registered class each.

Every module in this package is imported here, so adding a method is adding one file.
"""

import importlib
import pkgutil

from distill.distillers.base import (
    DISTILLERS,
    Distiller,
    StepInput,
    StepOutput,
    Teacher,
    build_distiller,
    register_method,
)

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name != "base" and not _mod.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = ["DISTILLERS", "Distiller", "StepInput", "StepOutput", "Teacher", "build_distiller", "register_method"]

"""Recipes: a typed schema of dataclasses, read from YAML with ``safe_load``, strict keys, dotted overrides.

The workflow (:mod:`distill.api`, and compress's own recipe) turns these objects into keyword arguments for the
library; the one other reader is :func:`distill.data.module.load_datamodule` (the ``data`` section). A low layer:
it imports only :mod:`distill.settings` and the errors, so the data and method registries can check values with it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from distill.config.loading import RecipeLoader, apply_override, parse_override, read_yaml, yaml_load
from distill.config.schema import (
    BenchConfig,
    Config,
    DataConfig,
    FlowConfig,
    MethodConfig,
    ModelConfig,
    StudentConfig,
    TeacherConfig,
    TrackingConfig,
    method_optim,
    optim_with,
)
from distill.config.typed import FLOAT32_MAX, MAX_SEED, MAX_THREADS, check_value, from_dict
from distill.settings import CacheSettings, OptimSettings

# the schema lives in distill.config.schema, typed reading in .typed, YAML and overrides in .loading
__all__ = [
    "FLOAT32_MAX",
    "MAX_SEED",
    "MAX_THREADS",
    "BenchConfig",
    "CacheSettings",
    "Config",
    "DataConfig",
    "FlowConfig",
    "MethodConfig",
    "ModelConfig",
    "OptimSettings",
    "RecipeLoader",
    "StudentConfig",
    "TeacherConfig",
    "TrackingConfig",
    "apply_override",
    "check_value",
    "dump_yaml",
    "from_dict",
    "load_config",
    "method_optim",
    "optim_with",
    "parse_override",
    "read_yaml",
    "to_dict",
    "yaml_load",
]


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a recipe (or the defaults when ``path`` is None) and apply ``key.path=value`` overrides."""
    raw = read_yaml(path) if path else {}
    for text in overrides:
        apply_override(raw, *parse_override(text))
    return from_dict(Config, raw)


def to_dict(cfg: Any) -> Any:
    return dataclasses.asdict(cfg)


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)

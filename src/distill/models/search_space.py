"""Each model family's search space for ``distill sweep``, registered next to the model's definition.

A space samples one student architecture of the family: ``space(trial, kwargs) -> (model name, kwargs)``, drawing
its knobs from an Optuna-like ``trial`` (``suggest_int``, ``suggest_categorical``; the models need no optuna) and
keeping the student's own ``kwargs``. Register one with ``@register_search_space("cnn", "cnn width 2–32, ...")``
for a model name, or with :func:`register_family_space` for the family of names a pattern matches
(``resnet\\d+``: one of resnet8, resnet14, ...). The sweep looks the student up with :func:`find_search_space`;
a model with no space is swept over its hyper-parameters only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from distill.registry import Registry

SpaceFn = Callable[[Any, dict[str, Any]], tuple[str, dict[str, Any]]]  # (trial, kwargs) -> (model name, kwargs)


@dataclass(frozen=True)
class SearchSpace:
    """A registered space: its sampler, and what it searches (a line, or a function making it when asked)."""

    key: str  # a model name, or (``pattern``) a regular expression the family's names fully match
    sample: SpaceFn
    describe: str | Callable[[], str]
    pattern: bool = False

    def what(self) -> str:
        return self.describe if isinstance(self.describe, str) else self.describe()


SEARCH_SPACES: Registry[SearchSpace] = Registry("search space")


def register_search_space(
    name: str, describe: str | Callable[[], str], pattern: bool = False
) -> Callable[[SpaceFn], SpaceFn]:
    """Decorator: the search space of model ``name`` (with ``pattern``: of every model whose name fully matches the
    regular expression ``name``), and the line saying what it searches."""

    def deco(fn: SpaceFn) -> SpaceFn:
        SEARCH_SPACES.add(name, SearchSpace(name, fn, describe, pattern))
        return fn

    return deco


def register_family_space(pattern: str, exclude: Sequence[str] = ()) -> None:
    """Search over the registered models whose names fully match ``pattern`` (less ``exclude``), shallow to deep."""

    def family() -> list[str]:
        from distill.models.zoo import model_names  # models register after this module is imported

        names = (n for n in model_names() if re.fullmatch(pattern, n) and n not in exclude)
        return sorted(names, key=lambda n: tuple(int(x) for x in re.findall(r"\d+", n)))

    def sample(trial: Any, kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        return choose(family(), trial, kwargs)

    register_search_space(pattern, lambda: f"one of {', '.join(family())}", pattern=True)(sample)


def choose(names: list[str], trial: Any, kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """One of ``names`` (the trial's ``model`` choice when there are several), with ``kwargs`` as they are."""
    if len(names) == 1:
        return names[0], dict(kwargs)
    return trial.suggest_categorical("model", names), dict(kwargs)


def find_search_space(model: str) -> SearchSpace | None:
    """The space registered for ``model``: by its name, else by the first pattern (in name order) matching it."""
    from distill.models.zoo import model_names

    model_names()  # the built-in models (and their spaces) register on first use
    if model in SEARCH_SPACES and not SEARCH_SPACES.get(model).pattern:
        return SEARCH_SPACES.get(model)
    for key in SEARCH_SPACES:
        space = SEARCH_SPACES.get(key)
        if space.pattern and re.fullmatch(key, model):
            return space
    return None

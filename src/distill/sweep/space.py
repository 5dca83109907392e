"""What a sweep searches (the student's architecture within its family, the method's hyper-parameters) and the
callback that prunes hopeless trials (part of :mod:`distill.sweep`)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from distill.distillers import DISTILLERS
from distill.distillers.base import method_temperature
from distill.engine.callbacks import Callback
from distill.errors import ConfigError
from distill.models.zoo import model_names

OBJECTIVES = {"acc": ["maximize"], "acc_latency": ["maximize", "minimize"], "acc_params": ["maximize", "minimize"]}
Space = Callable[[Any], tuple[str, dict[str, Any]]]  # trial -> (model name, kwargs)


def _optuna() -> Any:
    try:
        import optuna
    except ImportError as e:
        raise ConfigError("distill sweep needs optuna: pip install 'optuna>=3.5'") from e
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


# -- what is searched ----------------------------------------------------------------------------------------------


def architecture_space(model: str, kwargs: dict[str, Any]) -> tuple[Space, str]:
    """A sampler of student architectures in ``model``'s zoo family, and a line saying what it searches."""

    def cnn(t: Any) -> tuple[str, dict[str, Any]]:
        return "cnn", {
            **kwargs,
            "width": t.suggest_int("width", 2, 32, log=True),
            "blocks": t.suggest_int("blocks", 1, 3),
        }

    def mlp(t: Any) -> tuple[str, dict[str, Any]]:
        width, layers = t.suggest_int("hidden", 16, 512, log=True), t.suggest_int("layers", 1, 3)
        return "mlp", {**kwargs, "hidden": [width] * layers}

    def wrn(t: Any) -> tuple[str, dict[str, Any]]:
        depth = t.suggest_categorical("depth", [10, 16, 22, 28])
        return "wrn", {**kwargs, "depth": depth, "widen_factor": t.suggest_int("widen_factor", 1, 4)}

    spaces = {
        "cnn": (cnn, "cnn width 2–32, blocks 1–3"),
        "mlp": (mlp, "mlp hidden width 16–512, 1–3 layers"),
        "wrn": (wrn, "wrn depth 10–28, widen factor 1–4"),
    }
    if model in spaces:
        return spaces[model]
    for pattern in (r"resnet\d+", r"resnet\d+x4", r"wrn_\d+_\d+", r"vgg\d+"):
        if re.fullmatch(pattern, model):
            family = sorted((n for n in model_names() if re.fullmatch(pattern, n) and n != "resnet110"), key=_depth_key)
            return _choice(family, kwargs), f"one of {', '.join(family)}"
    return _choice([model], kwargs), f"{model} (no size knob: hyper-parameters only)"


def _choice(family: list[str], kwargs: dict[str, Any]) -> Space:
    if len(family) == 1:
        return lambda t: (family[0], dict(kwargs))
    return lambda t: (t.suggest_categorical("model", family), dict(kwargs))


def _depth_key(name: str) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", name))


def method_space(method: str, lr: float) -> tuple[Callable[[Any], tuple[dict[str, Any], float]], str]:
    """A sampler of the method's temperature and α (when it has them) and the learning rate around ``lr``."""
    import inspect

    own = inspect.signature(DISTILLERS.get(method).__init__).parameters
    has_t = method_temperature(method, {}) is not None
    has_alpha = "alpha" in own

    def sample(t: Any) -> tuple[dict[str, Any], float]:
        params: dict[str, Any] = {}
        if has_t:
            params["temperature"] = t.suggest_float("temperature", 1.0, 10.0)
        if has_alpha:
            params["alpha"] = t.suggest_float("alpha", 0.1, 1.0)
        return params, t.suggest_float("lr", lr / 10, lr * 4, log=True)

    what = ", ".join(
        [*(["T 1–10"] if has_t else []), *(["α 0.1–1"] if has_alpha else []), f"lr {lr / 10:g}–{lr * 4:g}"]
    )
    return sample, what


# -- pruning -------------------------------------------------------------------------------------------------------


class PruningCallback(Callback):
    """Reports each epoch's validation accuracy to the Optuna trial; stops a hopeless one (``TrialPruned``)."""

    def __init__(self, trial: Any) -> None:
        self.trial = trial

    def on_epoch_end(self, trainer: Any, record: dict[str, Any]) -> None:
        acc = record.get("val", record.get("test", {})).get("acc")
        if acc is None:
            return
        self.trial.report(acc, record["epoch"])
        if self.trial.should_prune():
            import optuna

            raise optuna.TrialPruned(f"validation accuracy {acc:.4f} at epoch {record['epoch']} is below the median")

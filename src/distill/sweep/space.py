"""What a sweep searches (the student's architecture within its family, the method's hyper-parameters) and the
callback that prunes hopeless trials (part of :mod:`distill.sweep`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from distill.distillers import DISTILLERS
from distill.distillers.base import method_temperature
from distill.engine.callbacks import Callback
from distill.errors import ConfigError
from distill.models.search_space import choose, find_search_space

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
    """A sampler of student architectures in ``model``'s zoo family, and a line saying what it searches.

    Each family registers its space next to its model (:mod:`distill.models.search_space`); a model without one
    is swept over the method's hyper-parameters only.
    """
    space = find_search_space(model)
    if space is None:
        return (lambda t: choose([model], t, kwargs)), f"{model} (no size knob: hyper-parameters only)"
    return (lambda t: space.sample(t, kwargs)), space.what()


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

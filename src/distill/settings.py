"""Settings shared by the recipe schema (:mod:`distill.config`) and the library that runs them: how to optimise
(:class:`OptimSettings`), how teacher outputs are cached (:class:`CacheSettings`), the range check they use and
the check of ``amp`` (:func:`check_amp`).

A low layer (imports only :mod:`distill.errors`): the recipe schema and the engine both import it, so the recipe
schema does not import the engine. :mod:`distill.engine.trainer` and :mod:`distill.engine.cache` re-export them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from distill.errors import ConfigError

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "multistep", "constant")
MODES = ("off", "views", "fixed")  # teacher-output cache modes (see distill.engine.cache)
AMP = (None, "bf16", "fp16")  # autocast: off, bfloat16, float16 (CUDA only)


def check_amp(amp: str | None, device_type: str) -> None:
    """Refuse an ``amp`` setting that is unknown or that the device (``"cpu"``, ``"cuda"`` ...) cannot run: the one
    check of it, for a recipe before anything trains and for a :class:`~distill.engine.trainer.Trainer`."""
    if amp not in AMP:
        raise ConfigError(f"amp must be null, 'bf16' or 'fp16', got {amp!r}")
    if amp == "fp16" and device_type != "cuda":
        raise ConfigError("amp='fp16' needs a CUDA device; use amp='bf16' on the CPU")


def check_range(
    name: str,
    value: float,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    hi_open: bool = False,
) -> None:
    """Raise a :class:`ConfigError` naming ``name`` when ``value`` is outside the interval."""
    bad = (lo is not None and (value < lo or (lo_open and value == lo))) or (
        hi is not None and (value > hi or (hi_open and value == hi))
    )
    if bad or value != value:  # NaN
        left = "(" if lo_open or lo is None else "["  # an infinite bound is never in the interval: always open
        right = ")" if hi_open or hi is None else "]"
        lo_s = "-inf" if lo is None else lo
        hi_s = "inf" if hi is None else hi
        raise ConfigError(f"{name} must be in {left}{lo_s}, {hi_s}{right}, got {value}")


MLFLOW_EXPECTED = (
    "null or false (off), true or 'local' (sqlite:///<run>/mlflow.db), or an MLflow tracking URI: "
    "sqlite:///PATH.db, http(s)://HOST[:PORT], postgresql://..., mysql://..., mssql://... or databricks"
)


def check_mlflow(setting: object, name: str = "tracking.mlflow") -> None:
    """Refuse a ``tracking.mlflow`` setting that MLflow cannot track into, before any run starts: a typo or a
    plain directory would otherwise end in a traceback from inside MLflow (which no longer writes file stores)."""
    if setting is None or isinstance(setting, bool):
        return
    if not isinstance(setting, str):
        raise ConfigError(f"{name} must be {MLFLOW_EXPECTED}; got {_short(setting)}")
    if setting in ("", "local", "databricks"):
        return
    parts = urlsplit(setting) if "://" in setting else None
    scheme = parts.scheme.lower().split("+")[0] if parts else ""  # postgresql+psycopg2:// ...
    if scheme == "sqlite":
        ok = setting.startswith("sqlite:///") and len(setting) > len("sqlite:///")
    elif scheme in ("http", "https", "postgresql", "mysql", "mssql"):
        ok = bool(parts and parts.netloc)
    else:
        ok = scheme == "databricks"  # databricks://PROFILE
    if not ok:
        raise ConfigError(f"{name} must be {MLFLOW_EXPECTED}; got {_short(setting)}")


def _short(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class OptimSettings:
    """How to optimise: the optimizer, its schedule and regularisation."""

    epochs: int = 10
    optimizer: str = "sgd"
    lr: float = 0.05
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    milestones: list[float] = field(default_factory=list)  # epochs at which multistep multiplies the LR by gamma
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    grad_clip: float | None = None

    def __post_init__(self) -> None:
        """Every setting's type, finiteness and range, before any work: these also arrive as plain dicts (text
        recipes, compress), not only through the recipe schema, and a NaN or inf passes the range checks."""
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int):
            raise ConfigError(f"epochs must be an integer, got {self.epochs!r}")
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; expected one of {list(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown schedule {self.schedule!r}; expected one of {list(SCHEDULES)}")
        if not isinstance(self.milestones, (list, tuple)):
            raise ConfigError(f"milestones must be a list of epochs, got {self.milestones!r}")
        numbers = {"lr": self.lr, "momentum": self.momentum, "weight_decay": self.weight_decay, "gamma": self.gamma,
                   "warmup_epochs": self.warmup_epochs, "grad_clip": self.grad_clip,
                   **{f"milestones.{i}": m for i, m in enumerate(self.milestones)}}  # fmt: skip

        for name, v in numbers.items():
            if v is None and name == "grad_clip":  # null: no clipping
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ConfigError(f"{name} must be a number, got {v!r:.60}")
            if not abs(v) <= 3.4028234663852886e38:  # NaN, inf, or beyond float32, which the optimizer computes in
                raise ConfigError(f"{name} must be a finite number (within float32's range), got {v!r:.60}")
        check_range("lr", self.lr, lo=0.0, lo_open=True)
        check_range("momentum", self.momentum, 0.0, 1.0, hi_open=True)
        check_range("weight_decay", self.weight_decay, lo=0.0)
        check_range("gamma", self.gamma, lo=0.0, lo_open=True)
        check_range("warmup_epochs", self.warmup_epochs, lo=0.0)
        if self.warmup_epochs > self.epochs:
            raise ConfigError(
                f"warmup_epochs={self.warmup_epochs} is longer than the {self.epochs} epoch(s) of training, so the "
                "learning rate would never reach lr; use at most epochs"
            )
        for i, m in enumerate(self.milestones):
            check_range(f"milestones.{i}", m, lo=0.0)
        if self.grad_clip is not None and not self.grad_clip > 0:  # <= 0 would flip clipping into gradient ascent
            raise ConfigError(f"grad_clip must be null (no clipping) or a norm > 0, got {self.grad_clip}")


@dataclass(frozen=True)
class CacheSettings:
    """How teacher outputs are cached (see the module docstring for what each mode means)."""

    mode: str | bool = "off"  # YAML reads a bare `off` as false: accepted as "off"
    views: int = 8
    topk: int | None = None
    dir: str | None = None

    def __post_init__(self) -> None:
        if self.mode is False:
            object.__setattr__(self, "mode", "off")  # frozen: the one normalisation, at construction
        if self.mode not in MODES:
            raise ConfigError(f"mode must be one of {list(MODES)}, got {self.mode!r}")
        if self.views < 1:
            raise ConfigError(f"views must be >= 1, got {self.views}")
        if self.topk is not None and self.topk < 1:
            raise ConfigError(f"topk must be null or >= 1, got {self.topk}")

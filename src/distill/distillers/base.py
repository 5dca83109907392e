"""Distiller, Teacher and StepOutput — the core abstractions every method builds on.

A method is one file with one registered :class:`Distiller` subclass whose :meth:`Distiller.step` returns its
already-weighted loss terms; the base class sums them. The teacher is wrapped in :class:`Teacher`, which keeps it
frozen and in eval mode whatever the caller does.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.config import check_value
from distill.errors import ConfigError, DistillError
from distill.features import FeatureTap
from distill.losses import kd_loss
from distill.registry import Registry
from distill.settings import check_range


@dataclass
class StepInput:
    """What a method's :meth:`Distiller.step` receives for one batch."""

    x: Tensor  # (B, C, H, W) normalised inputs
    y: Tensor | None = None  # (B,) labels; None on an unlabeled transfer set
    teacher_logits: Tensor | None = None  # (B, K) from the teacher-output cache, when one is used
    index: Tensor | None = None  # (B,) positions of the samples in the training split (memory banks)


@dataclass
class StepOutput:
    """What one forward of a distiller gives the trainer."""

    loss: Tensor  # the scalar to backpropagate (sum of ``losses``)
    logits: Tensor  # (B, K) student logits, for metrics
    losses: dict[str, Tensor] = field(default_factory=dict)  # named, already weighted parts


class Teacher(nn.Module):
    """A frozen model: no gradients, always in eval mode, run under ``torch.no_grad``.

    ``no_grad`` rather than ``inference_mode``: the outputs are loss targets that autograd may need to save.
    Optionally taps intermediate features by module name (see :class:`~distill.features.FeatureTap`).
    """

    def __init__(self, model: nn.Module, feature_names: Sequence[str] = ()) -> None:
        super().__init__()
        self.model = model.requires_grad_(False).eval()
        self.tap = FeatureTap(model, feature_names) if feature_names else None

    def train(self, mode: bool = True) -> Teacher:
        return super().train(False)

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            return self.model(x)

    def features(self) -> list[Tensor]:
        return self.tap.get() if self.tap else []


DISTILLERS: Registry[type[Distiller]] = Registry("method")


def register_method(name: str) -> Callable[[type[Distiller]], type[Distiller]]:
    def deco(cls: type[Distiller]) -> type[Distiller]:
        cls.name = name
        return DISTILLERS.register(name)(cls)

    return deco


def alpha_weights(alpha: float) -> dict[str, float]:
    """Hinton's mix as :class:`Distiller` weights: ``alpha`` on the soft-target term, ``1 − alpha`` on the labels."""
    check_range("alpha", alpha, 0.0, 1.0)
    return {"ce_weight": 1.0 - alpha, "kd_weight": alpha}


class Distiller(nn.Module):
    """Base class: owns the student, the (wrapped) teacher and any adapters.

    Subclasses set ``needs_teacher`` / ``teacher_features`` and implement :meth:`step`. The common logit terms —
    cross-entropy with the labels weighted by ``ce_weight`` and Hinton's KD weighted by ``kd_weight`` at
    ``temperature`` — are available to every method through :meth:`logit_terms`, so any feature method can be
    combined with KD by setting ``kd_weight``.
    """

    name: ClassVar[str] = "base"
    needs_teacher: ClassVar[bool] = True
    needs_labels: ClassVar[bool] = True  # False: trains on an unlabeled transfer set
    needs_every_label: ClassVar[bool] = False  # True: a sample without a label (-1) cannot be used (DKD)
    teacher_features: ClassVar[bool] = False  # True: needs the teacher's intermediate features (no logit cache)
    hidden_params: ClassVar[tuple[str, ...]] = ()  # base parameters a subclass sets itself

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        *,
        input_shape: Sequence[int] | None = None,
        ce_weight: float = 1.0,
        kd_weight: float = 0.0,
        temperature: float = 4.0,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        if self.needs_teacher and teacher is None:
            raise ConfigError(f"method {self.name!r} needs a teacher; give teacher.model or teacher.checkpoint")
        check_range("ce_weight", ce_weight, lo=0.0)
        check_range("kd_weight", kd_weight, lo=0.0)
        check_range("temperature", temperature, lo=0.0, lo_open=True)
        check_range("label_smoothing", label_smoothing, lo=0.0, hi=1.0, hi_open=True)
        self.student = student
        self.teacher = teacher if teacher is None or isinstance(teacher, Teacher) else Teacher(teacher)
        self.input_shape = tuple(input_shape) if input_shape is not None else None
        self.ce_weight, self.kd_weight, self.temperature = ce_weight, kd_weight, temperature
        self.label_smoothing = label_smoothing

    def train(self, mode: bool = True) -> Distiller:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # Teacher.train already refuses; this is belt and braces for plain modules
        return self

    def forward(
        self,
        x: Tensor,
        y: Tensor | None = None,
        teacher_logits: Tensor | None = None,
        index: Tensor | None = None,
    ) -> StepOutput:
        """One training step's losses. ``teacher_logits`` may come from a cache; feature methods ignore it."""
        losses = self.step(StepInput(x, y, teacher_logits, index))
        logits = losses.pop("_logits")
        total = torch.stack([v.float() for v in losses.values()]).sum() if losses else logits.sum() * 0.0
        return StepOutput(total, logits, losses)

    def step(self, b: StepInput) -> dict[str, Tensor]:
        """Return the weighted loss terms plus the student logits under the key ``"_logits"``."""
        raise NotImplementedError

    def run_teacher(self, x: Tensor, teacher_logits: Tensor | None = None) -> Tensor:
        """Teacher logits for ``x``: the cached ones when given (and no features are needed), else a forward."""
        if teacher_logits is not None and not self.teacher_features:
            return teacher_logits
        assert self.teacher is not None
        return self.teacher(x)

    def logit_terms(self, logits: Tensor, y: Tensor | None, t_logits: Tensor | None) -> dict[str, Tensor]:
        """``ce_weight · CE(s, y)`` and ``kd_weight · KD(s, t; T)``, each only when its weight is non-zero."""
        out: dict[str, Tensor] = {}
        if self.ce_weight > 0:
            if y is None:
                raise ConfigError(f"method {self.name!r} with ce_weight > 0 needs labels; set ce_weight=0")
            out["ce"] = self.ce_weight * self.label_loss(logits, y)
        if self.kd_weight > 0 and t_logits is not None:
            out["kd"] = self.kd_weight * kd_loss(logits, t_logits, self.temperature)
        return out

    def label_loss(self, logits: Tensor, y: Tensor) -> Tensor:
        """The unweighted hard-label term of :meth:`logit_terms`: :func:`labelled_cross_entropy` (label ``-1``:
        unlabelled) with ``label_smoothing``."""
        return labelled_cross_entropy(logits, y, self.label_smoothing)

    def set_epoch(self, epoch: int, epochs: int) -> None:
        """Called by the trainer before each epoch (0-based) — for methods with a schedule (two-stage FitNets)."""
        self.epoch, self.epochs = epoch, epochs

    def export_student(self) -> nn.Module:
        """The student alone: no teacher, adapters or hooks."""
        return self.student

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Student and adapter parameters (the teacher's are frozen and never handed to the optimizer)."""
        return [p for n, p in self.named_parameters() if p.requires_grad and not n.startswith("teacher.")]

    def extra_state_dict(self) -> dict[str, Any]:
        """Method state that must survive a checkpoint beyond parameters and buffers (memory banks ...)."""
        return {}

    def load_extra_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        """Remove every hook this distiller installed."""
        for m in self.modules():
            tap = getattr(m, "tap", None)
            if isinstance(tap, FeatureTap):
                tap.close()
        for v in vars(self).values():
            if isinstance(v, FeatureTap):
                v.close()


def labelled_cross_entropy(logits: Tensor, y: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy to ``y`` where label ``-1`` marks an unlabelled sample that adds nothing.

    The sum over the labelled samples is divided by the whole batch size, so every image weighs the same whether
    or not it has a label (an unlabelled one contributes only its teacher terms); with every sample labelled this
    is the usual mean. A batch without any label gives 0.
    """
    per = F.cross_entropy(logits, y.clamp(min=0), reduction="none", label_smoothing=label_smoothing)
    return torch.where(y >= 0, per, torch.zeros_like(per)).sum() / max(1, len(y))


def method_params(name: str) -> dict[str, inspect.Parameter]:
    """The hyper-parameters a method takes (its constructor's keyword arguments, minus the models)."""
    cls = DISTILLERS.get(name)
    params: dict[str, inspect.Parameter] = {}
    for klass in reversed(cls.__mro__):  # subclass defaults win
        if klass is nn.Module or not issubclass(klass, Distiller):
            continue
        for p in inspect.signature(klass.__init__).parameters.values():
            if p.kind is p.KEYWORD_ONLY:
                params[p.name] = p
    for hidden in (*CONTEXT, *cls.hidden_params):
        params.pop(hidden, None)
    return params


CONTEXT = ("input_shape", "num_samples", "num_classes")  # facts of the data, supplied by the pipeline, not the user


def build_distiller(
    name: str,
    student: nn.Module,
    teacher: nn.Module | None,
    input_shape: Sequence[int],
    num_samples: int | None = None,
    num_classes: int | None = None,
    **params: Any,
) -> Distiller:
    """Create method ``name``; unknown hyper-parameters are refused with the list of valid ones.

    ``num_samples`` (training-set size) and ``num_classes`` are handed to methods whose constructor takes them
    (memory banks, class-wise statistics).
    """
    load_builtin_methods()
    cls = DISTILLERS.get(name)
    valid = method_params(name)
    unknown = sorted(set(params) - set(valid))
    if unknown:
        raise ConfigError(f"method {name!r} has no parameter(s) {unknown}; it takes {sorted(valid)}")
    for key, value in params.items():
        _check_param(name, key, value, valid[key].annotation)
    accepted = _init_params(cls)
    context = {k: v for k, v in (("num_samples", num_samples), ("num_classes", num_classes)) if k in accepted}
    return cls(student, teacher if cls.needs_teacher else None, input_shape=input_shape, **context, **params)


# Parameter names whose meaning fixes a range, whatever the method: a temperature divides logits (> 0); a loss
# weight below 0 would turn its term into one the student maximises (>= 0).
TEMPERATURE_NAMES = re.compile(r"(?i)(.*_)?(temperatures?|tau|t)")
WEIGHT_NAMES = re.compile(r"(.*_weights?|weights?|alpha|beta|gamma)")


def _check_param(method: str, key: str, value: Any, annotation: Any) -> None:
    """One generic check of a method parameter before anything trains: its type against the constructor's
    annotation, finite numbers (also inside lists), and the range its name implies (:data:`TEMPERATURE_NAMES`,
    :data:`WEIGHT_NAMES`). Each method's own constructor may narrow the range further."""
    where = f"method {method!r}: {key}"
    check_value(annotation, value, where)
    numbers = list(enumerate(value)) if isinstance(value, (list, tuple)) else [(None, value)]
    for i, v in numbers:
        at = where if i is None else f"{where}[{i}]"
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if TEMPERATURE_NAMES.fullmatch(key):
            check_range(at, v, lo=0.0, lo_open=True)
        elif WEIGHT_NAMES.fullmatch(key):
            check_range(at, v, lo=0.0)


def _init_params(cls: type) -> set[str]:
    names: set[str] = set()
    for klass in cls.__mro__:
        if isinstance(klass, type) and issubclass(klass, Distiller):
            names |= set(inspect.signature(klass.__init__).parameters)
    return names


def method_temperature(method: str, params: dict[str, Any]) -> float | None:
    """The softening temperature of ``method`` (its parameter, else the method's own default), or None."""
    if "temperature" in params:
        return float(params["temperature"])
    load_builtin_methods()
    try:
        cls = DISTILLERS.get(method)
    except DistillError:
        return None
    p = inspect.signature(cls.__init__).parameters.get("temperature")
    return float(p.default) if p is not None and isinstance(p.default, (int, float)) else None


def load_builtin_methods() -> None:
    import distill.distillers  # noqa: F401  (the package imports every method module)

"""FeatureDistiller: the base of every method that compares intermediate features of student and teacher.

It does what each such method used to repeat: unwrap the teacher, resolve the layers to compare — lists of stages
paired by order, or one layer on each side — wrap the teacher in :class:`~distill.distillers.base.Teacher` tapping
its layers, tap the student's with a :class:`~distill.features.FeatureTap`, optionally probe the feature shapes
(to size adapters) and run the step: teacher, student, logit terms. A method writes only its constructor's
checks, its adapters and :meth:`FeatureDistiller.feature_loss`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from torch import Tensor, nn

from distill.distillers.base import Distiller, StepInput, Teacher
from distill.errors import ConfigError
from distill.features import FeatureTap, probe_shapes
from distill.losses.attention import RESIZE_MODES
from distill.models.adapters import tap_names

Shape = tuple[int, ...]


def unwrap(teacher: nn.Module | None) -> nn.Module:
    """The plain teacher model, whether given bare or already wrapped in :class:`Teacher`."""
    assert teacher is not None
    return teacher.model if isinstance(teacher, Teacher) else teacher


def stage_layers(model: nn.Module, what: str) -> list[str]:
    """The model's ``feature_layers``; when it names none, the error says to give ``what`` (a parameter name)."""
    layers = tap_names(model).feature_layers
    if not layers:
        raise ConfigError(f"{type(model).__name__} names no feature_layers; give {what}")
    return layers


def penultimate_layer(model: nn.Module, role: str) -> str:
    """The module whose output is the pooled ``(B, D)`` vector the classifier reads (``role``: ``"student"`` or
    ``"teacher"``, for the error)."""
    name = tap_names(model).penultimate
    if not name:
        raise ConfigError(f"{type(model).__name__} names no penultimate layer; give {role}_layer")
    return name


def last_stage(model: nn.Module, role: str) -> str:
    """The last of the model's ``feature_layers`` (the last feature map, before pooling)."""
    return stage_layers(model, f"{role}_layer")[-1]


def middle_stage(model: nn.Module, role: str) -> str:
    """The middle one of the model's ``feature_layers``."""
    layers = stage_layers(model, f"{role}_layer")
    return layers[len(layers) // 2]


def paired_stages(
    student: nn.Module,
    teacher: nn.Module,
    student_layers: Sequence[str] | None,
    teacher_layers: Sequence[str] | None,
    default: Callable[[nn.Module, str], list[str]] = stage_layers,
) -> tuple[list[str], list[str]]:
    """Stage names to compare, matched by order: the given lists, else ``default(model, what)`` (the models'
    ``feature_layers``). Default lists of different lengths are aligned from the end (the deepest stages
    correspond); explicit lists must have the same length.
    """
    s = list(student_layers) if student_layers else default(student, "student_layers")
    t = list(teacher_layers) if teacher_layers else default(teacher, "teacher_layers")
    if len(s) != len(t):
        if student_layers and teacher_layers:
            raise ConfigError(f"student_layers {s} and teacher_layers {t} must pair one to one")
        n = min(len(s), len(t))
        s, t = s[len(s) - n :], t[len(t) - n :]
    return s, t


def check_resize(resize: str) -> None:
    """Refuse an unknown spatial-size convention with a :class:`ConfigError`."""
    if resize not in RESIZE_MODES:
        raise ConfigError(f"resize must be one of {list(RESIZE_MODES)}, got {resize!r}")


class FeatureDistiller(Distiller):
    """Base of the feature methods: layers, hooks, shapes and the step; a subclass writes :meth:`feature_loss`.

    Two flavours of layers, chosen by :attr:`single_layer`:

    * stages (``False``): the user's ``student_layers`` / ``teacher_layers`` or :meth:`default_stages` of each model,
      paired by order (:func:`paired_stages`); kept as ``self.student_layers`` / ``self.teacher_layers``;
    * one layer each (``True``): the user's ``student_layer`` / ``teacher_layer`` or :meth:`default_layer` of each
      model; kept as ``self.student_layer`` / ``self.teacher_layer``.

    The student's layers are tapped by ``self.tap``, the teacher's by the :class:`Teacher`. With ``probe=True`` the
    feature shapes (without the batch dimension) are measured by a dry run before any hook is installed, checked by
    :meth:`check_shapes` and kept, one per layer, as ``self.student_shapes`` / ``self.teacher_shapes`` for the
    subclass to size its adapters after ``super().__init__``.

    The constructor's own arguments are positional-or-keyword on purpose: only keyword-only arguments are method
    hyper-parameters (:func:`~distill.distillers.base.method_params`), and these are not.
    """

    teacher_features = True
    single_layer: ClassVar[bool] = False

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        layers: tuple[Any, Any] = (None, None),
        probe: bool = False,
        **kw: Any,
    ) -> None:
        t_model = unwrap(teacher)
        s_layers, t_layers = self.resolve_layers(student, t_model, *layers)
        shapes: tuple[list[Shape], list[Shape]] | None = None
        if probe:
            input_shape = kw.get("input_shape")
            if input_shape is None:
                raise ConfigError(f"{self.name} needs input_shape to size its adapters")
            s_probe = probe_shapes(student, s_layers, input_shape)
            t_probe = probe_shapes(t_model, t_layers, input_shape)
            self.check_shapes(s_probe, t_probe)
            shapes = [s_probe[n] for n in s_layers], [t_probe[n] for n in t_layers]
        super().__init__(student, Teacher(t_model, t_layers), **kw)
        if self.single_layer:
            (self.student_layer,), (self.teacher_layer,) = s_layers, t_layers
        else:
            self.student_layers, self.teacher_layers = s_layers, t_layers
        if shapes is not None:
            self.student_shapes, self.teacher_shapes = shapes
        self.tap = FeatureTap(student, s_layers)

    def resolve_layers(
        self, student: nn.Module, teacher: nn.Module, s_given: Any, t_given: Any
    ) -> tuple[list[str], list[str]]:
        """The student's and the teacher's layer names (see the class's flavours)."""
        if self.single_layer:
            s_layer = s_given or self.default_layer(student, "student")
            return [s_layer], [t_given or self.default_layer(teacher, "teacher")]
        return paired_stages(student, teacher, s_given, t_given, self.default_stages)

    @staticmethod
    def default_stages(model: nn.Module, what: str) -> list[str]:
        """The stages compared when none are given (``what``: the parameter that names them instead)."""
        return stage_layers(model, what)

    @staticmethod
    def default_layer(model: nn.Module, role: str) -> str:
        """The layer compared when none is given; ``role`` is ``"student"`` or ``"teacher"``."""
        return penultimate_layer(model, role)

    def check_shapes(self, student_shapes: dict[str, Shape], teacher_shapes: dict[str, Shape]) -> None:
        """Refuse probed feature shapes (by layer name) the method cannot compare, before any hook is installed."""

    def step(self, b: StepInput) -> dict[str, Tensor]:
        t_logits = self.run_teacher(b.x)
        t_feats = self.teacher.features()
        logits = self.student(b.x)
        terms = self.logit_terms(logits, b.y, t_logits)
        terms.update(self.feature_loss(self.tap.get(), t_feats, b))
        return {**terms, "_logits": logits}

    def feature_loss(self, s_feats: list[Tensor], t_feats: list[Tensor], b: StepInput) -> dict[str, Tensor]:
        """The method's weighted feature terms from the student's and the teacher's tapped features (layer order)."""
        raise NotImplementedError

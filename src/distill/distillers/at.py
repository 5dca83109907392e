"""Attention transfer (Zagoruyko & Komodakis, 2017, "Paying More Attention to Attention", arXiv:1612.03928)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from distill.distillers.base import Distiller, StepInput, Teacher, check_range, register_method
from distill.errors import ConfigError
from distill.features import FeatureTap
from distill.losses.attention import RESIZE_MODES, at_loss
from distill.models.adapters import tap_names


def unwrap(teacher: nn.Module | None) -> nn.Module:
    """The plain teacher model, whether given bare or already wrapped in :class:`Teacher`."""
    assert teacher is not None
    return teacher.model if isinstance(teacher, Teacher) else teacher


def stage_layers(model: nn.Module, given: Sequence[str] | None, what: str) -> list[str]:
    """``given`` or the model's ``feature_layers``; an error says how to name them when the model has none."""
    layers = list(given) if given else tap_names(model).feature_layers
    if not layers:
        raise ConfigError(f"{type(model).__name__} names no feature_layers; give {what}_layers")
    return layers


def paired_stages(
    student: nn.Module,
    teacher: nn.Module,
    student_layers: Sequence[str] | None,
    teacher_layers: Sequence[str] | None,
) -> tuple[list[str], list[str]]:
    """Stage names to compare, matched by order. Default lists of different lengths are aligned from the end
    (the deepest stages correspond); explicit lists must have the same length.
    """
    s = stage_layers(student, student_layers, "student")
    t = stage_layers(teacher, teacher_layers, "teacher")
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


def penultimate_layer(model: nn.Module, given: str | None, what: str) -> str:
    """``given`` or the module whose output is the pooled ``(B, D)`` vector the classifier reads."""
    name = given or tap_names(model).penultimate
    if not name:
        raise ConfigError(f"{type(model).__name__} names no penultimate layer; give {what}_layer")
    return name


@register_method("at")
class AT(Distiller):
    """``ce_weight · CE + beta · Σ_stages at_loss(s, t) [+ kd_weight · KD]``.

    Every stage in ``feature_layers`` is paired with the teacher's stage of the same order. The sum over stages
    with ``beta = 1000`` is the CRD benchmark's setting (Tian et al., 2020, arXiv:1910.10699).

    Args:
        student_layers / teacher_layers: module names of the stages (default: the models' ``feature_layers``).
        beta: weight of the attention term.
        p: exponent of the attention map ``mean_c |f|^p``.
        resize: when a pair's spatial sizes differ, ``"pool_first"`` (the reference code's convention) average-pools
            the larger feature map — student's or teacher's — to the smaller size before the attention maps are
            formed; ``"to_teacher"`` resizes the student's attention map to the teacher's size afterwards (pooled
            when larger, bilinearly upsampled when smaller). Equal sizes: both are the same.
    """

    teacher_features = True

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        *,
        student_layers: list[str] | None = None,
        teacher_layers: list[str] | None = None,
        beta: float = 1000.0,
        p: float = 2.0,
        resize: str = "pool_first",
        **kw,
    ) -> None:
        check_range("beta", beta, lo=0.0)
        check_range("p", p, lo=0.0, lo_open=True)
        check_resize(resize)
        t_model = unwrap(teacher)
        s_layers, t_layers = paired_stages(student, t_model, student_layers, teacher_layers)
        super().__init__(student, Teacher(t_model, t_layers), **kw)
        self.student_layers, self.teacher_layers, self.beta, self.p = s_layers, t_layers, beta, p
        self.resize = resize
        self.tap = FeatureTap(student, s_layers)

    def step(self, b: StepInput) -> dict[str, Tensor]:
        t_logits = self.run_teacher(b.x)
        logits = self.student(b.x)
        pairs = zip(self.tap.get(), self.teacher.features(), strict=True)
        terms = self.logit_terms(logits, b.y, t_logits)
        terms["at"] = self.beta * sum(at_loss(s, t, self.p, self.resize) for s, t in pairs)
        return {**terms, "_logits": logits}

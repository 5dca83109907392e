"""Neuron selectivity transfer (Huang & Wang, 2017, "Like What You Like: Knowledge Distill via Neuron Selectivity
Transfer", arXiv:1707.01219)."""

from __future__ import annotations

from torch import Tensor, nn

from distill.distillers.at import check_resize, paired_stages, unwrap
from distill.distillers.base import Distiller, StepInput, Teacher, check_range, register_method
from distill.features import FeatureTap
from distill.losses.attention import nst_loss


@register_method("nst")
class NST(Distiller):
    """``ce_weight · CE + nst_weight · Σ_stages MMD²(s, t) [+ kd_weight · KD]``.

    The MMD with a polynomial kernel (``degree = 2, c = 0``, the paper's choice) compares the distributions of the
    L2-normalised per-channel activation maps of each pair of stages (matched by order, as for AT); channel
    counts may differ. ``nst_weight = 50`` over the summed stages is the CRD benchmark's setting.

    Args:
        student_layers / teacher_layers: module names of the stages (default: the models' ``feature_layers``).
        nst_weight: weight of the MMD term.
        degree / c: the polynomial kernel ``(x·y + c)^degree``.
        resize: when a pair's spatial sizes differ, ``"pool_first"`` (the reference code's convention) average-pools
            the larger feature map — student's or teacher's — to the smaller size; ``"to_teacher"`` resizes the
            student's map to the teacher's (pooled when larger, bilinearly upsampled when smaller). Equal sizes:
            both are the same.
    """

    teacher_features = True

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        *,
        student_layers: list[str] | None = None,
        teacher_layers: list[str] | None = None,
        nst_weight: float = 50.0,
        degree: int = 2,
        c: float = 0.0,
        resize: str = "pool_first",
        **kw,
    ) -> None:
        check_range("nst_weight", nst_weight, lo=0.0)
        check_range("degree", degree, lo=1)
        check_range("c", c, lo=0.0)
        check_resize(resize)
        t_model = unwrap(teacher)
        s_layers, t_layers = paired_stages(student, t_model, student_layers, teacher_layers)
        super().__init__(student, Teacher(t_model, t_layers), **kw)
        self.student_layers, self.teacher_layers = s_layers, t_layers
        self.nst_weight, self.degree, self.c, self.resize = nst_weight, int(degree), c, resize
        self.tap = FeatureTap(student, s_layers)

    def step(self, b: StepInput) -> dict[str, Tensor]:
        t_logits = self.run_teacher(b.x)
        logits = self.student(b.x)
        pairs = zip(self.tap.get(), self.teacher.features(), strict=True)
        terms = self.logit_terms(logits, b.y, t_logits)
        terms["nst"] = self.nst_weight * sum(nst_loss(s, t, self.degree, self.c, self.resize) for s, t in pairs)
        return {**terms, "_logits": logits}

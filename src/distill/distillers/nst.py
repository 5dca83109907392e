"""Neuron selectivity transfer (Huang & Wang, 2017, "Like What You Like: Knowledge Distill via Neuron Selectivity
Transfer", arXiv:1707.01219)."""

from __future__ import annotations

from torch import Tensor, nn

from distill.distillers.base import StepInput, check_range, register_method
from distill.distillers.feature_base import FeatureDistiller, check_resize
from distill.losses.attention import nst_loss


@register_method("nst")
class NST(FeatureDistiller):
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
        super().__init__(student, teacher, (student_layers, teacher_layers), **kw)
        self.nst_weight, self.degree, self.c, self.resize = nst_weight, int(degree), c, resize

    def feature_loss(self, s_feats: list[Tensor], t_feats: list[Tensor], b: StepInput) -> dict[str, Tensor]:
        pairs = zip(s_feats, t_feats, strict=True)
        return {"nst": self.nst_weight * sum(nst_loss(s, t, self.degree, self.c, self.resize) for s, t in pairs)}

"""Attention transfer (Zagoruyko & Komodakis, 2017, "Paying More Attention to Attention", arXiv:1612.03928)."""

from __future__ import annotations

from torch import Tensor, nn

from distill.distillers.base import StepInput, check_range, register_method
from distill.distillers.feature_base import FeatureDistiller, check_resize
from distill.losses.attention import at_loss


@register_method("at")
class AT(FeatureDistiller):
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
        super().__init__(student, teacher, (student_layers, teacher_layers), **kw)
        self.beta, self.p, self.resize = beta, p, resize

    def feature_loss(self, s_feats: list[Tensor], t_feats: list[Tensor], b: StepInput) -> dict[str, Tensor]:
        pairs = zip(s_feats, t_feats, strict=True)
        return {"at": self.beta * sum(at_loss(s, t, self.p, self.resize) for s, t in pairs)}

"""Similarity-preserving knowledge distillation (Tung & Mori, 2019, arXiv:1907.09682)."""

from __future__ import annotations

from torch import Tensor, nn

from distill.distillers.base import StepInput, check_range, register_method
from distill.distillers.feature_base import FeatureDistiller, last_stage
from distill.losses.relational import sp_loss


@register_method("sp")
class SP(FeatureDistiller):
    """``ce_weight · CE + gamma · ‖G_s − G_t‖_F² / B² [+ kd_weight · KD]`` on the batch similarity matrices.

    ``G = F·Fᵀ`` (rows L2-normalised) of the flattened features of one stage — by default the last of
    ``feature_layers``, the stage before pooling, as in the paper and the CRD benchmark (``gamma = 3000``).
    The feature sizes of student and teacher need not match.

    Args:
        student_layer / teacher_layer: module names of the compared stage.
        gamma: weight of the similarity term.
    """

    single_layer = True
    default_layer = staticmethod(last_stage)

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        *,
        student_layer: str | None = None,
        teacher_layer: str | None = None,
        gamma: float = 3000.0,
        **kw,
    ) -> None:
        check_range("gamma", gamma, lo=0.0)
        super().__init__(student, teacher, (student_layer, teacher_layer), **kw)
        self.gamma = gamma

    def feature_loss(self, s_feats: list[Tensor], t_feats: list[Tensor], b: StepInput) -> dict[str, Tensor]:
        (s_feat,), (t_feat,) = s_feats, t_feats
        return {"sp": self.gamma * sp_loss(s_feat, t_feat)}

"""Relational knowledge distillation (Park, Kim, Lu & Cho, 2019, arXiv:1904.05068)."""

from __future__ import annotations

from torch import Tensor, nn

from distill.distillers.base import StepInput, check_range, register_method
from distill.distillers.feature_base import FeatureDistiller
from distill.losses.relational import rkd_angle_loss, rkd_distance_loss


@register_method("rkd")
class RKD(FeatureDistiller):
    """``ce_weight · CE + distance_weight · L_dist + angle_weight · L_angle [+ kd_weight · KD]``.

    Both terms compare the structure of the batch of penultimate embeddings (pairwise distances normalised by
    their mean; cosines of the angles of every triplet) through the Huber loss, so the embedding sizes of
    student and teacher need not match. Weights 25 and 50 are the paper's and the CRD benchmark's.

    Args:
        student_layer / teacher_layer: module names of the embeddings (default: the models' ``penultimate``).
        distance_weight / angle_weight: weights of the two terms.
    """

    single_layer = True

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        *,
        student_layer: str | None = None,
        teacher_layer: str | None = None,
        distance_weight: float = 25.0,
        angle_weight: float = 50.0,
        **kw,
    ) -> None:
        check_range("distance_weight", distance_weight, lo=0.0)
        check_range("angle_weight", angle_weight, lo=0.0)
        super().__init__(student, teacher, (student_layer, teacher_layer), **kw)
        self.distance_weight, self.angle_weight = distance_weight, angle_weight

    def feature_loss(self, s_feats: list[Tensor], t_feats: list[Tensor], b: StepInput) -> dict[str, Tensor]:
        (s_emb,), (t_emb,) = s_feats, t_feats
        terms = {}
        if self.distance_weight > 0:
            terms["rkd_distance"] = self.distance_weight * rkd_distance_loss(s_emb, t_emb)
        if self.angle_weight > 0:
            terms["rkd_angle"] = self.angle_weight * rkd_angle_loss(s_emb, t_emb)
        return terms

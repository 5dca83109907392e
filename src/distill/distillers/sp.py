"""Similarity-preserving knowledge distillation (Tung & Mori, 2019, arXiv:1907.09682)."""

from __future__ import annotations

from torch import Tensor, nn

from distill.distillers.at import stage_layers, unwrap
from distill.distillers.base import Distiller, StepInput, Teacher, check_range, register_method
from distill.features import FeatureTap
from distill.losses.relational import sp_loss


@register_method("sp")
class SP(Distiller):
    """``ce_weight · CE + gamma · ‖G_s − G_t‖_F² / B² [+ kd_weight · KD]`` on the batch similarity matrices.

    ``G = F·Fᵀ`` (rows L2-normalised) of the flattened features of one stage — by default the last of
    ``feature_layers``, the stage before pooling, as in the paper and the CRD benchmark (``gamma = 3000``).
    The feature sizes of student and teacher need not match.

    Args:
        student_layer / teacher_layer: module names of the compared stage.
        gamma: weight of the similarity term.
    """

    teacher_features = True

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
        t_model = unwrap(teacher)
        s_layer = student_layer or stage_layers(student, None, "student")[-1]
        t_layer = teacher_layer or stage_layers(t_model, None, "teacher")[-1]
        super().__init__(student, Teacher(t_model, [t_layer]), **kw)
        self.student_layer, self.teacher_layer, self.gamma = s_layer, t_layer, gamma
        self.tap = FeatureTap(student, [s_layer])

    def step(self, b: StepInput) -> dict[str, Tensor]:
        t_logits = self.run_teacher(b.x)
        (t_feat,) = self.teacher.features()
        logits = self.student(b.x)
        terms = self.logit_terms(logits, b.y, t_logits)
        terms["sp"] = self.gamma * sp_loss(self.tap[self.student_layer], t_feat)
        return {**terms, "_logits": logits}

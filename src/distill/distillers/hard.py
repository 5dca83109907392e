"""Distillation by the teacher's pseudo-labels (argmax), usable on unlabeled transfer data."""

from __future__ import annotations

from torch import Tensor, nn

from distill.distillers.base import Distiller, StepInput, check_range, register_method
from distill.losses import pseudo_label_loss


@register_method("hard")
class Hard(Distiller):
    """Cross-entropy to ``argmax`` of the teacher's logits; labels, when given, are ignored unless ``ce_weight``.

    Args:
        pseudo_weight: weight of the pseudo-label term.
        ce_weight: weight of the true-label term (0 by default, so unlabeled data works).
    """

    needs_labels = False

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        *,
        pseudo_weight: float = 1.0,
        ce_weight: float = 0.0,
        **kw,
    ) -> None:
        check_range("pseudo_weight", pseudo_weight, lo=0.0)
        super().__init__(student, teacher, ce_weight=ce_weight, **kw)
        self.pseudo_weight = pseudo_weight

    def step(self, b: StepInput) -> dict[str, Tensor]:
        t = self.run_teacher(b.x, b.teacher_logits)
        logits = self.student(b.x)
        terms = self.logit_terms(logits, b.y, t)
        terms["pseudo"] = self.pseudo_weight * pseudo_label_loss(logits, t, self.label_smoothing)
        return {**terms, "_logits": logits}

"""Training without a teacher: the baseline every distillation result is measured against."""

from __future__ import annotations

from torch import Tensor

from distill.distillers.base import Distiller, StepInput, register_method


@register_method("scratch")
class Scratch(Distiller):
    """Cross-entropy on the labels only (also used to train teachers)."""

    needs_teacher = False

    def step(self, b: StepInput) -> dict[str, Tensor]:
        logits = self.student(b.x)
        return {**self.logit_terms(logits, b.y, None), "_logits": logits}

"""Knowledge distillation by soft targets (Hinton, Vinyals & Dean, 2015, "Distilling the Knowledge in a
Neural Network", arXiv:1503.02531)."""

from __future__ import annotations

from torch import Tensor, nn

from distill.distillers.base import Distiller, StepInput, alpha_weights, register_method


@register_method("kd")
class KD(Distiller):
    """``(1 − α) · CE(s, y) + α · T² · KL(softmax(t/T) ‖ softmax(s/T))``.

    Args:
        alpha: weight of the soft-target term; ``1.0`` uses no labels at all (a transfer set may be unlabeled).
        temperature: softening temperature ``T``.
    """

    hidden_params = ("ce_weight", "kd_weight")

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        *,
        alpha: float = 0.9,
        temperature: float = 4.0,
        **kw,
    ) -> None:
        super().__init__(student, teacher, temperature=temperature, **alpha_weights(alpha), **kw)
        self.alpha = alpha

    def step(self, b: StepInput) -> dict[str, Tensor]:
        t = self.run_teacher(b.x, b.teacher_logits)
        logits = self.student(b.x)
        return {**self.logit_terms(logits, b.y, t), "_logits": logits}

"""DIST: distillation from a stronger teacher by correlation (Huang, You, Wang, Qian & Xu, NeurIPS 2022,
"Knowledge Distillation from A Stronger Teacher", arXiv:2205.10536)."""

from __future__ import annotations

from torch import Tensor, nn

from distill.distillers.base import Distiller, StepInput, check_range, register_method
from distill.losses.logits import dist_loss


@register_method("dist")
class DIST(Distiller):
    """``ce_weight · CE + T² · (β · inter + γ · intra)``, ``inter``/``intra`` = 1 − Pearson ρ per sample / per class.

    Exact probability matching (KL) is relaxed to matching the relations: the ranking and relative gaps among the
    classes of one sample, and among the samples of one class. Defaults: β = γ = 1 (the authors' loss defaults)
    and T = 4, the paper's CIFAR-100 temperature — this toolkit's recipes are small-image ones; the paper's
    ImageNet runs use T = 1.

    Args:
        beta: weight of the inter-class (per-sample) relation.
        gamma: weight of the intra-class (per-class, across the batch) relation.
        temperature: softmax temperature ``τ``.
        kd_weight: optional extra Hinton KD term (0 by default).
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        *,
        beta: float = 1.0,
        gamma: float = 1.0,
        temperature: float = 4.0,
        **kw,
    ) -> None:
        check_range("beta", beta, lo=0.0)
        check_range("gamma", gamma, lo=0.0)
        super().__init__(student, teacher, temperature=temperature, **kw)
        self.beta, self.gamma = beta, gamma

    def step(self, b: StepInput) -> dict[str, Tensor]:
        t = self.run_teacher(b.x, b.teacher_logits)
        logits = self.student(b.x)
        terms = self.logit_terms(logits, b.y, t)
        terms["inter"] = dist_loss(logits, t, beta=self.beta, gamma=0.0, temperature=self.temperature)
        terms["intra"] = dist_loss(logits, t, beta=0.0, gamma=self.gamma, temperature=self.temperature)
        return {**terms, "_logits": logits}

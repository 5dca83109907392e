"""Decoupled knowledge distillation (Zhao, Cui, Song, Qiu & Liang, CVPR 2022, "Decoupled Knowledge
Distillation", arXiv:2203.08679)."""

from __future__ import annotations

from torch import Tensor, nn

from distill.distillers.base import Distiller, StepInput, check_range, register_method
from distill.errors import ConfigError
from distill.losses.logits import nckd_loss, tckd_loss


@register_method("dkd")
class DKD(Distiller):
    """``ce_weight · CE + w(epoch) · (α · TCKD + β · NCKD)``, T² inside both KD terms.

    TCKD matches the binary split target / rest, NCKD the distribution among the non-target classes. The KD terms
    are ramped in linearly, ``w = min(1, (epoch + 1) / warmup_epochs)`` (epochs counted from 0), as in the
    authors' training recipe; for runs much shorter than the paper's 240 epochs lower ``warmup_epochs`` (about a
    twelfth of the run keeps the paper's proportion). Defaults are the paper's CIFAR-100 setting.

    Args:
        alpha: weight of TCKD.
        beta: weight of NCKD (8 for ResNet32x4 → ResNet8x4; the paper tunes it per pair, 1–8).
        temperature: softening temperature ``T``.
        warmup_epochs: epochs over which the KD terms grow linearly to full weight; 0 disables the ramp.
        kd_weight: optional extra Hinton KD term (0 by default).
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        *,
        alpha: float = 1.0,
        beta: float = 8.0,
        temperature: float = 4.0,
        warmup_epochs: int = 20,
        **kw,
    ) -> None:
        check_range("alpha", alpha, lo=0.0)
        check_range("beta", beta, lo=0.0)
        check_range("warmup_epochs", warmup_epochs, lo=0)
        super().__init__(student, teacher, temperature=temperature, **kw)
        self.alpha, self.beta, self.warmup_epochs = alpha, beta, warmup_epochs
        self.epoch, self.epochs = 0, 1

    def warmup_factor(self) -> float:
        """The weight of the KD terms in the current epoch."""
        if self.warmup_epochs <= 0:
            return 1.0
        return min(1.0, (self.epoch + 1) / self.warmup_epochs)

    def step(self, b: StepInput) -> dict[str, Tensor]:
        if b.y is None:
            raise ConfigError("method 'dkd' needs labels (it splits the target class from the rest)")
        t = self.run_teacher(b.x, b.teacher_logits)
        logits = self.student(b.x)
        w = self.warmup_factor()
        terms = self.logit_terms(logits, b.y, t)
        terms["tckd"] = w * self.alpha * tckd_loss(logits, t, b.y, self.temperature)
        terms["nckd"] = w * self.beta * nckd_loss(logits, t, b.y, self.temperature)
        return {**terms, "_logits": logits}

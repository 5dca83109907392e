"""Decoupled knowledge distillation (Zhao, Cui, Song, Qiu & Liang, CVPR 2022, "Decoupled Knowledge
Distillation", arXiv:2203.08679)."""

from __future__ import annotations

from torch import Tensor, nn

from distill.distillers.base import Distiller, StepInput, check_range, register_method
from distill.errors import ConfigError
from distill.losses.logits import nckd_loss, tckd_loss

PAPER_WARMUP, PAPER_EPOCHS = 20, 240  # the paper's warm-up: 20 of its 240 CIFAR-100 epochs


@register_method("dkd")
class DKD(Distiller):
    """``ce_weight · CE + w(epoch) · (α · TCKD + β · NCKD)``, T² inside both KD terms.

    TCKD matches the binary split target / rest, NCKD the distribution among the non-target classes. The KD terms
    are ramped in linearly, ``w = min(1, (epoch + 1) / W)`` (epochs counted from 0), as in the authors' training
    recipe. The paper warms up over 20 of its 240 epochs; by default ``W`` keeps that proportion of whatever run
    the trainer announces through :meth:`set_epoch`: ``W = epochs / 12`` (20 epochs of 240, 2 of 24; in runs of
    12 epochs or fewer ``W ≤ 1`` and the terms are at full weight from the first epoch). An explicit
    ``warmup_epochs`` is used as given. Outside the trainer (no ``set_epoch``) ``w = 1`` by default. The other
    defaults are the paper's CIFAR-100 setting.

    Args:
        alpha: weight of TCKD.
        beta: weight of NCKD (8 for ResNet32x4 → ResNet8x4; the paper tunes it per pair, 1–8).
        temperature: softening temperature ``T``.
        warmup_epochs: epochs over which the KD terms grow linearly to full weight; ``None`` (default): a twelfth
            of the run; 0 disables the ramp.
        kd_weight: optional extra Hinton KD term (0 by default).
    """

    needs_every_label = True  # TCKD/NCKD split the target class from the rest: an unlabelled sample has none

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        *,
        alpha: float = 1.0,
        beta: float = 8.0,
        temperature: float = 4.0,
        warmup_epochs: float | None = None,
        **kw,
    ) -> None:
        check_range("alpha", alpha, lo=0.0)
        check_range("beta", beta, lo=0.0)
        if warmup_epochs is not None:
            check_range("warmup_epochs", warmup_epochs, lo=0.0)
        super().__init__(student, teacher, temperature=temperature, **kw)
        self.alpha, self.beta, self.warmup_epochs = alpha, beta, warmup_epochs
        self.epoch, self.epochs = 0, 1

    def warmup_length(self) -> float:
        """``W``: ``warmup_epochs`` when given, else the paper's proportion of the run, ``epochs / 12``."""
        if self.warmup_epochs is not None:
            return float(self.warmup_epochs)
        return self.epochs * PAPER_WARMUP / PAPER_EPOCHS

    def warmup_factor(self) -> float:
        """The weight of the KD terms in the current epoch."""
        warm = self.warmup_length()
        return 1.0 if warm <= 0 else min(1.0, (self.epoch + 1) / warm)

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

"""KD with logit standardisation (Sun, Ren, Li, Wang & Cao, CVPR 2024, "Logit Standardization in Knowledge
Distillation", arXiv:2403.01427)."""

from __future__ import annotations

from torch import Tensor, nn

from distill.distillers.base import Distiller, StepInput, register_method
from distill.losses.logits import lskd_loss


@register_method("lskd")
class LSKD(Distiller):
    """``ce_weight · CE + kd_weight · T² · KL(softmax(z(t)/T) ‖ softmax(z(s)/T))``, ``z`` the per-sample z-score.

    Standardising each sample's logits removes the implicit demand that the student match the teacher's logit
    range and offset (the temperature becomes, in effect, the logit's own standard deviation times ``T``).
    Defaults are the authors' CIFAR-100 recipe for KD + logit standardisation: CE weight 0.1, KD weight 9,
    base temperature 2 (3 for some pairs); T² is kept. Like the authors' KD (their code base warms up only DKD),
    there is no warm-up. Note that the z-score divides by the student's logit spread σ, so the term's gradient
    scales as 1/σ: at initialisation (σ ≈ 0.1–0.4) it is 7–18 times that of plain KD at its defaults, and larger
    the smaller σ happens to be — on short runs at a high learning rate this makes results seed-sensitive;
    ``train.grad_clip`` or a lower learning rate tames it.

    Args:
        temperature: base temperature applied to the z-scored logits.
        kd_weight: weight of the standardised KD term.
        ce_weight: weight of the cross-entropy with the labels.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        *,
        temperature: float = 2.0,
        kd_weight: float = 9.0,
        ce_weight: float = 0.1,
        **kw,
    ) -> None:
        super().__init__(student, teacher, temperature=temperature, kd_weight=kd_weight, ce_weight=ce_weight, **kw)

    def step(self, b: StepInput) -> dict[str, Tensor]:
        t = self.run_teacher(b.x, b.teacher_logits)
        logits = self.student(b.x)
        terms = self.logit_terms(logits, b.y, None)  # CE only: the KD term here is the standardised one
        if self.kd_weight > 0:
            terms["lskd"] = self.kd_weight * lskd_loss(logits, t, self.temperature)
        return {**terms, "_logits": logits}

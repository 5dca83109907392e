"""Probabilistic knowledge transfer (Passalis & Tefas, 2018, "Learning Deep Representations with Probabilistic
Knowledge Transfer", arXiv:1803.10837)."""

from __future__ import annotations

from torch import Tensor, nn

from distill.distillers.at import penultimate_layer, unwrap
from distill.distillers.base import Distiller, StepInput, Teacher, check_range, register_method
from distill.features import FeatureTap
from distill.losses.relational import pkt_loss


@register_method("pkt")
class PKT(Distiller):
    """``ce_weight · CE + pkt_weight · KL(P_t ‖ P_s) [+ kd_weight · KD]``.

    ``P`` are the conditional probabilities of the cosine-similarity kernel between the penultimate embeddings of
    a batch; the embedding sizes need not match. ``pkt_weight = 30000`` is the CRD benchmark's setting (Tian et al.,
    2020, arXiv:1910.10699), which averages the KL over the ``B²`` entries.

    Args:
        student_layer / teacher_layer: module names of the embeddings (default: the models' ``penultimate``).
        pkt_weight: weight of the PKT term.
    """

    teacher_features = True

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        *,
        student_layer: str | None = None,
        teacher_layer: str | None = None,
        pkt_weight: float = 30000.0,
        **kw,
    ) -> None:
        check_range("pkt_weight", pkt_weight, lo=0.0)
        t_model = unwrap(teacher)
        s_layer = penultimate_layer(student, student_layer, "student")
        t_layer = penultimate_layer(t_model, teacher_layer, "teacher")
        super().__init__(student, Teacher(t_model, [t_layer]), **kw)
        self.student_layer, self.teacher_layer, self.pkt_weight = s_layer, t_layer, pkt_weight
        self.tap = FeatureTap(student, [s_layer])

    def step(self, b: StepInput) -> dict[str, Tensor]:
        t_logits = self.run_teacher(b.x)
        (t_emb,) = self.teacher.features()
        logits = self.student(b.x)
        terms = self.logit_terms(logits, b.y, t_logits)
        terms["pkt"] = self.pkt_weight * pkt_loss(self.tap[self.student_layer], t_emb)
        return {**terms, "_logits": logits}

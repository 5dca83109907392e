"""Probabilistic knowledge transfer (Passalis & Tefas, 2018, "Learning Deep Representations with Probabilistic
Knowledge Transfer", arXiv:1803.10837)."""

from __future__ import annotations

from torch import Tensor, nn

from distill.distillers.base import StepInput, check_range, register_method
from distill.distillers.feature_base import FeatureDistiller
from distill.losses.relational import pkt_loss


@register_method("pkt")
class PKT(FeatureDistiller):
    """``ce_weight · CE + pkt_weight · KL(P_t ‖ P_s) [+ kd_weight · KD]``.

    ``P`` are the conditional probabilities of the cosine-similarity kernel between the penultimate embeddings of
    a batch; the embedding sizes need not match. ``pkt_weight = 30000`` is the CRD benchmark's setting (Tian et al.,
    2020, arXiv:1910.10699), which averages the KL over the ``B²`` entries.

    Args:
        student_layer / teacher_layer: module names of the embeddings (default: the models' ``penultimate``).
        pkt_weight: weight of the PKT term.
    """

    single_layer = True

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
        super().__init__(student, teacher, (student_layer, teacher_layer), **kw)
        self.pkt_weight = pkt_weight

    def feature_loss(self, s_feats: list[Tensor], t_feats: list[Tensor], b: StepInput) -> dict[str, Tensor]:
        (s_emb,), (t_emb,) = s_feats, t_feats
        return {"pkt": self.pkt_weight * pkt_loss(s_emb, t_emb)}

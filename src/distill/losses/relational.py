"""Relational losses: they compare how samples of a batch relate to each other, not the features themselves.

So the student's and the teacher's feature sizes may differ: every loss here builds a ``(B, B)`` (or
``(B, B, B)``) structure per network and compares those.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def _check_batch(student: Tensor, teacher: Tensor) -> None:
    if student.shape[0] != teacher.shape[0]:
        raise ValueError(f"batch sizes differ: student {student.shape[0]} vs teacher {teacher.shape[0]}")


def similarity_matrix(feat: Tensor) -> Tensor:
    """SP's batch similarity ``G = F·Fᵀ`` of the flattened features, rows L2-normalised: ``(B, ...) -> (B, B)``."""
    f = feat.flatten(1)
    return F.normalize(f @ f.t(), dim=1)


def sp_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """Similarity-preserving KD (Tung & Mori, 2019): ``‖G_s − G_t‖_F² / B²``."""
    _check_batch(student, teacher)
    b = student.shape[0]
    diff = similarity_matrix(student) - similarity_matrix(teacher.detach())
    return diff.pow(2).sum() / (b * b)


def pairwise_distances(emb: Tensor, eps: float = 1e-12) -> Tensor:
    """Euclidean distances between the rows of ``(B, D)`` -> ``(B, B)``, zero on the diagonal (gradient-safe)."""
    sq = emb.pow(2).sum(dim=1)
    d2 = (sq[:, None] + sq[None, :] - 2 * emb @ emb.t()).clamp(min=eps)
    d = d2.sqrt()
    return d * (1 - torch.eye(len(emb), device=emb.device, dtype=emb.dtype))


def _normalised_distances(emb: Tensor) -> Tensor:
    d = pairwise_distances(emb)
    b = len(emb)
    mean = d.sum() / max(1, b * (b - 1))  # mean over the pairs i ≠ j
    return d / mean.clamp(min=1e-12)


def rkd_distance_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """RKD distance-wise loss (Park et al., 2019): Huber loss between pairwise distances, each set divided by its
    mean over the pairs ``i ≠ j``; averaged over all ``B²`` entries (the diagonal contributes zero).
    """
    _check_batch(student, teacher)
    s = _normalised_distances(student.flatten(1))
    with torch.no_grad():
        t = _normalised_distances(teacher.flatten(1))
    return F.smooth_l1_loss(s, t, beta=1.0)


def triplet_cosines(emb: Tensor) -> Tensor:
    """``cos ∠(e_i − e_j, e_k − e_j)`` for every triplet ``(i, j, k)`` -> ``(B, B, B)`` indexed ``[j, i, k]``.

    A zero difference (``i = j`` or ``k = j``) gives cosine 0, in both networks alike.
    """
    diff = F.normalize(emb[None, :, :] - emb[:, None, :], dim=2)  # [j, i] = normalise(e_i − e_j)
    return diff @ diff.transpose(1, 2)


def rkd_angle_loss(student: Tensor, teacher: Tensor) -> Tensor:
    """RKD angle-wise loss (Park et al., 2019): Huber loss between the cosines of the angles formed by every
    triplet of embeddings, averaged over all ``B³`` triplets.
    """
    _check_batch(student, teacher)
    s = triplet_cosines(student.flatten(1))
    with torch.no_grad():
        t = triplet_cosines(teacher.flatten(1))
    return F.smooth_l1_loss(s, t, beta=1.0)


def cosine_conditional(feat: Tensor, eps: float = 1e-12) -> Tensor:
    """PKT's conditional probabilities: cosine similarities mapped to ``[0, 1]`` by ``(1 + cos) / 2``, each row
    divided by its sum (the diagonal included, as in the CRD benchmark). ``(B, D) -> (B, B)``.
    """
    f = F.normalize(feat.flatten(1), dim=1, eps=eps)
    k = (f @ f.t() + 1.0) / 2.0
    return k / k.sum(dim=1, keepdim=True)


def pkt_loss(student: Tensor, teacher: Tensor, eps: float = 1e-7) -> Tensor:
    """Probabilistic knowledge transfer (Passalis & Tefas, 2018): ``KL(P_t ‖ P_s)`` between the conditional
    distributions of the cosine kernel, as the mean over the ``B²`` entries of ``p_t · log((p_t + ε)/(p_s + ε))``.
    """
    _check_batch(student, teacher)
    p_s = cosine_conditional(student)
    p_t = cosine_conditional(teacher.detach())
    return (p_t * torch.log((p_t + eps) / (p_s + eps))).mean()


def taylor_rbf_correlation(emb: Tensor, gamma: float = 0.4, order: int = 2) -> Tensor:
    """CC's correlation matrix: the Gaussian RBF ``exp(−γ‖f_i − f_j‖²)`` on L2-normalised embeddings, expanded to
    ``order`` in its Taylor series: ``Σ_{p=0..P} e^{−2γ} (2γ)^p / p! · (f_i·f_j)^p``. ``(B, D) -> (B, B)``.

    For unit vectors ``‖f_i − f_j‖² = 2 − 2 f_i·f_j``, which gives the series above.
    """
    f = F.normalize(emb.flatten(1), dim=1)
    sim = f @ f.t()
    out = torch.zeros_like(sim)
    for p in range(order + 1):
        out = out + math.exp(-2 * gamma) * (2 * gamma) ** p / math.factorial(p) * sim.pow(p)
    return out


def cc_loss(student: Tensor, teacher: Tensor, gamma: float = 0.4, order: int = 2) -> Tensor:
    """Correlation congruence (Peng et al., 2019): ``‖C_s − C_t‖_F² / B²`` of the Taylor-RBF correlations."""
    _check_batch(student, teacher)
    b = student.shape[0]
    diff = taylor_rbf_correlation(student, gamma, order) - taylor_rbf_correlation(teacher.detach(), gamma, order)
    return diff.pow(2).sum() / (b * b)

"""Contrastive losses of CRD (Tian, Krishnan & Isola, 2020, "Contrastive Representation Distillation",
arXiv:1910.10699), as pure tensor functions: the NCE probability, its normaliser, the NCE loss, the memory-bank
update rule, and an in-batch InfoNCE for when no memory bank is available."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def contrast_scores(anchor: Tensor, candidates: Tensor, temperature: float) -> Tensor:
    """``exp(⟨c, a⟩ / τ)`` of each anchor with its candidates (positive first, then the negatives).

    ``anchor`` ``(B, D)``, ``candidates`` ``(B, K + 1, D)`` -> ``(B, K + 1)``. Both are expected L2-normalised.
    """
    return torch.exp(torch.bmm(candidates, anchor.unsqueeze(2)).squeeze(2) / temperature)


def bank_scores(anchor: Tensor, bank: Tensor, idx: Tensor, temperature: float) -> Tensor:
    """:func:`contrast_scores` of each anchor with the bank rows ``idx`` ``(B, K + 1)`` — the same values, computed
    without materialising the ``(B, K + 1, D)`` gathered rows when the bank is small enough: then it scores the
    whole bank ``(B, N)`` by one matrix product and picks the columns, which is much cheaper for ``N ≲ K·D``."""
    if bank.shape[0] <= idx.shape[1] * bank.shape[1]:
        return torch.exp(torch.gather(anchor @ bank.t(), 1, idx) / temperature)
    return contrast_scores(anchor, bank[idx], temperature)


def nce_normaliser(scores: Tensor, num_samples: int) -> Tensor:
    """The paper's constant ``Z``, estimated once as ``mean(exp(⟨c, a⟩/τ)) · N`` over the first batch's scores,
    so that ``scores / Z`` approximates a distribution over the ``N`` training samples."""
    return scores.detach().mean() * num_samples


def nce_loss(probs: Tensor, num_samples: int, eps: float = 1e-7) -> Tensor:
    """NCE with uniform noise ``P_n = 1/N`` and ``K`` noise samples per positive (eq. 10 of the paper).

    ``probs`` ``(B, K + 1)``: the (normalised) probabilities ``h``-scores, positive in column 0. The data term is
    ``log(P⁺ / (P⁺ + K·P_n))``, each noise term ``log(K·P_n / (P⁻ + K·P_n))``; the loss is their negated sum
    averaged over the batch.
    """
    k = probs.shape[1] - 1
    noise = k / num_samples  # K · P_n
    pos, neg = probs[:, 0], probs[:, 1:]
    log_d1 = torch.log(pos / (pos + noise + eps))
    log_d0 = torch.log(noise / (neg + noise + eps))
    return -(log_d1.sum() + log_d0.sum()) / probs.shape[0]


def memory_update(rows: Tensor, new: Tensor, momentum: float) -> Tensor:
    """The memory-bank rule: ``normalize(m · old + (1 − m) · new)`` per row (``(B, D)``); no gradient flows."""
    return F.normalize(momentum * rows.detach() + (1.0 - momentum) * new.detach().to(rows.dtype), dim=1)


def info_nce_loss(anchor: Tensor, positives: Tensor, temperature: float) -> Tensor:
    """In-batch InfoNCE: row ``i`` of ``positives`` is the positive of anchor ``i``, the other rows its negatives;
    ``-mean_i log softmax_j(⟨a_i, p_j⟩ / τ)_i``. ``(B, D)`` each, expected L2-normalised."""
    logits = anchor @ positives.t() / temperature  # (B, B)
    return F.cross_entropy(logits, torch.arange(len(anchor), device=anchor.device))

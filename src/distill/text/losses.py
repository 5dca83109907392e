"""Losses for text distillation: pure tensor functions, padding masks explicit.

* soft targets: Hinton et al. (2015), reused from :func:`distill.losses.kd_loss`;
* hidden states: TinyBERT (Jiao et al., 2020, arXiv:1909.10351), ``MSE(H_S W_h, H_T)`` with a learned ``W_h``;
* attention matrices: TinyBERT's ``(1/h) Σ_heads MSE(A_S, A_T)`` over the real tokens;
* attention maps: MiniLM (Wang et al., 2020, arXiv:2002.10957), ``KL(A_T ‖ A_S)`` between the attention
  distributions of every head and query position (so teacher and student may differ in hidden size);
* sentence embeddings: Reimers & Gurevych (2020, arXiv:2004.09813), MSE between student and teacher embeddings
  (or ``1 − cos``), on any text — labels are not needed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from distill.losses import kd_loss

__all__ = [
    "attention_kl_loss",
    "attention_mse_loss",
    "embedding_loss",
    "hidden_mse_loss",
    "kd_loss",
    "masked_cross_entropy",
]


def masked_cross_entropy(logits: Tensor, y: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy over the labelled samples only (``y < 0`` marks unlabeled text); 0 when none is labelled."""
    keep = y >= 0
    if not bool(keep.any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits[keep], y[keep], label_smoothing=label_smoothing)


def hidden_mse_loss(student: Tensor, teacher: Tensor, mask: Tensor | None = None) -> Tensor:
    """TinyBERT's hidden-state loss: mean squared error over the real tokens (the projection is applied by the
    caller, so this stays a pure function).

    Args:
        student: ``(B, T, D)`` student hidden states, already projected to the teacher's width.
        teacher: ``(B, T, D)`` teacher hidden states (a target: no gradient).
        mask: ``(B, T)`` 1 for real tokens; padding positions are left out of the mean.
    """
    diff = (student.float() - teacher.detach().float()) ** 2  # (B, T, D)
    if mask is None:
        return diff.mean()
    m = mask.to(diff.dtype).unsqueeze(-1)
    return (diff * m).sum() / (m.sum() * diff.shape[-1]).clamp_min(1.0)


def attention_kl_loss(student: Tensor, teacher: Tensor, mask: Tensor | None = None, eps: float = 1e-12) -> Tensor:
    """MiniLM's self-attention distribution transfer: ``KL(A_T ‖ A_S)`` per head and query, averaged.

    Args:
        student: ``(B, H, T, T)`` attention probabilities of one student layer (rows sum to 1).
        teacher: ``(B, H, T, T)`` the teacher's, same number of heads.
        mask: ``(B, T)`` 1 for real tokens: padded *queries* are left out (padded keys already get ~0 weight).
    """
    if student.shape != teacher.shape:
        raise ValueError(f"attention maps differ in shape: student {tuple(student.shape)} vs {tuple(teacher.shape)}")
    t = teacher.detach().float()
    s = student.float()
    kl = (t * (torch.log(t.clamp_min(eps)) - torch.log(s.clamp_min(eps)))).sum(-1)  # (B, H, T)
    if mask is None:
        return kl.mean()
    m = mask.to(kl.dtype).unsqueeze(1).expand_as(kl)
    return (kl * m).sum() / m.sum().clamp_min(1.0)


def attention_mse_loss(student: Tensor, teacher: Tensor, mask: Tensor | None = None) -> Tensor:
    """TinyBERT's attention loss (Jiao et al., 2020, eq. 7): the mean squared difference of the attention matrices,
    averaged over heads. HF models expose the matrices after the softmax (the paper's ``A``), so that is what is
    compared; ``(B, H, T, T)`` each.

    With ``mask`` ``(B, T)`` the mean runs over real (query, key) pairs only: a text of ``n`` tokens contributes
    ``H · n²`` squared differences, padding none.
    """
    if student.shape != teacher.shape:
        raise ValueError(f"attention maps differ in shape: student {tuple(student.shape)} vs {tuple(teacher.shape)}")
    diff = (student.float() - teacher.detach().float()) ** 2  # (B, H, T, T)
    if mask is None:
        return diff.mean()
    m = mask.to(diff.dtype)
    pairs = (m[:, :, None] * m[:, None, :]).unsqueeze(1)  # (B, 1, T, T): 1 where query and key are real tokens
    return (diff * pairs).sum() / (pairs.sum() * diff.shape[1]).clamp_min(1.0)


def embedding_loss(student: Tensor, teacher: Tensor, kind: str = "mse") -> Tensor:
    """Distance of student sentence embeddings ``(B, D)`` to the teacher's: ``"mse"`` (mean over the batch and
    dimensions, as sentence-transformers' MSELoss) or ``"cosine"`` (mean ``1 − cos``)."""
    t = teacher.detach().float()
    s = student.float()
    if kind == "mse":
        return F.mse_loss(s, t)
    if kind == "cosine":
        return (1.0 - F.cosine_similarity(s, t, dim=-1)).mean()
    raise ValueError(f"unknown embedding loss {kind!r}; expected 'mse' or 'cosine'")

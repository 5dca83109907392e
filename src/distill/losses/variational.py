"""Losses on learned encodings of features: VID's Gaussian likelihood and Factor Transfer's factor distance."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def vid_nll(mean: Tensor, target: Tensor, variance: Tensor) -> Tensor:
    """Variational Information Distillation (Ahn et al., 2019, arXiv:1904.05835): the Gaussian negative
    log-likelihood of the teacher feature ``target`` under ``N(mean, variance)``, up to the constant ½·log 2π.

    ``mean`` is the student's regressed feature, ``target`` the teacher's (detached), ``variance`` positive and
    either broadcastable to ``target`` or a per-channel vector ``(C,)`` for ``(B, C, ...)`` features. Returns the
    mean over all elements of ``½ · (log σ² + (t − μ)² / σ²)``.
    """
    if mean.shape != target.shape:
        raise ValueError(f"VID shapes differ: mean {tuple(mean.shape)} vs target {tuple(target.shape)}")
    if variance.dim() == 1 and target.dim() > 2:
        variance = variance.view(1, -1, *([1] * (target.dim() - 2)))  # (C,) -> (1, C, 1, 1)
    nll = 0.5 * (variance.log() + (target.detach() - mean) ** 2 / variance)  # broadcast to target's shape
    return nll.mean()


def factor(x: Tensor, eps: float = 1e-12) -> Tensor:
    """A factor of Factor Transfer: the flattened code, L2-normalised per sample. ``(B, ...) -> (B, D)``."""
    return F.normalize(x.flatten(1), dim=1, eps=eps)


def factor_transfer_loss(student_code: Tensor, teacher_code: Tensor, p: int = 1, reduction: str = "mean") -> Tensor:
    """Factor Transfer (Kim, Park & Kwak, 2018, arXiv:1802.04977): distance between the normalised factors
    ``F_t/‖F_t‖₂`` and ``F_s/‖F_s‖₂`` (student = translator output, teacher = paraphraser code).

    ``reduction="norm"`` is the paper's ``‖F_t/‖F_t‖ − F_s/‖F_s‖‖_p`` averaged over the batch. ``"mean"`` (the
    default) is the mean over elements of ``|Δ|^p`` — for ``p = 1`` the norm divided by the factor size ``D`` —,
    the form the CRD benchmark uses and for which its weight β = 200 was tuned.
    """
    if student_code.shape != teacher_code.shape:
        raise ValueError(
            f"factor shapes differ: student {tuple(student_code.shape)} vs teacher {tuple(teacher_code.shape)}"
        )
    if p not in (1, 2):
        raise ValueError(f"p must be 1 or 2, got {p}")
    diff = factor(teacher_code.detach()) - factor(student_code)  # (B, D)
    if reduction == "mean":
        return diff.abs().pow(p).mean()
    if reduction == "norm":
        return diff.norm(p=p, dim=1).mean()
    raise ValueError(f"reduction must be 'mean' or 'norm', got {reduction!r}")

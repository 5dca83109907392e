"""Logit-based distillation losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def kd_loss(student: Tensor, teacher: Tensor, temperature: float = 4.0) -> Tensor:
    """Hinton et al. (2015): ``T² · KL(softmax(t/T) ‖ softmax(s/T))``, averaged over the batch.

    The T² factor keeps the gradient's magnitude independent of ``T`` (the soft gradients scale as 1/T²), so the
    mix with the hard-label loss means the same thing at every temperature. ``batchmean``: the KL is summed over
    classes and averaged over samples, which is the true KL per sample (``mean`` would also divide by classes).

    Args:
        student: ``(B, K)`` student logits.
        teacher: ``(B, K)`` teacher logits (a target: no gradient flows into it).
        temperature: softening temperature ``T > 0``.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    dtype = torch.promote_types(student.dtype, torch.float32)  # bf16/fp16 logits are softened in float32
    log_p_s = F.log_softmax(student.to(dtype) / temperature, dim=1)
    log_p_t = F.log_softmax(teacher.detach().to(dtype) / temperature, dim=1)
    kl = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    return kl * temperature**2


def soft_cross_entropy(student: Tensor, target_probs: Tensor) -> Tensor:
    """Cross-entropy against a probability target ``(B, K)``, averaged over the batch."""
    return -(target_probs.detach() * F.log_softmax(student, dim=1)).sum(dim=1).mean()


def pseudo_label_loss(student: Tensor, teacher: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy to the teacher's argmax ("hard" distillation, also on unlabeled data)."""
    return F.cross_entropy(student, teacher.detach().argmax(dim=1), label_smoothing=label_smoothing)

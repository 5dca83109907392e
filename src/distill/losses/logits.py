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


# -- decoupled KD (DKD) -------------------------------------------------------------------------------------------


def _log_probs(logits: Tensor, temperature: float) -> Tensor:
    """``log_softmax(z / T)`` in at least float32."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return F.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)) / temperature, dim=1)


def _binary_log_probs(logits: Tensor, target: Tensor, temperature: float) -> Tensor:
    """``log [p_target, 1 − p_target]`` at temperature ``T``, ``(B, 2)``, computed without cancellation."""
    z = logits.to(torch.promote_types(logits.dtype, torch.float32)) / temperature
    mask = F.one_hot(target, z.shape[1]).bool()
    log_all = torch.logsumexp(z, dim=1)
    log_target = z.gather(1, target[:, None]).squeeze(1) - log_all
    log_rest = torch.logsumexp(z.masked_fill(mask, float("-inf")), dim=1) - log_all
    return torch.stack([log_target, log_rest], dim=1)


def _non_target(logits: Tensor, target: Tensor) -> Tensor:
    """The logits of the non-target classes, ``(B, K) -> (B, K − 1)`` (class order kept)."""
    keep = ~F.one_hot(target, logits.shape[1]).bool()
    return logits[keep].view(logits.shape[0], logits.shape[1] - 1)


def tckd_loss(student: Tensor, teacher: Tensor, target: Tensor, temperature: float = 4.0) -> Tensor:
    """Target-class KD of DKD (Zhao et al., 2022): ``T² · KL(b_t ‖ b_s)`` with ``b = [p_target, 1 − p_target]``.

    Args:
        student / teacher: ``(B, K)`` logits; target: ``(B,)`` class indices.
    """
    log_b_s = _binary_log_probs(student, target, temperature)
    log_b_t = _binary_log_probs(teacher.detach(), target, temperature)
    return F.kl_div(log_b_s, log_b_t, reduction="batchmean", log_target=True) * temperature**2


def nckd_loss(student: Tensor, teacher: Tensor, target: Tensor, temperature: float = 4.0) -> Tensor:
    """Non-target-class KD of DKD: ``T² · KL(p̂_t ‖ p̂_s)``, ``p̂`` the softmax over the K − 1 non-target classes."""
    log_p_s = _log_probs(_non_target(student, target), temperature)
    log_p_t = _log_probs(_non_target(teacher.detach(), target), temperature)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * temperature**2


def dkd_loss(
    student: Tensor, teacher: Tensor, target: Tensor, alpha: float = 1.0, beta: float = 8.0, temperature: float = 4.0
) -> Tensor:
    """Decoupled KD (Zhao et al., CVPR 2022, arXiv:2203.08679): ``α · TCKD + β · NCKD``, both with T² inside.

    Classical KD is ``TCKD + (1 − p_target^t) · NCKD`` per sample; DKD frees NCKD from the teacher's confidence.
    """
    return alpha * tckd_loss(student, teacher, target, temperature) + beta * nckd_loss(
        student, teacher, target, temperature
    )


# -- DIST -----------------------------------------------------------------------------------------------------------


def pearson_distance(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """``1 − ρ(a_i, b_i)`` averaged over the rows of two ``(N, D)`` tensors (ρ: Pearson correlation)."""
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    rho = (a * b).sum(dim=1) / (a.norm(dim=1) * b.norm(dim=1) + eps)
    return 1.0 - rho.mean()


def dist_loss(
    student: Tensor, teacher: Tensor, beta: float = 1.0, gamma: float = 1.0, temperature: float = 4.0
) -> Tensor:
    """DIST (Huang et al., NeurIPS 2022, arXiv:2205.10536): ``T² · (β · inter + γ · intra)``.

    ``inter``: ``1 − ρ`` between the student's and the teacher's class-probability vectors of each sample,
    averaged over the batch; ``intra``: ``1 − ρ`` between the columns (one class's probabilities across the
    batch), averaged over the classes. Probabilities are ``softmax(z / T)``. Pearson's ρ is invariant to positive
    affine maps, so a student whose probabilities are ``a · p_t + (1 − a)/K`` (a > 0) has zero loss: the relation
    is matched, not the exact values.
    """
    p_s = _log_probs(student, temperature).exp()
    p_t = _log_probs(teacher.detach(), temperature).exp()
    inter = pearson_distance(p_s, p_t)
    intra = pearson_distance(p_s.t(), p_t.t())
    return temperature**2 * (beta * inter + gamma * intra)


# -- logit standardisation ------------------------------------------------------------------------------------------


def zscore(logits: Tensor, eps: float = 1e-7) -> Tensor:
    """Each row minus its mean, over its standard deviation (the sample std, N − 1, as in the authors' code)."""
    z = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return (z - z.mean(dim=1, keepdim=True)) / (z.std(dim=1, keepdim=True) + eps)


def lskd_loss(student: Tensor, teacher: Tensor, temperature: float = 2.0) -> Tensor:
    """Logit-standardised KD (Sun et al., CVPR 2024, arXiv:2403.01427): :func:`kd_loss` of the z-scored logits.

    ``T² · KL(softmax(zscore(t)/T) ‖ softmax(zscore(s)/T))``; the T² factor is kept, as in the authors' code.
    The student is thereby free to choose the scale and offset of its logits; only their relations are matched.
    """
    return kd_loss(zscore(student), zscore(teacher.detach()), temperature)


# -- several teachers ---------------------------------------------------------------------------------------------


def multi_teacher_kd_loss(
    student: Tensor,
    teacher_logits: Tensor | list[Tensor] | tuple[Tensor, ...],
    weights: list[float] | tuple[float, ...],
    temperatures: list[float] | tuple[float, ...],
    mode: str = "sum",
) -> Tensor:
    """KD from N teachers (Hinton et al., 2015, arXiv:1503.02531, §"ensembles").

    ``mode="sum"``: ``Σ_i w_i · T_i² · KL(softmax(t_i/T_i) ‖ softmax(s/T_i))`` with the weights as given.
    ``mode="average"``: ``T² · KL(q ‖ softmax(s/T))`` with ``q = Σ_i w_i softmax(t_i/T) / Σ_i w_i``, the weighted
    ensemble's soft targets; it needs one common temperature.

    Args:
        student: ``(B, K)`` logits.
        teacher_logits: ``(N, B, K)`` or a sequence of N ``(B, K)`` tensors.
        weights / temperatures: N values each.
    """
    t = torch.stack(list(teacher_logits)) if isinstance(teacher_logits, (list, tuple)) else teacher_logits
    n = t.shape[0]
    if len(weights) != n or len(temperatures) != n:
        raise ValueError(f"{n} teachers but {len(weights)} weights and {len(temperatures)} temperatures")
    if any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights must be >= 0 with a positive sum, got {list(weights)}")
    t = t.detach()
    if mode == "sum":
        return sum(w * kd_loss(student, t_i, temp) for t_i, w, temp in zip(t, weights, temperatures, strict=True))
    if mode != "average":
        raise ValueError(f"mode must be 'sum' or 'average', got {mode!r}")
    if len(set(temperatures)) != 1:
        raise ValueError(f"mode='average' needs one temperature for all teachers, got {list(temperatures)}")
    temp = temperatures[0]
    log_p_t = torch.stack([_log_probs(t[i], temp) for i in range(n)])  # (N, B, K)
    w = torch.tensor([v / sum(weights) for v in weights], dtype=log_p_t.dtype, device=log_p_t.device)
    log_q = torch.logsumexp(log_p_t + w.log()[:, None, None], dim=0)  # (B, K), log of the weighted mixture
    log_p_s = _log_probs(student, temp)
    return F.kl_div(log_p_s, log_q, reduction="batchmean", log_target=True) * temp**2

"""ReviewKD's hierarchical context loss (Chen, Liu, Zhao & Jia, 2021, "Distilling Knowledge via Knowledge
Review", arXiv:2104.09044)."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor


def hcl_loss(student_feat: Tensor, teacher_feat: Tensor, levels: Sequence[int] = (4, 2, 1)) -> Tensor:
    """HCL of one stage: MSE on the full ``(B, C, H, W)`` maps and on their average-pooled ``l × l`` pyramids.

    The full map has weight 1 and each next level half the previous one (1, ½, ¼, ⅛ for levels 4, 2, 1); levels
    not smaller than the map (``l >= H``) add nothing new and are skipped. The sum is divided by the total weight
    of the terms used.
    """
    if student_feat.shape != teacher_feat.shape:
        raise ValueError(
            f"HCL shapes differ: student {tuple(student_feat.shape)} vs teacher {tuple(teacher_feat.shape)}"
        )
    t = teacher_feat.detach()
    loss = F.mse_loss(student_feat, t)
    weight, total = 1.0, 1.0
    for level in levels:
        if level >= student_feat.shape[2]:
            continue
        weight /= 2.0
        loss = loss + weight * F.mse_loss(F.adaptive_avg_pool2d(student_feat, level), F.adaptive_avg_pool2d(t, level))
        total += weight
    return loss / total


def hcl_sum(
    student_feats: Sequence[Tensor], teacher_feats: Sequence[Tensor], levels: Sequence[int] = (4, 2, 1)
) -> Tensor:
    """HCL summed over stages (the paper's total distillation loss before its weight)."""
    if len(student_feats) != len(teacher_feats):
        raise ValueError(f"{len(student_feats)} student stages vs {len(teacher_feats)} teacher stages")
    return sum(hcl_loss(s, t, levels) for s, t in zip(student_feats, teacher_feats, strict=True))

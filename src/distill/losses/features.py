"""Feature-based distillation losses."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def hint_loss(student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
    """FitNets (Romero et al., 2015): mean squared error between the (adapted) student hint and the teacher's.

    Averaged over every element, as in common implementations; the paper's ½·‖·‖² differs only by a constant
    that the method's weight absorbs.
    """
    if student_feat.shape != teacher_feat.shape:
        raise ValueError(
            f"hint shapes differ: student {tuple(student_feat.shape)} vs teacher {tuple(teacher_feat.shape)}"
        )
    return F.mse_loss(student_feat, teacher_feat.detach())

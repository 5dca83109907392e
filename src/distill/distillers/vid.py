"""Variational Information Distillation (Ahn, Hu, Damianou, Lawrence & Dai, CVPR 2019, "Variational Information
Distillation for Knowledge Transfer", arXiv:1904.05835)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.distillers.base import StepInput, check_range, register_method
from distill.distillers.feature_base import FeatureDistiller
from distill.errors import ConfigError
from distill.losses.variational import vid_nll


class VIDRegressor(nn.Module):
    """The mean ``μ(s)``: three 1×1 convolutions (ReLU between) from the student's channels to the teacher's, and a
    learnable per-channel variance ``σ² = softplus(α) + eps`` (initialised to ``init_variance``)."""

    def __init__(self, s_channels: int, t_channels: int, init_variance: float = 5.0, eps: float = 1e-5) -> None:
        super().__init__()
        mid = t_channels
        self.mean = nn.Sequential(
            nn.Conv2d(s_channels, mid, 1, bias=False),
            nn.ReLU(),
            nn.Conv2d(mid, mid, 1, bias=False),
            nn.ReLU(),
            nn.Conv2d(mid, t_channels, 1, bias=False),
        )
        self.eps = eps
        alpha = math.log(math.expm1(init_variance - eps))  # softplus⁻¹
        self.alpha = nn.Parameter(torch.full((t_channels,), alpha))

    def variance(self) -> Tensor:
        return F.softplus(self.alpha) + self.eps  # (C,)

    def forward(self, s: Tensor) -> Tensor:
        return self.mean(s)


def _as_map(x: Tensor) -> Tensor:
    return x[:, :, None, None] if x.dim() == 2 else x  # (B, C) -> (B, C, 1, 1)


def _match_size(s: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
    """Average-pool the larger of two maps to the smaller one's spatial size."""
    if s.shape[2:] == t.shape[2:]:
        return s, t
    if s.shape[2] * s.shape[3] > t.shape[2] * t.shape[3]:
        return F.adaptive_avg_pool2d(s, t.shape[2:]), t
    return s, F.adaptive_avg_pool2d(t, s.shape[2:])


@register_method("vid")
class VID(FeatureDistiller):
    """``ce_weight · CE + vid_weight · Σ_pairs NLL(t | μ(s), σ²) [+ kd_weight · KD]``.

    Maximises a variational lower bound on the mutual information between teacher and student features: for each
    layer pair the teacher feature is modelled as a Gaussian with mean regressed from the student feature and a
    learned per-channel variance, and its negative log-likelihood (without the constant) is minimised. Regressors
    and variances are method state: they train with the student, are saved in checkpoints and are not exported.

    Args:
        student_layers / teacher_layers: the layer pairs (default: every ``feature_layers`` stage of each model;
            when the counts differ, the last stages of the longer list). 2-D features are treated as 1×1 maps.
        vid_weight: β, the weight of the summed NLL (1, as in the CRD benchmark).
        init_variance: initial σ² of every channel (5.0, as in the reference setting).
        eps: floor added to the variance.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        *,
        student_layers: Sequence[str] | None = None,
        teacher_layers: Sequence[str] | None = None,
        vid_weight: float = 1.0,
        init_variance: float = 5.0,
        eps: float = 1e-5,
        input_shape=None,
        **kw,
    ) -> None:
        check_range("vid_weight", vid_weight, lo=0.0)
        check_range("eps", eps, lo=0.0, lo_open=True)
        check_range("init_variance", init_variance, lo=eps, lo_open=True)
        if input_shape is None:
            raise ConfigError("vid needs input_shape to size its regressors")
        super().__init__(student, teacher, (student_layers, teacher_layers), probe=True, input_shape=input_shape, **kw)
        self.vid_weight = vid_weight
        self.regressors = nn.ModuleList(
            VIDRegressor(s[0], t[0], init_variance, eps)
            for s, t in zip(self.student_shapes, self.teacher_shapes, strict=True)
        )

    def feature_loss(self, s_feats: list[Tensor], t_feats: list[Tensor], b: StepInput) -> dict[str, Tensor]:
        loss: Tensor | float = 0.0
        for reg, s, t in zip(self.regressors, s_feats, t_feats, strict=True):
            s, t = _match_size(_as_map(s), _as_map(t))
            loss = loss + vid_nll(reg(s), t, reg.variance())
        return {"vid": self.vid_weight * loss}

"""Knowledge review (Chen, Liu, Zhao & Jia, CVPR 2021, "Distilling Knowledge via Knowledge Review",
arXiv:2104.09044)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.distillers.base import StepInput, check_range, register_method
from distill.distillers.feature_base import FeatureDistiller, Shape, stage_layers
from distill.errors import ConfigError
from distill.losses.review import hcl_loss
from distill.models.adapters import tap_names


class ABF(nn.Module):
    """Attention-based fusion: project a student stage to ``mid`` channels (1×1 conv + BN), fuse it with the
    residual from the deeper stage (upsampled, mixed by two sigmoid attention maps), resize to the teacher's
    spatial size, and map to the teacher's channels (3×3 conv + BN). Returns ``(output, residual)``."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, fuse: bool) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, mid_channels, 1, bias=False), nn.BatchNorm2d(mid_channels))
        self.conv2 = nn.Sequential(
            nn.Conv2d(mid_channels, out_channels, 3, padding=1, bias=False), nn.BatchNorm2d(out_channels)
        )
        self.att = nn.Sequential(nn.Conv2d(2 * mid_channels, 2, 1), nn.Sigmoid()) if fuse else None

    def forward(self, x: Tensor, residual: Tensor | None, out_size: Sequence[int]) -> tuple[Tensor, Tensor]:
        x = self.conv1(x)  # (B, mid, h, w)
        if self.att is not None:
            assert residual is not None
            residual = F.interpolate(residual, size=x.shape[2:], mode="nearest")
            z = self.att(torch.cat([x, residual], dim=1))  # (B, 2, h, w)
            x = x * z[:, :1] + residual * z[:, 1:]
        if tuple(x.shape[2:]) != tuple(out_size):
            x = F.interpolate(x, size=tuple(out_size), mode="nearest")
        return self.conv2(x), x


def _as_map(x: Tensor) -> Tensor:
    return x[:, :, None, None] if x.dim() == 2 else x  # (B, C) -> (B, C, 1, 1)


def _stages(model: nn.Module, what: str) -> list[str]:
    """``feature_layers`` followed by ``penultimate`` (the pooled feature, used as a 1×1 map)."""
    layers = stage_layers(model, what)
    pen = tap_names(model).penultimate
    return [*layers, pen] if pen and pen not in layers else layers


@register_method("reviewkd")
class ReviewKD(FeatureDistiller):
    """``ce_weight · CE + w(epoch) · review_weight · Σ_stages HCL(ABF-review_i, t_i) [+ kd_weight · KD]``.

    The student's stages are reviewed from the deepest to the shallowest: each ABF fuses its stage with the
    residual of the deeper one, so stage ``i``'s output sees every deeper stage; each output is compared with the
    teacher's stage ``i`` by the hierarchical context loss (:func:`~distill.losses.review.hcl_loss`). The stages
    are each model's ``feature_layers`` plus its ``penultimate`` feature as a 1×1 map (aligned from the deepest
    when the counts differ).

    The distillation weight is warmed up linearly, ``w = min(1, (epoch + 1) / W)``, with
    ``W = min(warmup_epochs, epochs / 12)`` — the paper's 20 of 240 epochs, scaled down on short runs; outside the
    trainer (no :meth:`set_epoch`) ``w = 1``. ``mid_channels`` (256) is capped at the channel count of the
    student's deepest stage, so tiny students get fusion modules of their own size (as the reference code caps it).

    Args:
        student_layers / teacher_layers: explicit stage lists, shallowest first.
        review_weight: weight of the summed HCL (1.0).
        warmup_epochs: epochs of linear warm-up (20, the paper's), capped at ``epochs / 12``.
        mid_channels: channels inside the fusion modules (256, capped as above).
        levels: pooled pyramid sizes of the HCL (4, 2, 1).
    """

    default_stages = staticmethod(_stages)

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        *,
        student_layers: Sequence[str] | None = None,
        teacher_layers: Sequence[str] | None = None,
        review_weight: float = 1.0,
        warmup_epochs: float = 20.0,
        mid_channels: int = 256,
        levels: Sequence[int] = (4, 2, 1),
        input_shape=None,
        **kw,
    ) -> None:
        check_range("review_weight", review_weight, lo=0.0)
        check_range("warmup_epochs", warmup_epochs, lo=0.0)
        check_range("mid_channels", mid_channels, lo=1)
        for level in levels:
            check_range("levels", level, lo=1)
        if input_shape is None:
            raise ConfigError("reviewkd needs input_shape to size its fusion modules")
        layers = (student_layers, teacher_layers)
        super().__init__(student, teacher, layers, probe=True, input_shape=input_shape, **kw)
        s_shapes = [_map_shape(s) for s in self.student_shapes]
        t_shapes = [_map_shape(t) for t in self.teacher_shapes]
        self.review_weight, self.warmup_epochs, self.levels = review_weight, warmup_epochs, tuple(levels)
        self.mid_channels = min(mid_channels, s_shapes[-1][0])
        # deepest first: the deepest ABF has nothing to fuse
        self.abfs = nn.ModuleList(
            ABF(s[0], self.mid_channels, t[0], fuse=i > 0)
            for i, (s, t) in enumerate(zip(reversed(s_shapes), reversed(t_shapes), strict=True))
        )

    def check_shapes(self, student_shapes: dict[str, Shape], teacher_shapes: dict[str, Shape]) -> None:
        for shape in (*student_shapes.values(), *teacher_shapes.values()):
            _map_shape(shape)

    def warmup_factor(self) -> float:
        """``min(1, (epoch + 1) / W)``; 1 without a schedule."""
        if not hasattr(self, "epochs") or self.warmup_epochs == 0:
            return 1.0
        warm = min(self.warmup_epochs, self.epochs / 12)
        return 1.0 if warm <= 0 else min(1.0, (self.epoch + 1) / warm)

    def review(self, student_feats: Sequence[Tensor], teacher_feats: Sequence[Tensor]) -> list[Tensor]:
        """ABF outputs for the student stages, deepest first, each at its teacher stage's size."""
        outs, residual = [], None
        for abf, s, t in zip(self.abfs, reversed(student_feats), reversed(teacher_feats), strict=True):
            out, residual = abf(_as_map(s), residual, t.shape[2:] if t.dim() == 4 else (1, 1))
            outs.append(out)
        return outs

    def feature_loss(self, s_feats: list[Tensor], t_feats: list[Tensor], b: StepInput) -> dict[str, Tensor]:
        outs = self.review(s_feats, t_feats)
        hcl = sum(hcl_loss(o, _as_map(t), self.levels) for o, t in zip(outs, reversed(t_feats), strict=True))
        return {"review": self.warmup_factor() * self.review_weight * hcl}


def _map_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    if len(shape) == 1:
        return (shape[0], 1, 1)
    if len(shape) != 3:
        raise ConfigError(f"reviewkd needs (C, H, W) maps or (C,) vectors, got a feature of shape {shape}")
    return shape

"""Batched tensor augmentation: random crop with padding, horizontal flip, normalisation.

Augmentation is split into *sampling* parameters (:func:`sample_views`) and *applying* them (:func:`apply_views`),
so a view can be recorded and replayed exactly — the teacher-output cache relies on that. Everything works on a
whole ``(B, C, H, W)`` uint8 batch at once; there is no per-sample Python work.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class AugmentSpec:
    """What augmentation a dataset gets. ``crop_padding=0`` and ``hflip=False`` mean none."""

    crop_padding: int = 0
    hflip: bool = False

    @property
    def enabled(self) -> bool:
        return self.crop_padding > 0 or self.hflip


@dataclass
class Views:
    """Per-sample augmentation parameters of one batch: crop offsets in ``[0, 2p]`` and flip flags."""

    dy: Tensor  # (B,) int64
    dx: Tensor  # (B,) int64
    flip: Tensor  # (B,) bool


def sample_views(n: int, spec: AugmentSpec, generator: torch.Generator | None = None) -> Views:
    p = spec.crop_padding
    dy = torch.randint(0, 2 * p + 1, (n,), generator=generator) if p else torch.full((n,), 0, dtype=torch.int64)
    dx = torch.randint(0, 2 * p + 1, (n,), generator=generator) if p else torch.full((n,), 0, dtype=torch.int64)
    flip = torch.rand(n, generator=generator) < 0.5 if spec.hflip else torch.zeros(n, dtype=torch.bool)
    return Views(dy, dx, flip)


def identity_views(n: int, spec: AugmentSpec) -> Views:
    """The un-augmented view (centre crop, no flip)."""
    p = spec.crop_padding
    return Views(
        torch.full((n,), p, dtype=torch.int64), torch.full((n,), p, dtype=torch.int64), torch.zeros(n, dtype=torch.bool)
    )


def apply_views(x: Tensor, views: Views, spec: AugmentSpec) -> Tensor:
    """Crop and flip a uint8 batch ``(B, C, H, W)`` as ``views`` says; returns the same shape and dtype."""
    b, _, h, w = x.shape
    p = spec.crop_padding
    if p:
        xp = F.pad(x, (p, p, p, p))  # zero padding, (B, C, H+2p, W+2p)
        rows = views.dy.to(x.device)[:, None] + torch.arange(h, device=x.device)[None, :]  # (B, H)
        cols = views.dx.to(x.device)[:, None] + torch.arange(w, device=x.device)[None, :]  # (B, W)
        cols = torch.where(views.flip.to(x.device)[:, None], cols.flip(1), cols)  # a flip reverses the column order
        bi = torch.arange(b, device=x.device)[:, None, None]
        x = xp.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    elif spec.hflip:
        flip = views.flip.to(x.device)[:, None, None, None]
        x = torch.where(flip, x.flip(3), x)
    return x.contiguous()


def normalize(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """uint8 ``(B, C, H, W)`` -> float32 standardised with per-channel ``mean``/``std`` (shape ``(C,)``)."""
    return (x.float().div_(255.0) - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)

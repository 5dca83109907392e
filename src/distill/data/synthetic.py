"""A seeded, learnable toy image dataset for tests and smoke runs (no files, no network).

Every class has its own smooth random prototype (a 4x4 random grid bilinearly upsampled and stretched to [0, 1]); a
sample is its class prototype plus Gaussian pixel noise. With the default noise a tiny CNN separates the classes
within a few dozen steps, and the same seed always yields the same tensors.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from distill.data.base import ImageData, register_dataset
from distill.errors import ConfigError

MAX_PIXELS = 2**30


@register_dataset("synthetic")
def synthetic(
    root: str | None = None,
    download: bool = False,
    n_train: int = 512,
    n_test: int = 256,
    num_classes: int = 4,
    channels: int = 1,
    size: int = 28,
    seed: int = 0,
    noise: float = 0.2,
    **kw: Any,
) -> ImageData:
    """Class prototypes plus noise: ``n_train``/``n_test`` uint8 images ``(channels, size, size)``, balanced labels."""
    if kw:
        raise ConfigError(
            f"synthetic: unknown option(s) {', '.join(sorted(kw))}; "
            "accepted: n_train, n_test, num_classes, channels, size, seed, noise"
        )
    for key, value in (("n_train", n_train), ("num_classes", num_classes), ("channels", channels), ("size", size)):
        if value < 1:
            raise ConfigError(f"synthetic: {key} must be >= 1, got {value}")
    if n_test < 0 or noise < 0:
        raise ConfigError(f"synthetic: n_test and noise must be >= 0, got {n_test} and {noise}")
    pixels = (n_train + n_test) * channels * size * size
    if pixels > MAX_PIXELS:  # a toy dataset held in memory (as float while drawn): refuse before allocating
        raise ConfigError(
            f"synthetic: (n_train + n_test) x channels x size^2 = {pixels:.3g} pixels is beyond the {MAX_PIXELS:.3g} "
            "a toy dataset may take; use smaller values"
        )
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(num_classes, channels, 4, 4, generator=g)
    protos = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)  # (K, C, S, S), smooth
    lo = protos.amin(dim=(1, 2, 3), keepdim=True)
    hi = protos.amax(dim=(1, 2, 3), keepdim=True)
    protos = (protos - lo) / (hi - lo).clamp_min(1e-6)  # full contrast for every class

    def sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = (torch.arange(n) % num_classes)[torch.randperm(n, generator=g)]  # balanced, shuffled
        x = protos[y] + noise * torch.randn(n, channels, size, size, generator=g)
        return x.clamp(0, 1).mul(255).round().to(torch.uint8), y.long()

    x_train, y_train = sample(n_train)
    x_test, y_test = sample(n_test)
    scaled = x_train.float().div(255)
    mean = tuple(round(float(v), 4) for v in scaled.mean(dim=(0, 2, 3)))
    std = tuple(round(max(float(v), 1e-4), 4) for v in scaled.std(dim=(0, 2, 3), correction=0))
    return ImageData(
        "synthetic",
        x_train,
        y_train,
        x_test,
        y_test,
        classes=[f"class{k}" for k in range(num_classes)],
        mean=mean,
        std=std,
        hflip=False,
        crop_padding=2,
        meta={"seed": seed, "noise": noise},
    )

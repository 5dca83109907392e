"""The in-memory dataset every source produces, and the dataset registry.

Images are held as uint8 tensors ``(N, C, H, W)`` and labels as int64 ``(N,)``; normalisation and augmentation
happen later on whole batches (:mod:`distill.data.augment`). A source is a function registered in ``DATASETS``:
``load(root: str | None = None, download: bool = False, **kw) -> ImageData``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from distill.errors import DataError
from distill.registry import Registry


@dataclass
class ImageData:
    """A labelled image dataset with its official train/test split, all in memory."""

    name: str
    x_train: Tensor  # (N, C, H, W) uint8
    y_train: Tensor  # (N,) int64
    x_test: Tensor
    y_test: Tensor
    classes: list[str]
    mean: tuple[float, ...]  # per channel, on the [0, 1] scale
    std: tuple[float, ...]
    hflip: bool = False  # whether a horizontal flip keeps the label
    crop_padding: int = 0  # pixels of padding for the random-crop augmentation (0: none)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for part, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if x.dtype != torch.uint8 or x.dim() != 4:
                raise DataError(
                    f"{self.name}: {part} images must be uint8 (N, C, H, W), got {x.dtype} {tuple(x.shape)}"
                )
            if y.dtype != torch.int64 or y.dim() != 1 or len(y) != len(x):
                raise DataError(f"{self.name}: {part} labels must be int64 (N,) matching the images")
        if len(self.x_train) == 0:
            raise DataError(f"{self.name}: the training split is empty")
        if len(self.mean) != self.in_channels or len(self.std) != self.in_channels:
            raise DataError(f"{self.name}: mean/std need one value per channel ({self.in_channels})")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.x_train.shape[2]), int(self.x_train.shape[3])

    def fingerprint(self) -> str:
        """sha256 over every image and label: identifies the exact data a model saw (cache keys, manifests)."""
        return fingerprint_splits(self)

    def subset(self, n_train: int | None = None, n_test: int | None = None, seed: int = 0) -> ImageData:
        """A seeded random slice (for smoke runs and tests); each split's slice depends only on its own size."""
        return subset_splits(self, n_train, n_test, seed)


def fingerprint_splits(data: Any) -> str:
    """sha256 over the name and every tensor of a dataset's train/test splits (images or table rows alike)."""
    h = hashlib.sha256(data.name.encode())
    for t in (data.x_train, data.y_train, data.x_test, data.y_test):
        h.update(str(tuple(t.shape)).encode())
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def subset_splits(data: Any, n_train: int | None, n_test: int | None, seed: int) -> Any:
    """A copy of a dataclass dataset with seeded random slices of its train and test splits."""
    out = data
    if n_train is not None and n_train < len(data.x_train):
        idx = torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(seed))[:n_train]
        out = replace(out, x_train=data.x_train[idx], y_train=data.y_train[idx])
    if n_test is not None and n_test < len(data.x_test):
        idx = torch.randperm(len(data.x_test), generator=torch.Generator().manual_seed(seed + 1))[:n_test]
        out = replace(out, x_test=data.x_test[idx], y_test=data.y_test[idx])
    return out


DatasetLoader = Callable[..., ImageData]
DATASETS: Registry[DatasetLoader] = Registry("dataset")


def register_dataset(name: str) -> Callable[[DatasetLoader], DatasetLoader]:
    return DATASETS.register(name)


def load_dataset(name: str, **kwargs: Any) -> ImageData:
    """Load a registered dataset by name (``fashion_mnist``, ``mnist``, ``cifar10`` ...)."""
    _load_builtin()
    return DATASETS.get(name)(**kwargs)


def dataset_names() -> list[str]:
    _load_builtin()
    return DATASETS.names()


def _load_builtin() -> None:
    from distill.data import tabular, vision  # noqa: F401  (registers the sources)

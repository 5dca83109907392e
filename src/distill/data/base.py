"""The in-memory dataset every source produces, and the dataset registry.

Images are held as uint8 tensors ``(N, C, H, W)`` and labels as int64 ``(N,)``; normalisation and augmentation
happen later on whole batches (:mod:`distill.data.augment`). A source is a function registered in ``DATASETS``:
``load(root: str | None = None, download: bool = False, **kw) -> ImageData``.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Self

import torch
from torch import Tensor

from distill.config import check_value
from distill.errors import ConfigError, DataError
from distill.registry import Registry


class Splits:
    """What every in-memory data set (:class:`ImageData`, ``TabularData``) derives from its train/test tensors
    ``x_train, y_train, x_test, y_test``, its ``classes`` and its ``name``."""

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    classes: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return int(self.x_train.shape[1])

    def fingerprint(self) -> str:
        """sha256 over every sample and label: identifies the exact data a model saw (cache keys, manifests)."""
        return fingerprint_splits(self)

    def subset(self, n_train: int | None = None, n_test: int | None = None, seed: int = 0) -> Self:
        """A seeded random slice (for smoke runs and tests); each split's slice depends only on its own size."""
        return subset_splits(self, n_train, n_test, seed)


@dataclass
class ImageData(Splits):
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
        check_splits(self, "images", torch.uint8, "(N, C, H, W)")
        if len(self.mean) != self.in_channels or len(self.std) != self.in_channels:
            raise DataError(f"{self.name}: mean/std need one value per channel ({self.in_channels})")

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.x_train.shape[2]), int(self.x_train.shape[3])


def check_splits(data: Any, what: str, dtype: torch.dtype, layout: str) -> None:
    """The checks every in-memory data set runs: each split's ``what`` (``x_train``, ``x_test``) are ``dtype`` in
    ``layout`` (one letter a dimension) with int64 ``(N,)`` labels matching them, the training split is not empty,
    and the labels pass :func:`check_labels`."""
    for part, x, y in (("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test)):
        if x.dtype != dtype or x.dim() != layout.count(",") + 1:
            kind = str(dtype).removeprefix("torch.")
            raise DataError(f"{data.name}: {part} {what} must be {kind} {layout}, got {x.dtype} {tuple(x.shape)}")
        if y.dtype != torch.int64 or y.dim() != 1 or len(y) != len(x):
            raise DataError(f"{data.name}: {part} labels must be int64 (N,) matching the {what}")
    if len(data.x_train) == 0:
        raise DataError(f"{data.name}: the training split is empty")
    check_labels(data.name, data.y_train, data.y_test, len(data.classes))


def check_labels(name: str, y_train: Tensor, y_test: Tensor, num_classes: int) -> None:
    """Refuse labels a classifier cannot learn from: fewer than 2 classes, labels outside ``0..num_classes-1``, or
    a training split of one class only (it would train to a perfect, meaningless validation accuracy)."""
    if num_classes < 2:
        raise DataError(f"{name}: {num_classes} class(es); a classifier needs at least 2")
    for part, y in (("training", y_train), ("test", y_test)):
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            outside = torch.unique(y[(y < 0) | (y >= num_classes)])
            raise DataError(
                f"{name}: the {part} split has label(s) {format_ranges(outside.tolist())} but the {num_classes} "
                f"classes are numbered 0..{num_classes - 1}"
            )
    present = torch.unique(y_train)
    if len(present) < 2:
        raise DataError(
            f"{name}: every training sample has label {int(present[0])}; a classifier needs samples of at least "
            "2 classes (a larger data.train_subset, or data with more classes)"
        )


def format_ranges(values: list[int], show: int = 8) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``"0-2, 5, 7-8"``: label lists stay short in messages (at most ``show`` runs)."""
    runs: list[list[int]] = []
    for v in sorted(values):
        if runs and v == runs[-1][1] + 1:
            runs[-1][1] = v
        else:
            runs.append([v, v])
    parts = [str(a) if a == b else f"{a}-{b}" for a, b in runs]
    return ", ".join(parts[:show]) + (f" (+{len(parts) - show} more)" if len(parts) > show else "")


def fingerprint_splits(data: Any) -> str:
    """sha256 over the name and every tensor of a dataset's train/test splits (images or table rows alike)."""
    h = hashlib.sha256(data.name.encode())
    for t in (data.x_train, data.y_train, data.x_test, data.y_test):
        h.update(str(tuple(t.shape)).encode())
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def subset_splits(data: Any, n_train: int | None, n_test: int | None, seed: int) -> Any:
    """A copy of a dataclass dataset with seeded random slices of its train and test splits.

    ``None``, or a count at least the split's size, keeps a split whole; a count below 1 is refused (it is not
    "everything", and a negative one would slice from the end).
    """
    for what, n in (("train_subset", n_train), ("test_subset", n_test)):
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            size, split = (len(data.x_train), "training") if what == "train_subset" else (len(data.x_test), "test")
            raise ConfigError(
                f"{what} must be null (the whole split) or a count >= 1, got {n!r} (the {split} split has {size})"
            )
    out = data
    if n_train is not None and n_train < len(data.x_train):
        idx = torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(seed))[:n_train]
        out = replace(out, x_train=data.x_train[idx], y_train=data.y_train[idx])
        meta = getattr(data, "meta", None)
        if meta and meta.get("validation_index") is not None:  # the dataset's own validation split, re-indexed
            was_val = torch.zeros(len(data.x_train), dtype=torch.bool)
            was_val[torch.as_tensor(meta["validation_index"], dtype=torch.int64)] = True
            out = replace(out, meta={**meta, "validation_index": was_val[idx].nonzero().squeeze(1)})
    if n_test is not None and n_test < len(data.x_test):
        idx = torch.randperm(len(data.x_test), generator=torch.Generator().manual_seed(seed + 1))[:n_test]
        out = replace(out, x_test=data.x_test[idx], y_test=data.y_test[idx])
    return out


DatasetLoader = Callable[..., ImageData]
DATASETS: Registry[DatasetLoader] = Registry("dataset")


def register_dataset(name: str) -> Callable[[DatasetLoader], DatasetLoader]:
    return DATASETS.register(name)


def load_dataset(name: str, /, **kwargs: Any) -> ImageData:
    """Load a registered dataset by name (``fashion_mnist``, ``mnist``, ``cifar10`` ...).

    Every option is checked against the loader's signature first (types, finite numbers): a source's keyword
    arguments are the schema of ``data.options``.
    """
    _load_builtin()
    loader = DATASETS.get(name)
    _check_options(name, loader, kwargs)
    return loader(**kwargs)


def _check_options(name: str, loader: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    params = inspect.signature(loader).parameters
    for key, value in kwargs.items():
        p = params.get(key)
        annotation = p.annotation if p is not None and p.kind is not p.VAR_KEYWORD else Any
        check_value(annotation, value, f"{name}: {key}")


def dataset_names() -> list[str]:
    _load_builtin()
    return DATASETS.names()


def _load_builtin() -> None:
    from distill.data import arrays, audio, folder, tabular, vision  # noqa: F401  (registers the sources)

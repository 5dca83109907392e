"""DataModule: a seeded train/val split of an :class:`ImageData` and batch iterators over in-memory tensors."""

from __future__ import annotations

import copy
import numbers
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from distill.config import DataConfig
from distill.data.augment import AugmentSpec, apply_views, normalize, sample_views, spec_for
from distill.data.base import ImageData, load_dataset
from distill.errors import DataError


class TeacherCache(Protocol):
    """What the batches read from a teacher-output cache (:class:`distill.engine.cache.TeacherCache` is one)."""

    num_samples: int

    def views_for(self, epoch: int, index: Tensor) -> Any: ...

    def logits_for(self, epoch: int, index: Tensor) -> Tensor: ...


def labelled_mask(y: Tensor, fraction: float, seed: int) -> Tensor:
    """Which samples keep their label when only ``fraction`` of them may: the same fraction of every class (at
    least one sample of each class present), drawn with ``seed``."""
    if not 0 < fraction <= 1:
        raise DataError(f"labeled_fraction must be in (0, 1], got {fraction}")
    g = torch.Generator().manual_seed(seed * 7_919 + 17)
    keep = torch.zeros(len(y), dtype=torch.bool)
    for c in y.unique().tolist():
        idx = (y == c).nonzero().flatten()
        take = max(1, round(fraction * len(idx)))
        keep[idx[torch.randperm(len(idx), generator=g)[:take]]] = True
    return keep


@dataclass
class Batch:
    """One batch: normalised float images, labels, the indices of the samples in their split and, when a teacher
    cache is replayed, the teacher's logits on exactly these images."""

    x: Tensor
    y: Tensor
    index: Tensor
    teacher_logits: Tensor | None = None  # (B, K) float32, from a TeacherCache


class DataModule:
    """Holds train/val/test as uint8 tensors and yields normalised (optionally augmented) batches.

    The validation split is carved from the official training split with a seeded permutation, so it is the
    same on every run with the same ``seed``, unless the dataset brings its own (``meta["validation_index"]``: the
    positions of its validation samples in ``x_train``, e.g. the speech corpus's held-out speakers), which is then
    used whatever ``val_size`` says (``val_size=0`` still means none); the test split is only ever used for
    evaluation.
    """

    def __init__(
        self,
        data: ImageData,
        batch_size: int = 128,
        val_size: int | float = 0.1,
        seed: int = 0,
        augment: bool = True,
        eval_batch_size: int = 1024,
        rank: int = 0,
        world_size: int = 1,
        labeled_fraction: float = 1.0,
        split_seed: int | None = None,
    ) -> None:
        n = len(data.x_train)
        n_val = round(val_size * n) if isinstance(val_size, float) and val_size < 1 else int(val_size)
        if not 0 <= n_val < n:
            raise DataError(f"val_size={val_size} leaves no training data ({n} samples); use a smaller value")
        if n_val == 0 and val_size > 0:  # 0 means "no validation split": a fraction must not round to it unseen
            raise DataError(
                f"val_size={val_size} of {n} training samples rounds to 0 validation samples; use 0 for no "
                "validation split, or a larger fraction or a count"
            )
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}")
        if eval_batch_size < 1:
            raise DataError(f"eval_batch_size must be >= 1, got {eval_batch_size}")
        if isinstance(labeled_fraction, bool) or not isinstance(labeled_fraction, numbers.Real):
            raise DataError(f"labeled_fraction must be a number in (0, 1], got {labeled_fraction!r}")
        if not 0 < labeled_fraction <= 1:  # also NaN, which would otherwise pass as 'all labelled'
            raise DataError(
                f"labeled_fraction must be in (0, 1] (the fraction of training images that keep their label), "
                f"got {labeled_fraction}"
            )
        split_seed = seed if split_seed is None else split_seed  # e.g. a saved teacher's split, whatever the seed
        fixed = data.meta.get("validation_index")
        if fixed is not None and len(fixed) and n_val > 0:  # the dataset's own split (e.g. held-out speakers)
            val_idx = torch.as_tensor(fixed, dtype=torch.int64).unique()
            if len(val_idx) == 0 or len(val_idx) >= n:
                raise DataError(f"{data.name}: its validation split has {len(val_idx)} of {n} training samples")
            keep = torch.ones(n, dtype=torch.bool)
            keep[val_idx] = False
            train_idx = keep.nonzero().squeeze(1)
        else:
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(split_seed))
            val_idx, train_idx = perm[:n_val].sort().values, perm[n_val:].sort().values
        self.data = data
        self.x_train, self.y_train = data.x_train[train_idx], data.y_train[train_idx]
        self.x_val, self.y_val = data.x_train[val_idx], data.y_train[val_idx]
        self.x_test, self.y_test = data.x_test, data.y_test
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.seed = seed
        self.spec = spec_for(data) if augment else AugmentSpec()  # crop/flip, and speech ones from meta
        self.mean = torch.tensor(data.mean, dtype=torch.float32)
        self.std = torch.tensor(data.std, dtype=torch.float32)
        self.rank, self.world_size = rank, world_size
        bad = int(max(self.y_train.max(), self.y_test.max())) if len(self.y_test) else int(self.y_train.max())
        if bad >= data.num_classes:
            raise DataError(f"{data.name}: label {bad} found but only {data.num_classes} classes are named")
        self.labeled_fraction = labeled_fraction
        if labeled_fraction < 1:
            self.y_train = self.y_train.clone()
            self.y_train[~labelled_mask(self.y_train, labeled_fraction, seed)] = -1

    @property
    def num_labeled(self) -> int:
        """How many training samples keep their label (``-1`` marks the others)."""
        return int((self.y_train >= 0).sum())

    def labeled_only(self) -> DataModule:
        """This module restricted to the labelled training samples (the same validation and test splits): what a
        method without a teacher trains on when only part of the training split has labels."""
        if self.labeled_fraction >= 1:
            return self
        keep = self.y_train >= 0
        if not keep.any():
            raise DataError("no training sample has a label, so a method without a teacher has nothing to learn from")
        sub = copy.copy(self)
        sub.x_train, sub.y_train, sub.labeled_fraction = self.x_train[keep], self.y_train[keep], 1.0
        return sub

    @property
    def num_classes(self) -> int:
        return self.data.num_classes

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.data.in_channels, *self.data.image_size)

    def steps_per_epoch(self) -> int:
        n = len(self.x_train) // self.world_size
        return max(1, -(-n // self.batch_size))

    def shard(self, rank: int, world_size: int) -> DataModule:
        """Make this module yield rank ``rank``'s shard of every training epoch (DDP); returns ``self``."""
        if not 0 <= rank < world_size:
            raise DataError(f"rank {rank} is outside world_size {world_size}")
        if len(self.x_train) < world_size:
            raise DataError(f"{len(self.x_train)} training samples cannot be shared by {world_size} ranks")
        self.rank, self.world_size = rank, world_size
        return self

    def train_batches(
        self, epoch: int, device: torch.device | str = "cpu", cache: TeacherCache | None = None
    ) -> Iterator[Batch]:
        """Shuffled, augmented batches for ``epoch``; the order and views depend only on (seed, epoch).

        With a ``cache`` (views mode) the augmentation is not drawn anew: every sample gets the view the cache
        recorded for this epoch (``epoch mod K``), and the batch carries the teacher's logits on that very view.
        """
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = torch.randperm(len(self.x_train), generator=g)
        if self.world_size > 1:  # each rank takes an equal-sized strided shard
            per = len(order) // self.world_size
            order = order[self.rank : per * self.world_size : self.world_size]
        if cache is not None and cache.num_samples != len(self.x_train):
            raise DataError(
                f"the teacher cache holds {cache.num_samples} samples but the split has {len(self.x_train)}"
            )
        views = sample_views(len(order), self.spec, g) if self.spec.enabled and cache is None else None
        mean, std = self.mean.to(device), self.std.to(device)
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            x = self.x_train[idx].to(device, non_blocking=True)
            t_logits = None
            if cache is not None:
                if self.spec.enabled:
                    x = apply_views(x, cache.views_for(epoch, idx), self.spec)
                t_logits = cache.logits_for(epoch, idx).to(device, non_blocking=True)
            elif views is not None:
                sl = slice(start, start + len(idx))
                x = apply_views(x, views[sl], self.spec)
            yield Batch(normalize(x, mean, std), self.y_train[idx].to(device, non_blocking=True), idx, t_logits)

    def eval_batches(self, split: str, device: torch.device | str = "cpu") -> Iterator[Batch]:
        """Un-augmented batches of ``split`` ("train", "val" or "test") in order."""
        x_all, y_all = self.split(split)
        mean, std = self.mean.to(device), self.std.to(device)
        for start in range(0, len(x_all), self.eval_batch_size):
            idx = torch.arange(start, min(start + self.eval_batch_size, len(x_all)))
            x = x_all[start : start + self.eval_batch_size].to(device)
            yield Batch(normalize(x, mean, std), y_all[idx].to(device), idx)

    def split(self, name: str) -> tuple[Tensor, Tensor]:
        splits = {
            "train": (self.x_train, self.y_train),
            "val": (self.x_val, self.y_val),
            "test": (self.x_test, self.y_test),
        }
        if name not in splits:
            raise DataError(f"unknown split {name!r}; expected one of {sorted(splits)}")
        return splits[name]


def load_datamodule(d: DataConfig, seed: int) -> tuple[ImageData, DataModule]:
    """The dataset and its batches as a recipe's ``data`` section describes them (``seed``: the recipe's)."""
    data = load_dataset(d.name, root=d.root, download=d.download, **d.options)
    if d.train_subset or d.test_subset:
        data = data.subset(d.train_subset, d.test_subset, seed=seed)
    val = d.val_size if d.val_size < 1 else int(d.val_size)
    kw: dict[str, Any] = {"seed": seed, "augment": d.augment, "eval_batch_size": d.eval_batch_size}
    if d.labeled_fraction < 1:
        kw["labeled_fraction"] = d.labeled_fraction
    if d.split_seed is not None:
        kw["split_seed"] = d.split_seed
    make = getattr(data, "datamodule", None)  # tabular data bring their own batching
    dm = make(d.batch_size, val, **kw) if make else DataModule(data, d.batch_size, val, **kw)
    return data, dm

"""Tabular data: a CSV loader, scikit-learn's shipped tables, and a data module for MLPs.

A table becomes :class:`TabularData`: float32 features ``(N, D)`` (numeric columns standardised with the training
split's mean and std, categorical columns one-hot over the training split's categories) and int64 labels. Models see
each row as a ``(D, 1, 1)`` "image", so ``mlp`` with ``in_channels=D, pool_to=1`` is a plain MLP on the features and
everything downstream (distillers, trainer, metrics) is unchanged. :class:`TabularDataModule` yields the same
:class:`~distill.data.module.Batch` objects as the image :class:`~distill.data.module.DataModule`, from the same
seeded train/validation split.

Classical students take ``data.x_train.numpy()`` directly.
"""

from __future__ import annotations

import codecs
import csv
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from distill.data.augment import AugmentSpec
from distill.data.base import Splits, check_splits, register_dataset
from distill.data.module import Batch, DataModule
from distill.data.vision import stratified_split
from distill.errors import ConfigError, DataError

MISSING = {"", "na", "nan", "null", "none", "?"}


@dataclass
class TabularData(Splits):
    """A labelled table with a train/test split, features already encoded to floats."""

    name: str
    x_train: Tensor  # (N, D) float32
    y_train: Tensor  # (N,) int64
    x_test: Tensor
    y_test: Tensor
    classes: list[str]
    feature_names: list[str]
    meta: dict[str, Any] = field(default_factory=dict)  # the encoder: columns, means, stds, categories
    hflip: bool = False  # no augmentation applies to rows (read by DataModule)
    crop_padding: int = 0

    def __post_init__(self) -> None:
        check_splits(self, "features", torch.float32, "(N, D)")
        if self.x_train.shape[1] != len(self.feature_names) or self.x_test.shape[1] != self.x_train.shape[1]:
            raise DataError(f"{self.name}: {len(self.feature_names)} feature names for {self.x_train.shape[1]} columns")

    # The image-shaped view the rest of the pipeline reads (model_spec, check_outputs, latency); num_classes and
    # in_channels (the feature count) come from Splits.
    @property
    def image_size(self) -> tuple[int, int]:
        return 1, 1

    @property
    def scale(self) -> float:  # features are not 0..255 pixels (model_spec should record this, not 1/255)
        return 1.0

    @property
    def mean(self) -> tuple[float, ...]:  # features are standardised already
        return (0.0,) * self.in_channels

    @property
    def std(self) -> tuple[float, ...]:
        return (1.0,) * self.in_channels

    def datamodule(
        self, batch_size: int = 64, val_size: int | float = 0.1, seed: int = 0, **kw: Any
    ) -> TabularDataModule:
        """The data module the pipeline trains on (``api.load_data`` calls this when a dataset has it)."""
        return TabularDataModule(self, batch_size, val_size, seed, **kw)

    def numpy(self, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
        x, y = (self.x_train, self.y_train) if split == "train" else (self.x_test, self.y_test)
        return x.numpy(), y.numpy()


class TabularDataModule(DataModule):
    """Seeded train/val split of a :class:`TabularData` and batches of ``(B, D, 1, 1)`` float rows.

    A :class:`~distill.data.module.DataModule` in everything but the batches: the split is the one it makes for
    the same ``seed`` and size, and sharding and teacher caches (fixed mode: no views) work the same way. There is
    no label-preserving tabular augmentation, so ``augment`` changes nothing.
    """

    def __init__(self, data: TabularData, batch_size: int = 64, val_size: int | float = 0.1, seed: int = 0, **kw: Any):
        super().__init__(data, batch_size, val_size, seed, **kw)  # type: ignore[arg-type]
        self.spec = AugmentSpec()

    def train_batches(
        self, epoch: int, device: torch.device | str = "cpu", cache: Any = None, **kw: Any
    ) -> Iterator[Batch]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = torch.randperm(len(self.x_train), generator=g)
        if self.world_size > 1:  # each rank takes an equal-sized strided shard
            per = len(order) // self.world_size
            order = order[self.rank : per * self.world_size : self.world_size]
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            x = self.x_train[idx].to(device)[:, :, None, None]  # (B, D) -> (B, D, 1, 1)
            t_logits = cache.logits_for(epoch, idx).to(device) if cache is not None else None
            yield Batch(x, self.y_train[idx].to(device), idx, t_logits)

    def eval_batches(self, split: str, device: torch.device | str = "cpu", **kw: Any) -> Iterator[Batch]:
        x_all, y_all = self.split(split)
        for start in range(0, len(x_all), self.eval_batch_size):
            idx = torch.arange(start, min(start + self.eval_batch_size, len(x_all)))
            yield Batch(x_all[idx].to(device)[:, :, None, None], y_all[idx].to(device), idx)


# --- encoding ------------------------------------------------------------------------------------------------------


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def encode_table(
    columns: dict[str, list[str]],
    train_rows: np.ndarray,
    categorical: Sequence[str] | None = None,
    standardize: bool = True,
    max_categories: int = 100,
) -> tuple[np.ndarray, list[str], dict[str, Any]]:
    """Encode string columns to a float matrix; statistics and categories come from ``train_rows`` only.

    A column is numeric when every non-missing value parses as a number (unless listed in ``categorical``).
    Missing numeric values take the training mean; an unseen category is all zeros.
    """
    n = len(next(iter(columns.values())))
    parts, names, encoder = [], [], {}
    for col, values in columns.items():
        present = [v for v in values if v.strip().lower() not in MISSING]
        numeric = (categorical is None or col not in categorical) and bool(present) and all(map(_is_number, present))
        if numeric:
            x = np.array([float(v) if v.strip().lower() not in MISSING else np.nan for v in values])
            train = x[train_rows]
            mean = float(np.nanmean(train)) if np.isfinite(train).any() else 0.0
            std = float(np.nanstd(train)) if np.isfinite(train).any() else 1.0
            std = std if standardize and std > 1e-12 else 1.0
            mean_used = mean if standardize else 0.0
            x = np.where(np.isnan(x), mean, x)
            parts.append(((x - mean_used) / std)[:, None])
            names.append(col)
            encoder[col] = {"kind": "numeric", "mean": mean_used, "std": std, "fill": mean}
        else:
            cats = sorted({values[i].strip() for i in train_rows})
            if len(cats) > max_categories:
                raise DataError(
                    f"column {col!r} has {len(cats)} categories (> max_categories={max_categories}); drop it or raise "
                    "the limit"
                )
            index = {c: i for i, c in enumerate(cats)}
            onehot = np.zeros((n, len(cats)))
            for r, v in enumerate(values):
                if v.strip() in index:
                    onehot[r, index[v.strip()]] = 1.0
            parts.append(onehot)
            names += [f"{col}={c}" for c in cats]
            encoder[col] = {"kind": "categorical", "categories": cats}
    x = np.hstack(parts) if parts else np.zeros((n, 0))
    return x.astype(np.float32), names, encoder


def table_data(
    name: str,
    columns: dict[str, list[str]],
    target: list[str],
    categorical: Sequence[str] | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    standardize: bool = True,
    max_categories: int = 100,
    meta: dict[str, Any] | None = None,
) -> TabularData:
    """Encode string ``columns`` and labels ``target`` into a stratified, seeded :class:`TabularData`."""
    classes = sorted(set(target), key=lambda s: (not _is_number(s), float(s) if _is_number(s) else 0.0, s))
    if len(classes) < 2:
        raise DataError(f"{name}: the target has {len(classes)} distinct value(s); a classifier needs at least 2")
    index = {c: i for i, c in enumerate(classes)}
    y = torch.tensor([index[v] for v in target], dtype=torch.int64)
    tr, te = stratified_split(y, test_fraction, seed)
    x, names, encoder = encode_table(columns, tr.numpy(), categorical, standardize, max_categories)
    if x.shape[1] == 0:
        raise DataError(f"{name}: no feature columns left besides the target")
    xt = torch.from_numpy(x)
    return TabularData(
        name, xt[tr], y[tr], xt[te], y[te], classes, names, {**(meta or {}), "encoder": encoder, "seed": seed}
    )


def load_csv(
    path: str | Path,
    target: str,
    categorical: Sequence[str] | None = None,
    drop: Sequence[str] = (),
    test_fraction: float = 0.2,
    seed: int = 0,
    standardize: bool = True,
    max_categories: int = 100,
    delimiter: str = ",",
    encoding: str = "utf-8",
) -> TabularData:
    """Read a CSV with a header row into a :class:`TabularData`.

    Args:
        path: the file.
        target: the label column (any values; classes are its distinct values, numbers sorted numerically).
        categorical: columns to one-hot even if they look numeric (others are detected: non-numeric -> one-hot).
        drop: columns to ignore (ids ...).
        test_fraction: stratified share held out as the test split.
        seed: seeds the split.
        standardize: scale numeric columns to zero mean, unit variance (training-split statistics).
        max_categories: refuse a categorical column with more distinct values (likely an id).
        delimiter: the field separator.
        encoding: the file's text encoding (``utf-8`` also reads a UTF-8 byte-order mark).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"CSV file {path} does not exist")
    try:
        codec = codecs.lookup(encoding).name
    except LookupError as e:
        raise ConfigError(f"csv: unknown encoding {encoding!r}; e.g. utf-8, latin-1, cp1252") from e
    try:
        with path.open(newline="", encoding="utf-8-sig" if codec == "utf-8" else encoding) as f:
            rows = list(csv.reader(f, delimiter=delimiter))
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path}: not {encoding} text (byte 0x{e.object[e.start]:02x} at offset {e.start}); re-save it as "
            f"{encoding}, or name its encoding with data.options.encoding (e.g. latin-1)"
        ) from e
    except (csv.Error, TypeError) as e:  # a NUL byte, an over-long field; TypeError: a delimiter of 2+ characters
        raise DataError(f"{path}: cannot parse as CSV ({' '.join(str(e).split())})") from e
    if len(rows) < 2:
        raise DataError(f"{path}: needs a header row and at least one data row")
    header, body = [h.strip() for h in rows[0]], [r for r in rows[1:] if any(c.strip() for c in r)]
    bad = [i + 2 for i, r in enumerate(body) if len(r) != len(header)]
    if bad:
        raise DataError(f"{path}: rows {bad[:5]} have a different number of fields than the header ({len(header)})")
    for col in (target, *drop, *(categorical or ())):
        if col not in header:
            raise ConfigError(f"{path}: no column {col!r}; the columns are {', '.join(header)}")
    cols = {h: [r[i] for r in body] for i, h in enumerate(header)}
    labels = [v.strip() for v in cols.pop(target)]
    if any(v.lower() in MISSING for v in labels):
        raise DataError(f"{path}: the target column {target!r} has missing values")
    for col in drop:
        cols.pop(col)
    return table_data(
        path.stem, cols, labels, categorical, test_fraction, seed, standardize, max_categories, {"source": str(path)}
    )


def _sklearn_table(name: str, bunch: Any, test_fraction: float, seed: int) -> TabularData:
    x = np.asarray(bunch.data, dtype=np.float64)
    columns = {str(f): [repr(float(v)) for v in x[:, j]] for j, f in enumerate(bunch.feature_names)}
    labels = [str(bunch.target_names[t]) for t in bunch.target]
    data = table_data(name, columns, labels, None, test_fraction, seed, meta={"source": f"sklearn.datasets.{name}"})
    order = [str(c) for c in bunch.target_names]  # keep scikit-learn's class order
    if data.classes != order:
        remap = torch.tensor([order.index(c) for c in data.classes])
        data = replace(data, y_train=remap[data.y_train], y_test=remap[data.y_test], classes=order)
    return data


def _no_options(name: str, kw: dict[str, Any]) -> None:
    if kw:
        raise ConfigError(f"{name}: unknown option(s) {', '.join(sorted(kw))}; accepted: test_fraction, seed")


def _sklearn_source(name: str, doc: str) -> Callable[..., TabularData]:
    """Register scikit-learn's ``load_<name>`` table as the data source ``name``."""

    def source(
        root: str | None = None, download: bool = False, test_fraction: float = 0.2, seed: int = 0, **kw: Any
    ) -> TabularData:
        _no_options(name, kw)
        import sklearn.datasets

        return _sklearn_table(name, getattr(sklearn.datasets, f"load_{name}")(), test_fraction, seed)

    source.__name__ = source.__qualname__ = name
    source.__doc__ = doc
    return register_dataset(name)(source)


breast_cancer = _sklearn_source(
    "breast_cancer", "scikit-learn's Wisconsin breast cancer table: 569 rows, 30 numeric features, 2 classes."
)
wine = _sklearn_source("wine", "scikit-learn's wine table: 178 rows, 13 numeric features, 3 cultivars.")


@register_dataset("csv")
def csv_source(
    root: str | None = None,
    download: bool = False,
    path: str | None = None,
    target: str | None = None,
    categorical: list[str] | None = None,
    drop: list[str] | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    standardize: bool = True,
    max_categories: int = 100,
    delimiter: str = ",",
    encoding: str = "utf-8",
    **kw: Any,
) -> TabularData:
    """A CSV file, named by ``path`` (``data.options: {path: f.csv, target: label}``) or by ``root``, with label
    column ``target``; the other options as :func:`load_csv`."""
    if kw:
        accepted = (
            "path, target, categorical, drop, test_fraction, seed, standardize, max_categories, delimiter, encoding"
        )
        raise ConfigError(f"csv: unknown option(s) {', '.join(sorted(kw))}; accepted: {accepted}")
    if root and path and Path(root).expanduser() != Path(path).expanduser():
        raise ConfigError(f"csv: data.root ({root}) and data.options.path ({path}) name different files; give one")
    file = path or root
    if not file or not target:
        raise ConfigError(
            "csv: needs the file and its label column: data.options: {path: <file.csv>, target: <column>}"
        )
    return load_csv(
        file, target, categorical, drop or (), test_fraction, seed, standardize, max_categories, delimiter, encoding
    )


def majority_accuracy(y_train: Tensor, y_test: Tensor) -> float:
    """Test accuracy of always predicting the training split's most frequent class."""
    top = int(torch.bincount(y_train).argmax())
    return float((y_test == top).float().mean()) if len(y_test) else math.nan

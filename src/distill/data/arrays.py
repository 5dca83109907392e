"""Image data as users have it: a CSV of label + pixel columns (``image_csv``) and NumPy arrays (``arrays``).

* ``image_csv``: one image a row, the label in ``label_column`` (an index, negative from the end, or a header name)
  and the pixels in the other columns, flattened ``H x W`` (grey) or ``H x W x C`` (``pixel_order: hwc``, the
  default) / ``C x H x W`` (``chw``). The header is detected (a first row that is not all numbers) unless ``header``
  says. Pixel values are 0..255, or 0..1 floats (then scaled). Kaggle's ``fashion-mnist_train.csv`` reads as is.
* ``arrays``: a ``.npz`` holding ``x``/``y`` (or ``x_train``/``y_train`` and ``x_test``/``y_test``), or a ``.npy``
  of images with ``labels`` naming a ``.npy`` of labels. Images are ``(N, H, W)``, ``(N, H, W, C)`` or
  ``(N, C, H, W)``, uint8 or floats in [0, 1]. Files are read with ``allow_pickle=False``: no code runs.

Without a test file (``test_path``) a seeded stratified ``test_fraction`` is held out. String labels become class
names (sorted); integer labels must be ``0..K-1``. Mean and std are the training split's. To write the IDX format
instead (MNIST's, read by the ``idx`` source), see :func:`distill.data.idx.write_idx`.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from distill.data.base import ImageData, register_dataset
from distill.data.vision import channel_stats, stratified_split
from distill.errors import ConfigError, DataError


def to_uint8_images(x: np.ndarray, where: str) -> Tensor:
    """``(N, H, W)`` / ``(N, H, W, C)`` / ``(N, C, H, W)`` of 0..255 (or floats in [0, 1]) -> uint8 ``(N, C, H, W)``."""
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise DataError(f"{where}: images must be numbers, got dtype {x.dtype}")
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        if x.shape[3] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
            x = x.transpose(0, 3, 1, 2)
    else:
        raise DataError(f"{where}: images must be (N, H, W), (N, H, W, C) or (N, C, H, W), got shape {x.shape}")
    if len(x) and x.dtype != np.uint8:
        lo, hi = float(x.min()), float(x.max())
        if lo < 0 or hi > 255 or not math.isfinite(hi):
            raise DataError(f"{where}: pixel values must lie in 0..255 (or 0..1), found {lo:g}..{hi:g}")
        if np.issubdtype(x.dtype, np.floating) and hi <= 1.0:
            x = x * 255.0
        x = np.rint(x)
    return torch.from_numpy(np.ascontiguousarray(x.astype(np.uint8)))


def encode_labels(y_train: np.ndarray, y_test: np.ndarray, where: str) -> tuple[Tensor, Tensor, list[str]]:
    """Integer labels stay (``0..K-1``, named ``"0"`` ...); strings become indices into their sorted names."""
    both = np.concatenate([y_train, y_test])
    try:
        ints = both.astype(np.float64)
        if np.all(ints == np.round(ints)):
            k = int(ints.max()) + 1 if len(ints) else 0
            lab = ints.astype(np.int64)
            n = len(y_train)
            return torch.from_numpy(lab[:n]), torch.from_numpy(lab[n:]), [str(i) for i in range(k)]
    except ValueError:
        pass
    names = sorted({str(v) for v in both})
    index = {c: i for i, c in enumerate(names)}
    lab = np.array([index[str(v)] for v in both], dtype=np.int64)
    return torch.from_numpy(lab[: len(y_train)]), torch.from_numpy(lab[len(y_train) :]), names


def _read_csv(path: Path, label_column: int | str, header: bool | None) -> tuple[np.ndarray, np.ndarray]:
    """Pixels ``(N, D)`` float32 and labels ``(N,)`` strings; numpy's C parser, so a 60k-row CSV takes seconds."""
    if not path.is_file():
        raise DataError(f"image_csv: {path} does not exist")
    with open(path, newline="", encoding="utf-8") as f:
        first = next(csv.reader(f), None)
    if not first:
        raise DataError(f"image_csv: {path} is empty")
    if header is None:  # a header: some cell besides the label is not a number (or the label is named)
        col = None if isinstance(label_column, str) else _col(label_column, first, path, False)
        header = col is None or any(not _is_number(v) for j, v in enumerate(first) if j != col)
    col = _col(label_column, first, path, header)
    pixel_cols = [j for j in range(len(first)) if j != col]
    try:
        kw: dict[str, Any] = {"delimiter": ",", "skiprows": int(header), "ndmin": 2, "encoding": "utf-8"}
        pixels = np.loadtxt(path, dtype=np.float32, usecols=pixel_cols, **kw)
        labels = np.loadtxt(path, dtype=str, usecols=[col], **kw)[:, 0]
    except ValueError as e:  # a ragged row, a word among the pixels
        raise DataError(f"image_csv: {path}: {' '.join(str(e).split())}") from None
    if len(pixels) == 0:
        raise DataError(f"image_csv: {path} has no data rows")
    return pixels, np.char.strip(labels)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _col(label_column: int | str, row: list[str], path: Path, named: bool) -> int:
    if isinstance(label_column, str):
        if not named:
            raise ConfigError(f"image_csv: label_column {label_column!r} is a name but {path} has no header row")
        if label_column not in [c.strip() for c in row]:
            raise DataError(f"image_csv: {path} has no column {label_column!r}; its header starts {row[:5]}")
        return [c.strip() for c in row].index(label_column)
    if not -len(row) <= label_column < len(row):
        raise ConfigError(f"image_csv: label_column {label_column} is outside the {len(row)} columns of {path}")
    return label_column % len(row)


def _rows_to_images(pixels: np.ndarray, channels: int, order: str, where: str) -> np.ndarray:
    n, d = pixels.shape
    side = math.isqrt(d // channels) if d % channels == 0 else 0
    if side == 0 or side * side * channels != d:
        raise DataError(
            f"{where}: {d} pixel columns are not a square image of {channels} channel(s) (side x side x {channels}); "
            "check label_column and channels"
        )
    if order == "chw":
        return pixels.reshape(n, channels, side, side)
    return pixels.reshape(n, side, side, channels).transpose(0, 3, 1, 2)


def _split(
    name: str, x: Tensor, y: Tensor, xt: Tensor | None, yt: Tensor | None, classes: list[str] | None,
    found: list[str], frac: float, seed: int, hflip: bool, crop_padding: int, source: str,
) -> ImageData:  # fmt: skip
    """The data set: the given test split, else a seeded stratified one; ``classes`` named by the user, else the
    labels ``found``."""
    classes = _names(classes, found, name.split(":")[0])
    if xt is None or yt is None:
        tr, te = stratified_split(y, frac, seed)
        x, y, xt, yt = x[tr], y[tr], x[te], y[te]
    if tuple(xt.shape[1:]) != tuple(x.shape[1:]):
        raise DataError(f"{name}: test images are {tuple(xt.shape[1:])} but training images {tuple(x.shape[1:])}")
    mean, std = channel_stats(x)
    return ImageData(name, x, y, xt, yt, classes, mean, std, hflip, crop_padding, meta={"source": source})


def _source_file(file: str | None, missing: str) -> Path:
    if not file:
        raise ConfigError(missing)
    return Path(file).expanduser()


def _names(classes: list[str] | None, found: list[str], where: str) -> list[str]:
    if classes is None:
        return found
    if len(classes) < len(found):
        raise ConfigError(f"{where}: {len(classes)} class names given but the labels need {len(found)}")
    return list(classes)


@register_dataset("image_csv")
def image_csv(
    root: str | None = None,
    download: bool = False,
    path: str | None = None,
    test_path: str | None = None,
    label_column: int | str = 0,
    header: bool | None = None,
    channels: int = 1,
    pixel_order: str = "hwc",
    classes: list[str] | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    hflip: bool = False,
    crop_padding: int = 2,
) -> ImageData:
    """A CSV of images, one a row: label + pixel columns (see the module doc)."""
    p = _source_file(path or root, "image_csv: needs path=FILE.csv (label + pixel columns, one image a row)")
    if pixel_order not in ("hwc", "chw"):
        raise ConfigError(f"image_csv: pixel_order must be 'hwc' or 'chw', got {pixel_order!r}")
    if channels < 1:
        raise ConfigError(f"image_csv: channels must be >= 1, got {channels}")
    pixels, labels = _read_csv(p, label_column, header)
    x = to_uint8_images(_rows_to_images(pixels, channels, pixel_order, f"image_csv: {p}"), str(p))
    xt = lt = None
    if test_path:
        tp = Path(test_path).expanduser()
        tpix, lt = _read_csv(tp, label_column, header)
        xt = to_uint8_images(_rows_to_images(tpix, channels, pixel_order, f"image_csv: {tp}"), str(tp))
    y, yt, found = encode_labels(labels, lt if lt is not None else labels[:0], f"image_csv: {p}")
    return _split(f"image_csv:{p.stem}", x, y, xt, yt if xt is not None else None, classes, found, test_fraction,
                  seed, hflip, crop_padding, str(p))  # fmt: skip


def _load_npy(p: Path, where: str) -> Any:
    if not p.is_file():
        raise DataError(f"{where}: {p} does not exist")
    try:
        return np.load(p, allow_pickle=False)
    except ValueError as e:  # object arrays need pickle: refused, nothing is run
        raise DataError(f"{where}: {p} cannot be read without unpickling ({e}); save plain numeric arrays") from None
    except (OSError, EOFError) as e:
        raise DataError(f"{where}: cannot read {p} as NumPy data ({e})") from e


@register_dataset("arrays")
def arrays(
    root: str | None = None,
    download: bool = False,
    path: str | None = None,
    labels: str | None = None,
    test_path: str | None = None,
    test_labels: str | None = None,
    classes: list[str] | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
    hflip: bool = False,
    crop_padding: int = 2,
) -> ImageData:
    """Images and labels from ``.npz`` / ``.npy`` files (see the module doc)."""
    p = _source_file(path or root, "arrays: needs path=FILE.npz (x, y) or path=IMAGES.npy with labels=LABELS.npy")

    def read(img: Path, lab: str | None) -> dict[str, np.ndarray]:
        obj = _load_npy(img, "arrays")
        if isinstance(obj, np.ndarray):
            if lab is None:
                raise ConfigError(f"arrays: {img} holds images only; give labels=LABELS.npy")
            return {"x": obj, "y": _load_npy(Path(lab).expanduser(), "arrays")}
        with obj:
            return {k: obj[k] for k in obj.files}

    found = read(p, labels)
    if "x_train" in found:
        x, y, xt, yt = (found.get(k) for k in ("x_train", "y_train", "x_test", "y_test"))
    else:
        x, y, xt, yt = found.get("x"), found.get("y"), None, None
    if test_path:
        t = read(Path(test_path).expanduser(), test_labels)
        xt, yt = t.get("x", t.get("x_test")), t.get("y", t.get("y_test"))
    if x is None or y is None or (xt is None) != (yt is None):
        raise DataError(f"arrays: {p} holds {sorted(found)}; expected x and y, or x_train, y_train (x_test, y_test)")
    for what, a, b in (("training", x, y), ("test", xt, yt)):
        if a is not None and (b.ndim != 1 or len(a) != len(b)):
            raise DataError(f"arrays: {len(a)} {what} images but labels of shape {b.shape}; expected ({len(a)},)")
    xs = to_uint8_images(x, str(p))
    xts = to_uint8_images(xt, str(p)) if xt is not None else None
    ys, yts, names = encode_labels(y, yt if yt is not None else y[:0], str(p))
    return _split(f"arrays:{p.stem}", xs, ys, xts, yts if xts is not None else None, classes, names, test_fraction,
                  seed, hflip, crop_padding, str(p))  # fmt: skip

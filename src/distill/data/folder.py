"""Image sources that ship without a test split (given a seeded stratified one): a folder of class folders
of images, and scikit-learn's digits (see :mod:`distill.data.vision`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from distill.data import synthetic  # noqa: F401  (registers "synthetic")
from distill.data.base import ImageData, register_dataset
from distill.data.vision import IMAGE_EXTENSIONS, _no_options, channel_stats, measured_image_data, stratified_split
from distill.errors import ConfigError, DataError


def _scan_classes(folder: Path) -> dict[str, list[Path]]:
    return {
        d.name: sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        for d in sorted(folder.iterdir())
        if d.is_dir() and not d.name.startswith(".")
    }


def _read_images(paths: list[Path], size: int, grayscale: bool) -> Tensor:
    from PIL import Image

    out = np.empty((len(paths), size, size, 1 if grayscale else 3), dtype=np.uint8)
    for i, p in enumerate(paths):
        try:
            with Image.open(p) as im:
                im = im.convert("L" if grayscale else "RGB").resize((size, size), Image.Resampling.BILINEAR)
                out[i] = np.asarray(im).reshape(size, size, -1)
        except OSError as e:
            raise DataError(f"{p}: cannot read image ({e})") from e
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()  # (N, H, W, C) -> (N, C, H, W)


@register_dataset("image_folder")
def image_folder(
    root: str | None = None,
    download: bool = False,
    image_size: int = 32,
    grayscale: bool = False,
    test_fraction: float = 0.2,
    seed: int = 0,
    hflip: bool = True,
    crop_padding: int | None = None,
    **kw: Any,
) -> ImageData:
    """``root/{train,test}/<class>/*.png|jpg`` or ``root/<class>/*`` (then split ``test_fraction`` per class).

    Every image is decoded once, converted to RGB (or L) and resized to ``image_size`` square. ``crop_padding``
    defaults to an eighth of the size.
    """
    _no_options("image_folder", kw, "root, image_size, grayscale, test_fraction, seed, hflip, crop_padding")
    if not root:
        raise ConfigError("image_folder: needs root=DIR with train/<class>/*.png (and test/<class>/...) or <class>/*")
    base = Path(root).expanduser()
    if not base.is_dir():
        raise DataError(f"image_folder: {base} is not a directory")
    split_dirs = [base / "train", next((base / d for d in ("test", "val") if (base / d).is_dir()), None)]
    pool = _scan_classes(split_dirs[0] if split_dirs[0].is_dir() else base)
    classes = [c for c, files in pool.items() if files]
    if not classes:
        raise DataError(f"image_folder: no images ({', '.join(IMAGE_EXTENSIONS)}) in class subfolders of {base}")
    index = {c: i for i, c in enumerate(classes)}

    def gather(tree: dict[str, list[Path]]) -> tuple[Tensor, Tensor]:
        paths = [p for c in classes for p in tree.get(c, [])]
        labels = torch.tensor([index[c] for c in classes for _ in tree.get(c, [])], dtype=torch.int64)
        return _read_images(paths, image_size, grayscale), labels

    x, y = gather(pool)
    if split_dirs[0].is_dir() and split_dirs[1] is not None:
        test_tree = _scan_classes(split_dirs[1])
        if extra := sorted(c for c, f in test_tree.items() if f and c not in index):
            raise DataError(f"image_folder: {split_dirs[1]} has classes not in train/: {', '.join(extra)}")
        (x_train, y_train), (x_test, y_test) = (x, y), gather(test_tree)
    else:
        tr, te = stratified_split(y, test_fraction, seed)
        x_train, y_train, x_test, y_test = x[tr], y[tr], x[te], y[te]
    pad = image_size // 8 if crop_padding is None else crop_padding
    splits = (x_train, y_train, x_test, y_test)
    return measured_image_data(
        f"image_folder:{base.name}", splits, classes, hflip=hflip, crop_padding=pad, source=str(base)
    )


@register_dataset("digits")
def digits(
    root: str | None = None,
    download: bool = False,
    size: int = 28,
    test_fraction: float = 0.2,
    seed: int = 0,
    **kw: Any,
) -> ImageData:
    """scikit-learn's 1797 8x8 handwritten digits (0..16 scaled to 0..255), bilinearly resized to ``size``."""
    _no_options("digits", kw, "size, test_fraction, seed")
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.from_numpy(bunch.images).float().mul(255 / 16).unsqueeze(1)  # (N, 8, 8) -> (N, 1, 8, 8)
    if size != 8:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = x.round().clamp(0, 255).to(torch.uint8)
    y = torch.from_numpy(bunch.target).long()
    tr, te = stratified_split(y, test_fraction, seed)
    mean, std = channel_stats(x[tr])
    return ImageData(
        "digits",
        x[tr],
        y[tr],
        x[te],
        y[te],
        classes=[str(i) for i in range(10)],
        mean=mean,
        std=std,
        hflip=False,
        crop_padding=2,
    )

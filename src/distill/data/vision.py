"""Image classification sources: Fashion-MNIST, MNIST, any IDX folder, CIFAR-10/100, an image folder, digits.

Each is registered in :data:`~distill.data.base.DATASETS` as ``load(root=None, download=False, **options)`` and
returns an :class:`~distill.data.base.ImageData` with everything decoded into memory once, so training never touches
files or PIL. Sources that ship without a test split (image folder without ``train/``/``test/``, digits) get a
seeded stratified one; those two live in :mod:`distill.data.folder`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from distill.data import synthetic  # noqa: F401  (registers "synthetic")
from distill.data.base import ImageData, format_ranges, register_dataset
from distill.data.idx import find_idx_dir, read_idx_split
from distill.errors import ConfigError, DataError

FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
FASHION_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian: apt-get install dataset-fashion-mnist
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def cache_dir() -> Path:
    """Where downloads go and are looked for: ``~/.cache/distill``."""
    return Path.home() / ".cache" / "distill"


def channel_stats(x: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and std of uint8 images on the [0, 1] scale, via a 256-bin histogram (no float copy)."""
    levels = torch.arange(256, dtype=torch.float64) / 255
    means, stds = [], []
    for c in range(x.shape[1]):
        counts = torch.bincount(x[:, c].reshape(-1), minlength=256).double()
        n = counts.sum().clamp_min(1)
        mean = (counts * levels).sum() / n
        var = (counts * (levels - mean) ** 2).sum() / n
        means.append(round(float(mean), 4))
        stds.append(round(max(float(var.sqrt()), 1e-4), 4))  # a constant image must not divide by zero
    return tuple(means), tuple(stds)


def measured_image_data(
    name: str,
    splits: tuple[Tensor, Tensor, Tensor, Tensor],
    classes: list[str],
    *,
    hflip: bool,
    crop_padding: int,
    source: str,
) -> ImageData:
    """An :class:`ImageData` of ``(x_train, y_train, x_test, y_test)`` normalised by the training split's exact
    channel statistics (:func:`channel_stats`), read from ``source``."""
    mean, std = channel_stats(splits[0])
    return ImageData(name, *splits, classes, mean, std, hflip=hflip, crop_padding=crop_padding, meta={"source": source})


def stratified_split(y: Tensor, test_fraction: float = 0.2, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Seeded train/test indices holding ``test_fraction`` of every class out (each class keeps >= 1 for training)."""
    if not 0 <= test_fraction < 1:
        raise ConfigError(f"test_fraction must be in [0, 1), got {test_fraction}")
    g = torch.Generator().manual_seed(seed)
    train, test = [], []
    for c in torch.unique(y):
        idx = (y == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        k = min(round(len(idx) * test_fraction), len(idx) - 1)
        test.append(idx[:k])
        train.append(idx[k:])
    return torch.cat(train).sort().values, torch.cat(test).sort().values


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())  # torchvision's errors span lines; the CLI shows one


def _no_options(name: str, kw: dict[str, Any], accepted: str) -> None:
    if kw:
        raise ConfigError(f"{name}: unknown option(s) {', '.join(sorted(kw))}; accepted: {accepted}")


def _as_nchw(x: Tensor, where: str) -> Tensor:
    """IDX images ``(N, H, W)`` or ``(N, H, W, C)`` / ``(N, C, H, W)`` -> uint8 ``(N, C, H, W)``."""
    if x.dtype != torch.uint8:
        raise DataError(f"{where}: images must be uint8 (IDX type 0x08), got {x.dtype}")
    if x.dim() == 3:
        return x.unsqueeze(1)
    if x.dim() == 4:
        return x if x.shape[1] <= 4 else x.permute(0, 3, 1, 2).contiguous()
    raise DataError(f"{where}: images must be (N, H, W) or 4-d, got shape {tuple(x.shape)}")


def _candidates(root: str | None, subdirs: tuple[str, ...], env_direct: bool, system: list[Path]) -> list[Path]:
    """Folders to look in: ``root`` alone when the user names one (a mistyped directory must not silently fall back
    to another copy); otherwise ``$DISTILL_DATA``, ``system``, ``~/.cache/distill`` (and subdirs)."""
    out: list[Path] = []
    if root:
        base = Path(root).expanduser()
        return [base, *(base / s for s in subdirs)]
    env = data_env()
    if env:
        base = Path(env).expanduser()
        out += [base] if env_direct else []
        out += [base / s for s in subdirs]
    out += system + [cache_dir() / s for s in subdirs]
    return list(dict.fromkeys(out))  # drop repeats, keep order


def data_env() -> str | None:
    """``$DISTILL_DATA``, which must name an existing directory when set: a mistyped one would otherwise fall back,
    silently, to another copy of the data (or to a download)."""
    env = os.environ.get("DISTILL_DATA")
    if env and not Path(env).expanduser().is_dir():
        raise DataError(
            f"DISTILL_DATA is set to {env!r}, which is not a directory; point it at the folder that holds the "
            "datasets, or unset it"
        )
    return env or None


def _torchvision_download(cls_name: str, target: Path, title: str) -> None:
    import torchvision.datasets as tvd

    try:
        getattr(tvd, cls_name)(root=str(target), train=True, download=True)
    except Exception as e:  # no network, a mirror down, a bad checksum: all the user can act on is "get it elsewhere"
        raise DataError(f"{title}: download into {target} failed ({type(e).__name__}: {_one_line(e)})") from e


def _load_idx_source(
    title: str, tv_class: str, root: str | None, download: bool, looked: list[Path], subdirs: tuple[str, ...], how: str
) -> tuple[Path, Tensor, Tensor, Tensor, Tensor]:
    """Read both splits from the first of ``looked`` that has them (or download with torchvision's ``tv_class``)."""
    folder = next((f for f in looked if find_idx_dir(f, ()) is not None), None)
    if folder is None:
        if not download:
            raise DataError(f"{title} not found (looked in: {', '.join(map(str, looked))}). {how}")
        target = Path(root).expanduser() if root else cache_dir()
        _torchvision_download(tv_class, target, title)
        folder = find_idx_dir(target, subdirs)
        if folder is None:
            raise DataError(f"{title}: torchvision downloaded into {target} but no IDX files are there")
    x_train, y_train = read_idx_split(folder, "train")
    x_test, y_test = read_idx_split(folder, "t10k")
    return folder, _as_nchw(x_train, f"{folder}"), y_train, _as_nchw(x_test, f"{folder}"), y_test


_GET_IT = (
    "pass --set data.root=DIR (a directory with the IDX files), "
    "or set data.download=true to let torchvision download it."
)


@register_dataset("fashion_mnist")
def fashion_mnist(root: str | None = None, download: bool = False, **kw: Any) -> ImageData:
    """Zalando's Fashion-MNIST: 60k/10k 28x28 grey images of 10 clothing classes.

    Looked for in ``root`` and ``$DISTILL_DATA`` (each directly, as ``fashion-mnist/`` or as torchvision's
    ``FashionMNIST/raw/``), then ``/usr/share/datasets/fashion-mnist`` (Debian's ``dataset-fashion-mnist``), then
    ``~/.cache/distill/fashion-mnist`` and ``~/.cache/distill/FashionMNIST/raw`` (where ``download=True`` puts it).
    """
    _no_options("fashion_mnist", kw, "root, download")
    subdirs = ("fashion-mnist", "FashionMNIST/raw")
    how = f"Install it with `apt-get install dataset-fashion-mnist`, {_GET_IT}"
    looked = _candidates(root, subdirs, True, [FASHION_SYSTEM_DIR])
    folder, *splits = _load_idx_source("Fashion-MNIST", "FashionMNIST", root, download, looked, subdirs, how)
    return ImageData(
        "fashion_mnist",
        *splits,
        classes=list(FASHION_CLASSES),
        mean=(0.2860,),
        std=(0.3530,),
        hflip=True,
        crop_padding=2,
        meta={"source": str(folder)},
    )


@register_dataset("mnist")
def mnist(root: str | None = None, download: bool = False, **kw: Any) -> ImageData:
    """LeCun's MNIST digits: looked for in ``root``, ``$DISTILL_DATA/mnist`` and ``~/.cache/distill/mnist``.

    Each of those also as torchvision's ``MNIST/raw/`` layout (``root`` also directly).
    """
    _no_options("mnist", kw, "root, download")
    subdirs = ("mnist", "MNIST/raw")
    looked = _candidates(root, subdirs, False, [])
    folder, *splits = _load_idx_source("MNIST", "MNIST", root, download, looked, subdirs, f"To get it, {_GET_IT}")
    return ImageData(
        "mnist",
        *splits,
        classes=[str(i) for i in range(10)],
        mean=(0.1307,),
        std=(0.3081,),
        hflip=False,
        crop_padding=2,
        meta={"source": str(folder)},
    )


@register_dataset("idx")
def idx(
    root: str | None = None, download: bool = False, hflip: bool = False, crop_padding: int = 2, **kw: Any
) -> ImageData:
    """Any MNIST-format folder (KMNIST, EMNIST ...); class names from ``classes.txt`` (one a line) if present."""
    _no_options("idx", kw, "root, download, hflip, crop_padding")
    if not root:
        raise ConfigError("idx: needs root=DIR, a directory with train-/t10k- images-idx3-ubyte and labels-idx1-ubyte")
    folder = find_idx_dir(Path(root).expanduser())
    if folder is None:
        raise DataError(
            f"idx: no train-/t10k- images-idx3-ubyte and labels-idx1-ubyte files (optionally .gz) in {root}"
        )
    x_train, y_train = read_idx_split(folder, "train")
    x_test, y_test = read_idx_split(folder, "t10k")
    x_train, x_test = _as_nchw(x_train, str(folder)), _as_nchw(x_test, str(folder))
    labels = torch.cat([y_train, y_test])
    if labels.numel() and int(labels.min()) < 0:
        raise DataError(f"idx: {folder} has negative labels")
    k = int(labels.max()) + 1 if labels.numel() else 0
    classes = [str(i) for i in range(k)]
    for txt in (folder / "classes.txt", Path(root).expanduser() / "classes.txt"):
        if txt.is_file():
            try:
                classes = [line.strip() for line in txt.read_text(encoding="utf-8").splitlines() if line.strip()]
            except UnicodeDecodeError as e:
                raise DataError(f"{txt}: not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start})") from e
            if len(classes) < k:
                raise DataError(f"{txt}: lists {len(classes)} class names but the labels go up to {k - 1}")
            break
    # The class count comes from the labels, so one stray label (300 among 0-9) would invent 291 empty classes.
    missing = sorted(set(range(len(classes))) - set(torch.unique(y_train).tolist()))
    if missing and len(classes) >= 2:
        raise DataError(
            f"idx: {folder}: class(es) {format_ranges(missing)} of 0..{len(classes) - 1} never occur in the training "
            f"labels (found: {format_ranges(torch.unique(y_train).tolist())}); labels must be 0..K-1 with every class "
            "present in train-labels"
        )
    splits = (x_train, y_train, x_test, y_test)
    return measured_image_data("idx", splits, classes, hflip=hflip, crop_padding=crop_padding, source=str(folder))


def _cifar(
    name: str, cls_name: str, folder: str, root: str | None, download: bool, mean: tuple, std: tuple
) -> ImageData:
    import torchvision.datasets as tvd

    env = None if root else data_env()  # a named root is the only place looked in (as for the IDX sources)
    roots = [Path(root).expanduser()] if root else [Path(p).expanduser() for p in (env,) if p] + [cache_dir()]
    found = next((r for r in roots if (r / folder).is_dir()), None)
    if found is None and not download:
        raise DataError(
            f"{name} not found (looked for {folder}/ in: {', '.join(map(str, roots))}). Pass --set data.root=DIR (the "
            f"directory holding torchvision's {folder}/), or set data.download=true to let torchvision download it."
        )
    target = found or roots[0]
    cls = getattr(tvd, cls_name)
    try:
        train = cls(str(target), train=True, download=found is None)
        test = cls(str(target), train=False, download=False)
    except Exception as e:  # torchvision says RuntimeError("Dataset not found or corrupted") or a network error
        raise DataError(f"{name}: cannot load {target / folder} ({type(e).__name__}: {_one_line(e)})") from e

    def to_nchw(ds: Any) -> tuple[Tensor, Tensor]:  # (N, 32, 32, 3) uint8 -> (N, 3, 32, 32)
        return torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2))), torch.tensor(ds.targets).long()

    return ImageData(
        name,
        *to_nchw(train),
        *to_nchw(test),
        classes=list(train.classes),
        mean=mean,
        std=std,
        hflip=True,
        crop_padding=4,
        meta={"source": str(target / folder)},
    )


@register_dataset("cifar10")
def cifar10(root: str | None = None, download: bool = False, **kw: Any) -> ImageData:
    """CIFAR-10 in torchvision's on-disk format (``cifar-10-batches-py/`` under ``root``)."""
    _no_options("cifar10", kw, "root, download")
    return _cifar(
        "cifar10", "CIFAR10", "cifar-10-batches-py", root, download, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    )


@register_dataset("cifar100")
def cifar100(root: str | None = None, download: bool = False, **kw: Any) -> ImageData:
    """CIFAR-100 (fine labels) in torchvision's on-disk format (``cifar-100-python/`` under ``root``)."""
    _no_options("cifar100", kw, "root, download")
    return _cifar(
        "cifar100", "CIFAR100", "cifar-100-python", root, download, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
    )

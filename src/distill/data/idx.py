"""Reading and writing MNIST-format IDX files (plain or gzipped).

An IDX file is a 4-byte magic number ``00 00 <dtype> <ndim>``, then ``ndim`` big-endian uint32 dimensions, then the
values in C order (big-endian for multi-byte types). MNIST, Fashion-MNIST, KMNIST and EMNIST all ship this way, as
``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``,
each optionally ``.gz``.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from torch import Tensor

from distill.errors import DataError

# IDX type code -> numpy dtype (big-endian where it matters)
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {dt.newbyteorder("=") if dt.itemsize > 1 else dt: code for code, dt in IDX_DTYPES.items()}

# the subfolders torchvision's MNIST / FashionMNIST classes download into
TORCHVISION_SUBDIRS = ("FashionMNIST/raw", "MNIST/raw")


def _open(path: Path) -> tuple[BinaryIO, int]:
    """The file opened for reading (gunzipped if it is gzip) and the most bytes it can possibly yield."""
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"  # sniff rather than trust the suffix
    raw = path.stat().st_size
    if gz:  # deflate expands at most ~1032:1; the bound keeps a garbage header from allocating petabytes
        return gzip.open(path, "rb"), raw * 1032 + 1024  # type: ignore[return-value]
    return open(path, "rb"), raw


def _read_exact(f: BinaryIO, n: int) -> bytearray:
    """Read exactly ``n`` bytes into a writable buffer (short only at end of file)."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = f.readinto(view[got:])  # type: ignore[attr-defined]
        if not k:
            break
        got += k
    return buf[:got] if got < n else buf


def read_idx(path: str | os.PathLike[str]) -> Tensor:
    """Read one IDX file into a tensor of its stored shape and (native-endian) dtype.

    Raises:
        DataError: the file is missing, is not IDX (bad magic), is truncated or has trailing bytes, or is a
            corrupt gzip stream. The message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"IDX file {path} does not exist")
    try:
        f, most = _open(path)
        with f:
            magic = f.read(4)
            if len(magic) < 4 or magic[:2] != b"\x00\x00" or magic[2] not in IDX_DTYPES or magic[3] == 0:
                raise DataError(
                    f"{path}: bad magic number {magic.hex() or '(empty file)'}; an IDX file starts with "
                    f"00 00 <type in {sorted(f'{c:02x}' for c in IDX_DTYPES)}> <ndim >= 1>"
                )
            dtype, ndim = IDX_DTYPES[magic[2]], magic[3]
            head = f.read(4 * ndim)
            if len(head) < 4 * ndim:
                raise DataError(
                    f"{path}: truncated header: expected {ndim} dimensions, file ends after 4+{len(head)} bytes"
                )
            shape = struct.unpack(f">{ndim}I", head)
            size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if size > most:
                raise DataError(
                    f"{path}: truncated: header declares shape {shape} ({size} bytes), the file is too small"
                )
            buf = _read_exact(f, size)
            if len(buf) < size:
                raise DataError(
                    f"{path}: truncated: header declares shape {shape} ({size} bytes) but only {len(buf)} follow"
                )
            if f.read(1):
                raise DataError(f"{path}: has more data than its header's shape {shape} declares")
    except (OSError, EOFError, zlib.error) as e:  # unreadable file, corrupt or cut gzip stream
        raise DataError(f"{path}: cannot read IDX file: {e}") from e
    arr = np.frombuffer(buf, dtype=dtype).reshape(shape)
    if dtype.itemsize > 1:
        arr = arr.astype(dtype.newbyteorder("="))  # torch wants native byte order
    return torch.from_numpy(arr)


def write_idx(path: str | os.PathLike[str], data: Tensor | np.ndarray) -> Path:
    """Write an array as IDX (gzipped when ``path`` ends in ``.gz``); the inverse of :func:`read_idx`."""
    path = Path(path)
    arr = data.numpy() if isinstance(data, Tensor) else np.asarray(data)
    code = _CODES.get(arr.dtype.newbyteorder("=") if arr.dtype.itemsize > 1 else arr.dtype)
    if code is None:
        raise DataError(f"cannot write {arr.dtype} as IDX; supported: uint8, int8, int16, int32, float32, float64")
    if arr.ndim == 0 or arr.ndim > 255:
        raise DataError(f"IDX needs 1 to 255 dimensions, got {arr.ndim}")
    payload = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    payload += np.ascontiguousarray(arr, dtype=IDX_DTYPES[code]).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(payload, compresslevel=6) if path.suffix == ".gz" else payload)
    return path


def find_idx_file(directory: str | os.PathLike[str], stem: str) -> Path | None:
    """``directory/stem`` or ``directory/stem.gz`` (plain preferred: it reads faster), or None."""
    for name in (stem, stem + ".gz"):
        p = Path(directory) / name
        if p.is_file():
            return p
    return None


def find_idx_split(
    root: str | os.PathLike[str], prefix: str, subdirs: tuple[str, ...] = TORCHVISION_SUBDIRS
) -> tuple[Path, Path] | None:
    """Images and labels files of one split (``prefix`` is ``"train"`` or ``"t10k"``), or None.

    Looks in ``root`` itself, then in each of ``subdirs`` (by default torchvision's ``FashionMNIST/raw`` and
    ``MNIST/raw``); the first folder holding both files wins.
    """
    for d in ("", *subdirs):
        folder = Path(root) / d
        images = find_idx_file(folder, f"{prefix}-images-idx3-ubyte")
        labels = find_idx_file(folder, f"{prefix}-labels-idx1-ubyte")
        if images is not None and labels is not None:
            return images, labels
    return None


def find_idx_dir(root: str | os.PathLike[str], subdirs: tuple[str, ...] = TORCHVISION_SUBDIRS) -> Path | None:
    """The folder (``root`` or one of ``subdirs``) that holds both the train and the t10k split, or None."""
    for d in ("", *subdirs):
        folder = Path(root) / d
        if find_idx_split(folder, "train", ()) and find_idx_split(folder, "t10k", ()):
            return folder
    return None


def read_idx_split(directory: str | os.PathLike[str], prefix: str) -> tuple[Tensor, Tensor]:
    """Read one split's ``(images, labels)`` from a folder found by :func:`find_idx_dir`.

    Images come back as stored (``(N, H, W)`` for MNIST); labels as int64. Raises DataError if a file is missing
    or the two disagree in length.
    """
    found = find_idx_split(directory, prefix, ())
    if found is None:
        raise DataError(f"{directory}: no {prefix}-images-idx3-ubyte[.gz] and {prefix}-labels-idx1-ubyte[.gz] pair")
    images, labels = (read_idx(p) for p in found)
    if labels.dim() != 1 or labels.dtype.is_floating_point:
        raise DataError(f"{found[1]}: labels must be a 1-d integer array, got {labels.dtype} {tuple(labels.shape)}")
    if len(images) != len(labels):
        raise DataError(f"{directory}: {prefix} has {len(images)} images but {len(labels)} labels")
    return images, labels.long()

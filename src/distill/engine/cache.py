"""TeacherCache: the teacher's logits computed once, stored compactly on disk and replayed with their views.

Modes (``cache.mode`` in a recipe):

* ``off`` — the teacher runs on every training batch, on a fresh random augmentation each epoch (exact KD; the
  teacher's forward pass is paid every step).
* ``views`` — Fast Knowledge Distillation (Shen & Xing 2021, arXiv:2112.01528): for every training sample ``K``
  augmentation views are drawn once (:func:`~distill.data.augment.sample_views`, fixed generator), their
  parameters recorded, and the teacher's logits stored for each view. In epoch ``e`` the student is shown exactly
  view ``e mod K`` of every sample — the same pixels the teacher saw — with its stored logits, so no stale target
  is ever paired with a different image. The price is diversity: the student sees ``K`` views per sample instead
  of a new one each epoch. Without augmentation there is one view per sample and ``K`` is 1.
* ``fixed`` — one un-augmented view per sample, cached by sample index. With random augmentation this would be a
  *fixed-teacher approximation* (the student's random crop paired with the teacher's output on another image), so
  it is refused unless ``data.augment`` is false; there it is exact and equal to ``views`` with ``K = 1``.

Storage: one directory per key under ``dir`` with ``.npy`` files opened as numpy memmaps —
``logits.npy`` ``(K, N, C)`` float16, or with ``topk = k``: ``values.npy`` ``(K, N, k)`` float16 (the k largest
logits), ``indices.npy`` ``(K, N, k)`` int16/int32 and ``tail.npy`` ``(K, N)`` float16, plus ``views.npy``
``(K, N, 3)`` int16 (crop offsets ``dy, dx`` and the flip flag; ``(K, N, 10)`` with the speech augmentation's
seven columns, :data:`~distill.data.augment.SPEECH_COLUMNS`) and ``meta.json`` (the key, shapes and the sha256
of every file). A directory whose files are missing, truncated or whose checksums differ is rebuilt.

Building costs about what the teacher's forward passes in the KD loop cost (or less), so one student with ``K = E``
views pays no more than the teacher every step: blocks of images are read once and each of their K views made with
whole-batch tensor ops; the teacher runs as a private inference copy (:func:`inference_copy`: BatchNorm folded
into the convolutions, channels_last weights when asked, ``torch.inference_mode``), on the CPU in forward batches
of :data:`CPU_FORWARD_BATCH` images (small enough that their activations neither leave the processor's caches nor
are page-faulted in afresh on every pass), each split over side-by-side streams that share the torch threads. The
stored logits are the plain teacher's on the recorded views up to float rounding (before the fp16 rounding of
storage).

Top-k reconstruction. Logits, not probabilities, are stored, so a method can soften them at any temperature. For
the ``C - k`` classes outside the top k a single *tail logit* is kept: ``z_tail = logsumexp(z_tail_classes) −
log(C − k)`` (their log-mean-exp). The reconstructed logit vector holds the k stored logits and ``z_tail`` for
every other class. At ``T = 1`` its softmax is exactly: the k largest probabilities, and the remaining mass
``1 − Σ top-k`` spread uniformly over the other classes. At another temperature ``T`` the reconstructed logits are
divided by ``T`` like real ones (``softmax(z_rec / T)``); the tail is then an approximation (its classes are
treated as equal), while the top-k ratios stay exact.

The key is the sha256 of: the teacher's weights (names, dtypes, shapes, bytes), the training tensors the
:class:`~distill.data.module.DataModule` holds (or the dataset fingerprint), the normalisation, the augmentation
spec, ``K``, the seed and ``topk``. Any change gives a new key, so a stale cache is never served.

The cache holds logits only: methods that need the teacher's intermediate features (``teacher_features = True``)
always run the teacher.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from distill.data.augment import AugmentSpec, Views, apply_views, normalize, sample_views
from distill.engine import distributed as D
from distill.engine.cache_format import (  # the format and the hashes (also importable from here, as before)
    FORMAT,
    _open_arrays,
    _verify,
    cache_key,
    compress_topk,
    hash_tensors,
    model_hash,
    reconstruct_topk,
)
from distill.engine.inference import _Forward, fold_batchnorm, inference_copy  # noqa: F401
from distill.errors import ConfigError, DistillError
from distill.io import sha256_file
from distill.settings import MODES, CacheSettings  # noqa: F401  (re-exported)

# Images per teacher forward pass when the cache is built on the CPU. A small batch's activations stay in the
# processor's caches and in the allocator's reused memory; at 1024 every activation of the demo's CNN teacher was a
# fresh mapping page-faulted in (system time as large as the compute), and it ran at about half the speed per image.
CPU_FORWARD_BATCH = 128


class CacheError(DistillError):
    """A cache directory is missing, truncated or does not match its key."""


class TeacherCache:
    """Teacher logits for ``K`` recorded views of every training sample, memory-mapped from ``path``.

    Build or open one with :meth:`TeacherCache.build`; read with :meth:`views_for` / :meth:`logits_for`.
    """

    def __init__(self, path: Path, meta: dict[str, Any]) -> None:
        self.path, self.meta = Path(path), meta
        self.key: str = meta["key"]
        self.num_views: int = meta["views"]
        self.num_samples: int = meta["num_samples"]
        self.num_classes: int = meta["num_classes"]
        self.topk: int | None = meta["topk"]
        mm = {name: np.load(self.path / f"{name}.npy", mmap_mode="r") for name in meta["files"]}
        self._views = torch.from_numpy(np.array(mm["views"])).long()  # (K, N, 3), small
        self._mm = mm
        self._slot: tuple[int, dict[str, Tensor]] | None = None

    # -- reading --------------------------------------------------------------------------------------------
    def slot(self, epoch: int) -> int:
        """Which stored view epoch ``epoch`` replays: ``epoch mod K``."""
        return epoch % self.num_views

    def views_for(self, epoch: int, index: Tensor) -> Views:
        """The recorded augmentation of samples ``index`` (positions in the training split) for ``epoch``."""
        v = self._views[self.slot(epoch)][index]
        speech = v[:, 3:].clone() if v.shape[1] > 3 else None  # the speech columns, when recorded
        return Views(v[:, 0].clone(), v[:, 1].clone(), v[:, 2].bool(), speech)

    def _load_slot(self, k: int) -> dict[str, Tensor]:
        # one view slot is read into RAM once per epoch (N·C·2 bytes), then indexed per batch
        if self._slot is None or self._slot[0] != k:
            names = ("values", "indices", "tail") if self.topk else ("logits",)
            self._slot = (k, {n: torch.from_numpy(np.array(self._mm[n][k])) for n in names})
        return self._slot[1]

    def logits_for(self, epoch: int, index: Tensor) -> Tensor:
        """float32 ``(B, C)`` teacher logits of samples ``index`` on the view of ``epoch`` (top-k reconstructed)."""
        s = self._load_slot(self.slot(epoch))
        if not self.topk:
            return s["logits"][index].float()
        return reconstruct_topk(s["values"][index], s["indices"][index], s["tail"][index], self.num_classes)

    # -- building -------------------------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        teacher: nn.Module,
        x_train: Tensor,
        spec: AugmentSpec,
        mean: Tensor,
        std: Tensor,
        *,
        directory: str | Path,
        views: int = 8,
        seed: int = 0,
        topk: int | None = None,
        data_sha: str | None = None,
        device: torch.device | str = "cpu",
        batch_size: int = 1024,
        channels_last: bool = False,
        progress: bool | None = None,
        write: bool = True,
    ) -> TeacherCache:
        """Open the cache for this (teacher, data, augmentation, K, seed, topk), computing it if absent or bad.

        ``x_train`` are the uint8 training images ``(N, C, H, W)`` in split order. ``write=False`` only opens
        (a non-zero DDP rank waits for rank 0 to build, then opens). A build runs a private inference copy of the
        teacher (:func:`inference_copy`) over blocks of ``batch_size`` images, on the CPU in forward batches of
        :data:`CPU_FORWARD_BATCH`.
        """
        views = views if spec.enabled else 1  # without augmentation every view is the same image
        data_sha = data_sha or hash_tensors([("x_train", x_train)])
        norm = [list(map(float, mean.flatten())), list(map(float, std.flatten()))]
        key = cache_key(model_hash(teacher), data_sha, spec, views, seed, topk, norm)
        path = Path(directory) / key[:32]
        meta = _verify(path, key)
        if meta is not None:
            return cls(path, meta)
        if not write:
            raise CacheError(f"teacher cache {path} is missing or invalid and this process may not build it")
        if path.exists():
            print(f"teacher cache {path} is incomplete or corrupted; rebuilding it", file=sys.stderr)
        written = _compute(
            teacher, x_train, spec, mean, std, path, key, views, seed, topk, device, batch_size, channels_last, progress
        )
        # our files were hashed once complete: only their sizes are checked again (the files of another process
        # that won the race to write this key are verified in full)
        meta = _verify(path, key, checksums=not written)
        if meta is None:
            raise CacheError(f"teacher cache {path} failed verification right after it was written")
        return cls(path, meta)


def _compute(
    teacher: nn.Module,
    x_train: Tensor,
    spec: AugmentSpec,
    mean: Tensor,
    std: Tensor,
    path: Path,
    key: str,
    k_views: int,
    seed: int,
    topk: int | None,
    device: torch.device | str,
    batch_size: int,
    channels_last: bool,
    progress: bool | None,
) -> bool:
    """Write the cache of ``key`` to ``path``; False when another process wrote it first (theirs is kept).

    Blocks of ``batch_size`` images are read once and all K views of a block computed in turn (each view's block of
    logits is written once); the teacher runs in forward batches of :data:`CPU_FORWARD_BATCH` on the CPU (split over
    :func:`_cpu_streams` threads), of the whole block on an accelerator. Every file is hashed once, when complete.
    """
    n = len(x_train)
    device = torch.device(device)
    was_training = teacher.training
    mean_d, std_d = mean.to(device), std.to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    g = torch.Generator().manual_seed(seed * 1_000_003 + 7)  # fixed generator: the views depend only on the seed
    recorded = [sample_views(n, spec, g) for _ in range(k_views)]
    views_np = np.stack([_view_columns(v).numpy() for v in recorded]).astype(np.int16)
    forward_batch = min(batch_size, CPU_FORWARD_BATCH) if device.type == "cpu" else batch_size

    def view_of(xb: Tensor, k: int, sl: slice) -> Tensor:
        v = recorded[k]
        x = apply_views(xb, v[sl], spec) if spec.enabled else xb
        return normalize(x, mean_d, std_d)

    probe = view_of(x_train[:forward_batch].to(device), 0, slice(0, forward_batch))
    model = inference_copy(teacher, probe, channels_last)
    streams = _cpu_streams(torch.get_num_threads(), forward_batch) if device.type == "cpu" else 1

    tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    out: dict[str, np.ndarray] = {}
    c: int | None = None
    disable = (not sys.stderr.isatty()) if progress is None else not progress
    total = k_views * -(-n // batch_size)
    bar = tqdm(total=total, desc="teacher cache", unit="batch", disable=disable, leave=False)
    with bar, _Forward(model, forward_batch, streams, fmt) as forward:
        with torch.inference_mode():  # the outputs go to disk as numpy, never into autograd
            for start in range(0, n, batch_size):
                sl = slice(start, min(start + batch_size, n))
                xb = x_train[sl].to(device)
                for k in range(k_views):
                    z = forward(view_of(xb, k, sl))  # (B, C) float32 on the CPU
                    if c is None:
                        c = z.shape[1]
                        out = _open_arrays(tmp, k_views, n, c, topk)
                    if topk:
                        vals, idx, tail = compress_topk(z, min(topk, c))
                        out["values"][k, sl] = vals.numpy()
                        out["indices"][k, sl] = idx.numpy()
                        out["tail"][k, sl] = tail.numpy()
                    else:
                        out["logits"][k, sl] = z.numpy()
                    bar.update(1)
    teacher.train(was_training)
    del model
    np.save(tmp / "views.npy", views_np)
    for arr in out.values():
        arr.flush()
    del out
    names = ["views", *(["values", "indices", "tail"] if topk else ["logits"])]
    files = {name: sha256_file(tmp / f"{name}.npy") for name in names}
    sizes = {name: (tmp / f"{name}.npy").stat().st_size for name in names}
    meta = {
        "format": FORMAT,
        "key": key,
        "views": k_views,
        "num_samples": n,
        "num_classes": c,
        "topk": min(topk, c) if topk else None,
        "seed": seed,
        "augment": spec.describe(),
        "files": files,
        "sizes": sizes,
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    shutil.rmtree(path, ignore_errors=True)  # a corrupted or stale copy of this key
    try:
        os.replace(tmp, path)
    except OSError:  # another process finished the same key first; keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
        return False
    return True


def _view_columns(v: Views) -> Tensor:
    """``(N, 3)`` crop offsets and flip flag, ``(N, 10)`` with the speech columns: what ``views.npy`` stores."""
    cols = torch.stack([v.dy, v.dx, v.flip.long()], 1)
    if v.speech is not None:
        if len(v.speech) and int(v.speech.abs().max()) >= 2**15:
            raise CacheError("a speech augmentation parameter does not fit the cache's int16 views")
        cols = torch.cat([cols, v.speech], 1)
    return cols


def _cpu_streams(threads: int, forward_batch: int) -> int:
    """How many forward passes run side by side on the CPU: a divisor of the torch threads, each stream's batch >= 32.

    Independent single-threaded passes keep the cores busier than one pass whose every small op is split over all
    threads (and waits for the slowest at its end), most of all on a loaded machine.
    """
    cap = max(1, min(threads, forward_batch // 32))
    return max(s for s in range(1, cap + 1) if threads % s == 0)


def open_cache(
    settings: CacheSettings,
    data: Any,
    teacher: nn.Module,
    *,
    directory: str | Path,
    device: torch.device | str = "cpu",
    channels_last: bool = False,
    progress: bool | None = None,
) -> TeacherCache | None:
    """The cache ``settings`` ask for over ``data`` (a DataModule's training split), or None for ``mode=off``.

    Under DDP rank 0 builds (or verifies) it while the other ranks wait, then every rank opens it.
    """
    if settings.mode == "off":
        return None
    if settings.mode == "fixed" and data.spec.enabled:
        raise ConfigError("cache.mode=fixed needs data.augment=false; with augmentation use cache.mode=views")
    kw = {
        "directory": Path(settings.dir) if settings.dir else Path(directory),
        "views": 1 if settings.mode == "fixed" else settings.views,
        "seed": data.seed,
        "topk": settings.topk,
        "device": device,
        "batch_size": data.eval_batch_size,
        "channels_last": channels_last,
        "progress": progress,
    }
    args = (teacher, data.x_train, data.spec, data.mean, data.std)
    cache = TeacherCache.build(*args, **kw) if D.is_main() else None
    D.barrier()
    return cache or TeacherCache.build(*args, **kw, write=False)

"""The teacher cache's format: its key (what must match for a cache to be reused), the top-k compression of the
stored logits, and the check of a cache directory against its metadata (see :mod:`distill.engine.cache`)."""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from distill.data.augment import AugmentSpec
from distill.io import sha256_file

FORMAT = 1


def hash_tensors(named: Iterable[tuple[str, Tensor]], h: Any = None) -> str:
    """sha256 over (name, dtype, shape, bytes) of each tensor, in the order given."""
    h = h or hashlib.sha256()
    for name, t in named:
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def model_hash(model: nn.Module) -> str:
    """sha256 of a model's weights and buffers (its ``state_dict``)."""
    return hash_tensors(model.state_dict().items())


def cache_key(
    teacher_sha: str, data_sha: str, spec: AugmentSpec, views: int, seed: int, topk: int | None, norm: Any
) -> str:
    desc = {
        "format": FORMAT,
        "teacher": teacher_sha,
        "data": data_sha,
        "augment": spec.describe(),  # crop and flip only, unless the speech augmentations are on
        "views": views,
        "seed": seed,
        "topk": topk,
        "normalize": norm,
    }
    return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()


def reconstruct_topk(values: Tensor, indices: Tensor, tail: Tensor, num_classes: int) -> Tensor:
    """Full ``(B, C)`` float32 logits from the top-k logits ``(B, k)``, their class ``indices`` and the tail logit."""
    out = tail.float()[:, None].expand(-1, num_classes).clone()
    return out.scatter_(1, indices.long(), values.float())


def compress_topk(logits: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(values, indices, tail)`` of ``(B, C)`` logits: the k largest and the log-mean-exp of the rest."""
    z = logits.float()
    c = z.shape[1]
    values, indices = z.topk(k, dim=1)
    if k >= c:
        return values, indices, torch.full((len(z),), -math.inf)
    rest = z.scatter(1, indices, -math.inf)  # top-k classes masked out
    tail = torch.logsumexp(rest, dim=1) - math.log(c - k)
    return values, indices, tail


def _verify(path: Path, key: str, checksums: bool = True) -> dict[str, Any] | None:
    """The cache's metadata when every file is present with its size and (``checksums``) its sha256, else None."""
    try:
        meta = json.loads((path / "meta.json").read_text())
        if meta.get("key") != key or meta.get("format") != FORMAT:
            return None
        for name, digest in meta["files"].items():
            f = path / f"{name}.npy"
            if f.stat().st_size != meta["sizes"][name] or (checksums and sha256_file(f) != digest):
                return None
        return meta
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _open_arrays(tmp: Path, k: int, n: int, c: int, topk: int | None) -> dict[str, np.ndarray]:
    def mm(name: str, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
        return np.lib.format.open_memmap(tmp / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)

    if not topk:
        return {"logits": mm("logits", np.float16, (k, n, c))}
    kk = min(topk, c)
    return {
        "values": mm("values", np.float16, (k, n, kk)),
        "indices": mm("indices", np.int16 if c < 2**15 else np.int32, (k, n, kk)),
        "tail": mm("tail", np.float16, (k, n)),
    }

"""Model cost: parameters, size on disk, CPU latency."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def size_on_disk(path: str | Path) -> int:
    return Path(path).stat().st_size


@contextmanager
def torch_threads(n: int | None):
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@torch.inference_mode()
def latency_ms(
    model: nn.Module,
    input_shape: Sequence[int],
    batch_size: int = 1,
    repeats: int = 20,
    warmup: int = 5,
    threads: int | None = None,
    min_seconds: float = 0.3,
) -> float:
    """Median wall-clock milliseconds of one forward pass of a ``batch_size`` batch on the CPU, in eval mode.

    At least ``repeats`` passes and at least ``min_seconds`` of them: sub-millisecond models need hundreds of
    passes before the median stops moving.
    """
    model = model.eval().cpu()
    x = torch.randn(batch_size, *input_shape)
    with torch_threads(threads):
        for _ in range(warmup):
            model(x)
        times: list[float] = []
        start = time.perf_counter()
        while len(times) < repeats or time.perf_counter() - start < min_seconds:
            t0 = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)

"""Model cost: parameters, size on disk, CPU latency.

:func:`time_ms` is the one latency timer of distill (images here, token batches in :mod:`distill.text.latency`,
onnxruntime sessions in :mod:`distill.compress.export`): ``torch.utils.benchmark.Timer.blocked_autorange``.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable, Sequence
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


def _timer() -> type:
    """``torch.utils.benchmark.Timer``, imported on first use. The import probes for a CUDA toolkit
    (``torch.utils.cpp_extension``), which logs a warning where ``CUDA_HOME`` exists without a CUDA runtime: noise on
    the command line's stderr, and nothing to do with timing on the CPU, so it is silenced for the import."""
    log = logging.getLogger("torch.utils.cpp_extension")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        from torch.utils.benchmark import Timer
    finally:
        log.setLevel(level)
    return Timer


def time_ms(
    fn: Callable[[], object],
    repeats: int = 20,
    warmup: int = 5,
    threads: int | None = None,
    min_seconds: float = 0.3,
) -> float:
    """Median milliseconds of one call of ``fn``, timed by ``torch.utils.benchmark.Timer.blocked_autorange``.

    Warm-up: ``warmup`` untimed calls first (lazy initialisation, first allocations, kernel caches), then the
    Timer's own block-size estimate (more untimed calls). Measured: blocks of calls (as many per block as make the
    timer's overhead negligible) for at least ``min_seconds`` and at least ``repeats`` blocks; the result is the
    median over blocks of the time per call. ``threads``: torch threads while timing (None: as set now).
    """
    threads = threads or torch.get_num_threads()
    with torch_threads(threads):
        for _ in range(warmup):
            fn()
    timer = _timer()(stmt="fn()", globals={"fn": fn}, num_threads=threads)
    m = timer.blocked_autorange(min_run_time=min_seconds)
    times = list(m.times)
    if len(times) < repeats:  # top up to ``repeats`` blocks, at the block time just measured
        block = m.number_per_run * statistics.median(times)
        times += timer.blocked_autorange(min_run_time=(repeats - len(times)) * block).times
    return statistics.median(times) * 1000


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
    """Median wall-clock milliseconds of one forward pass of a ``batch_size`` batch on the CPU, in eval mode
    (:func:`time_ms`: at least ``repeats`` timed blocks and ``min_seconds`` of them, after ``warmup`` passes).

    Sub-millisecond models need hundreds of passes before the median stops moving: ``min_seconds`` gives them.
    """
    model = model.eval().cpu()
    x = torch.randn(batch_size, *input_shape)
    return time_ms(lambda: model(x), repeats, warmup, threads, min_seconds)

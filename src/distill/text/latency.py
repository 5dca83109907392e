"""CPU latency of text models on token-id batches, and a student's speed-up timed in rounds alternating with its
teacher (see :mod:`distill.text.pipeline`)."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence

import torch
from torch import nn

from distill.report.bench import time_ms


@torch.inference_mode()
def text_latency_ms(
    model: nn.Module, seq_len: int, batch_size: int, vocab: int, repeats: int = 20, warmup: int = 3, threads: int = 0
) -> float:
    """Median CPU milliseconds of one forward of a ``batch_size × seq_len`` batch of token ids
    (:func:`~distill.report.bench.time_ms`: ``warmup`` passes, then at least ``repeats`` timed blocks)."""
    model = model.eval().cpu()
    g = torch.Generator().manual_seed(0)
    low = 1000 if vocab > 2000 else 1  # past BERT's special and unused ids when the vocabulary has them
    ids = torch.randint(low, vocab, (batch_size, seq_len), generator=g)
    mask = torch.ones_like(ids)
    return time_ms(lambda: model(ids, mask), repeats, warmup, threads or None, min_seconds=0.0)


def timed(model: nn.Module, seq_len: int, vocab: int, threads: int = 0) -> Callable[[int, int], float]:
    """``(batch_size, repeats) -> ms``: :func:`text_latency_ms` of ``model`` at ``seq_len`` tokens."""
    return lambda bs, n: text_latency_ms(model, seq_len, bs, vocab, n, threads=threads)


def paired_latency(
    teacher: Callable[[int, int], float],
    student: Callable[[int, int], float],
    batch_sizes: Sequence[int] = (1, 32),
    rounds: int = 5,
    repeats: int = 10,
) -> dict[str, float]:
    """A student's latency and speed-up, timed in alternating rounds with the teacher so that both see the same
    load of a shared machine: per batch size the median latencies and the median of the per-round ratios."""
    out: dict[str, float] = {}
    for bs in batch_sizes:
        pairs = [(teacher(bs, repeats), student(bs, repeats)) for _ in range(rounds)]
        out[f"latency_ms_b{bs}"] = statistics.median(s for _, s in pairs)
        out[f"teacher_latency_ms_b{bs}"] = statistics.median(t for t, _ in pairs)
        out[f"speedup_b{bs}"] = statistics.median(t / s for t, s in pairs)
    return out

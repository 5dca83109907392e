"""CPU latency of text models on token-id batches, and a student's speed-up timed in rounds alternating with its
teacher (see :mod:`distill.text.pipeline`)."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from pathlib import Path

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


def onnx_timed(
    model: nn.Module, path: str | Path, seq_len: int, vocab: int, threads: int = 0, max_length: int = 64
) -> Callable[[int, int], float]:
    """``(batch_size, repeats) -> ms`` of ``model`` exported to ONNX at ``path`` and run by onnxruntime on the CPU
    (``threads`` intra-op threads; 0: onnxruntime's default) on the same token ids as :func:`text_latency_ms`.

    onnxruntime runs the graph without Python between operators: what remains is the model's arithmetic, which
    is where a shallow student's batch-1 speed-up shows (PyTorch eager adds a per-call and per-module cost that
    does not shrink with the layers).
    """
    import numpy as np
    import onnxruntime as ort

    from distill.text.export import export_onnx

    model = model.eval().cpu()
    export_onnx(model, path, max_length=max_length, exporter="torchscript")
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    low = 1000 if vocab > 2000 else 1
    feeds: dict[int, dict[str, np.ndarray]] = {}

    def run(batch_size: int, repeats: int) -> float:
        if batch_size not in feeds:
            g = np.random.default_rng(0)
            ids = g.integers(low, vocab, (batch_size, seq_len), dtype=np.int64)
            feeds[batch_size] = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
        feed = feeds[batch_size]
        return time_ms(lambda: sess.run(None, feed), repeats, 3, min_seconds=0.0)

    return run

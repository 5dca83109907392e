"""The teacher's private inference copy for a cache build: BatchNorm folded into the convolutions, channels_last
weights, and forward passes split over CPU threads (see :mod:`distill.engine.cache`)."""

from __future__ import annotations

import copy
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor, fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

_CONV_BN = {nn.Conv1d: nn.BatchNorm1d, nn.Conv2d: nn.BatchNorm2d, nn.Conv3d: nn.BatchNorm3d}


def fold_batchnorm(model: nn.Module) -> fx.GraphModule | None:
    """``model`` (in eval mode) traced with torch.fx, each BatchNorm that only follows a convolution folded into it.

    Saves a pass over every such activation. None when the model cannot be traced or has no such pair. ``model``
    itself is not changed (the folded convolutions are new modules; the others are shared with it).
    """
    try:
        gm = fx.symbolic_trace(model)
    except Exception:  # data-dependent control flow and the like: run the model as it is
        return None
    modules = dict(gm.named_modules())
    calls = Counter(node.target for node in gm.graph.nodes if node.op == "call_module")
    folded = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
            continue
        prev, bn = node.args[0], modules[node.target]
        if not isinstance(prev, fx.Node) or prev.op != "call_module" or len(prev.users) != 1:
            continue
        conv = modules[prev.target]
        if _CONV_BN.get(type(conv)) is not type(bn) or not bn.track_running_stats or bn.running_mean is None:
            continue
        if calls[prev.target] != 1 or calls[node.target] != 1 or conv.training or bn.training:
            continue  # a module called twice, or one in training mode, is left alone
        gm.add_submodule(prev.target, fuse_conv_bn_eval(conv, bn))
        node.replace_all_uses_with(prev)
        gm.graph.erase_node(node)
        folded += 1
    if not folded:
        return None
    gm.graph.lint()
    gm.recompile()
    gm.delete_all_unused_submodules()
    return gm


def inference_copy(teacher: nn.Module, probe: Tensor, channels_last: bool = False) -> nn.Module:
    """A private eval-mode copy of ``teacher`` for the build: BatchNorm folded into the convolutions when the folded
    model's outputs on ``probe`` match the original's to float rounding, weights in channels_last when asked.

    A channels_last input goes with channels_last weights: on the CPU a channels_last input to contiguous weights is
    the slowest combination. ``teacher`` itself is left as it was.
    """
    try:
        model = copy.deepcopy(teacher).eval()
    except Exception:  # an un-copyable module: run the teacher itself, as it is (the caller restores its mode)
        return teacher.eval()
    folded = fold_batchnorm(model)
    if folded is not None:
        with torch.inference_mode():
            want, got = model(probe).float(), folded(probe).float()
        if torch.allclose(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()) + 1e-6):
            model = folded
    return model.to(memory_format=torch.channels_last) if channels_last else model


class _Forward:
    """``model`` over a block of inputs in forward batches of ``forward_batch``; with ``streams > 1`` every batch is
    split over that many threads, each running its part with ``threads / streams`` torch threads (restored after).
    """

    def __init__(self, model: nn.Module, forward_batch: int, streams: int, fmt: torch.memory_format) -> None:
        self.model, self.fmt, self.streams = model, fmt, streams
        self.size = -(-forward_batch // streams)
        self.pool: ThreadPoolExecutor | None = None
        self.threads = torch.get_num_threads()

    def __enter__(self) -> _Forward:
        if self.streams > 1:
            torch.set_num_threads(max(1, self.threads // self.streams))
            self.pool = ThreadPoolExecutor(self.streams, thread_name_prefix="teacher-cache")
        return self

    def __exit__(self, *exc: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            torch.set_num_threads(self.threads)

    def _one(self, x: Tensor) -> Tensor:
        with torch.inference_mode():  # grad mode is per thread: set it in the stream's own thread
            return self.model(x.contiguous(memory_format=self.fmt))

    def __call__(self, x: Tensor) -> Tensor:
        parts = x.split(self.size)
        outs = list(self.pool.map(self._one, parts)) if self.pool else [self._one(p) for p in parts]
        return torch.cat(outs).float().cpu()

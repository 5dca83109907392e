"""Data-parallel training under ``torchrun``: process group from the environment, rank helpers, DDP wrapping.

``torchrun --nproc_per_node=N -m distill run recipe.yaml`` starts N processes with ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK`` and ``MASTER_ADDR/PORT`` set; :func:`init_from_env` joins them into one group (gloo on the CPU,
NCCL on CUDA). Each rank trains on its own shard of the in-memory data
(:meth:`~distill.data.module.DataModule.shard`); only the trainable part of the distiller (student and adapters)
is synchronised — the frozen teacher is excluded from DDP; metrics are summed across ranks; only rank 0 writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_from_env(device: torch.device | str = "cpu") -> DistInfo:
    """Join the process group ``torchrun`` describes in the environment (idempotent); a single process is rank 0."""
    if dist.is_available() and dist.is_initialized():
        return info()
    if env_world_size() <= 1 or not dist.is_available():
        return DistInfo()
    device = torch.device(device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return info()


def info() -> DistInfo:
    if not (dist.is_available() and dist.is_initialized()):
        return DistInfo()
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def rank_device(device: torch.device | str) -> torch.device:
    """Under DDP on CUDA every rank gets its own GPU (``cuda:LOCAL_RANK``); otherwise ``device`` unchanged."""
    device = torch.device(device)
    if device.type == "cuda" and info().enabled:
        return torch.device("cuda", info().local_rank)
    return device


def is_main() -> bool:
    return info().is_main


def barrier() -> None:
    if info().enabled:
        dist.barrier()


def all_reduce_sum(t: Tensor) -> Tensor:
    """Sum ``t`` over ranks in place (a no-op for one process); returns ``t``."""
    if info().enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_object(obj: Any, src: int = 0) -> Any:
    if not info().enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def sync_buffers(model: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s buffers (BatchNorm running statistics) of everything but the teacher to all ranks.

    DDP broadcasts buffers at the start of each forward, so after the last step of an epoch every rank holds
    running statistics updated by its own shard; evaluation and checkpoints need the same ones everywhere.
    """
    if not info().enabled:
        return
    for name, buf in model.named_buffers():
        if not name.startswith("teacher."):
            dist.broadcast(buf, src=src)


def wrap_distiller(model: nn.Module, device: torch.device) -> nn.Module:
    """DDP-wrap a distiller with its teacher excluded (neither broadcast nor all-reduced).

    The distiller's state-dict keys stay as they are (the wrapper is only used to call ``forward``). Unused
    parameters are searched for only when trainable parameters outside the student exist (adapters that some
    stages of a method leave idle); the student alone always takes part in the loss.
    """
    if not info().enabled:
        return model
    ignore = [n for n, _ in model.named_parameters() if n.startswith("teacher.")]
    ignore += [n for n, _ in model.named_buffers() if n.startswith("teacher.")]
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, ignore)
    extra = any(p.requires_grad and not n.startswith(("student.", "teacher.")) for n, p in model.named_parameters())
    ids = [device.index if device.index is not None else 0] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=extra)


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()

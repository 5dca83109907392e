"""The trainer's checkpoints: the resumable state (:class:`TrainState`) and what a :class:`Checkpoints` mixin adds to
:class:`~distill.engine.trainer.Trainer` — saving and loading everything needed to resume (model, method state,
optimiser, scheduler, scaler, random generators, the teacher cache's identity) and the student's weights."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from torch import Tensor

from distill.artifacts import atomic_write, load_checkpoint, save_checkpoint
from distill.errors import DistillError
from distill.settings import OPTIMIZERS, SCHEDULES, OptimSettings  # noqa: F401  (re-exported)


@dataclass
class TrainState:
    epoch: int = 0  # completed epochs
    step: int = 0  # completed optimizer steps
    batch: int = 0  # completed batches of the unfinished epoch (non-zero only in a Ctrl-C checkpoint)
    best_acc: float = -1.0
    best_epoch: int = 0
    stop: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)


class Checkpoints:
    """Checkpointing for :class:`~distill.engine.trainer.Trainer`: uses its ``out_dir``, ``dist``, ``model``,
    ``optimizer``, ``scheduler``, ``scaler``, ``state`` and ``cache``."""

    @property
    def checkpoint_path(self) -> Path | None:
        return self.out_dir / "checkpoint.safetensors" if self.out_dir else None

    def _student_state(self) -> dict[str, Tensor]:
        return {k: v for k, v in self.model.state_dict().items() if not k.startswith("teacher.")}

    def save_checkpoint(self, partial: dict[str, Any] | None = None) -> None:
        """Write everything needed to resume; ``partial`` holds the running sums of an interrupted epoch."""
        if self.checkpoint_path is None or not self.dist.is_main:
            return
        rng = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": _np_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        save_checkpoint(
            self.checkpoint_path,
            {
                "model": self._student_state(),
                "extra": self.model.extra_state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "state": asdict(self.state),
                "rng": rng,
                "cache": {"key": self.cache.key, "views": self.cache.num_views} if self.cache else None,
                "partial": partial,
            },
        )

    def load_checkpoint(self, path: Path) -> None:
        ck = load_checkpoint(path)
        missing, unexpected = self.model.load_state_dict(ck["model"], strict=False)
        if unexpected or any(not k.startswith("teacher.") for k in missing):
            raise DistillError(
                f"checkpoint {path} does not fit this model (missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
        cached = ck.get("cache")
        if (cached or {}).get("key") != (self.cache.key if self.cache else None):
            raise DistillError(
                f"checkpoint {path} was trained with teacher cache {cached} but this run uses "
                f"{self.cache.key if self.cache else None}; resume with the same teacher, data and cache settings"
            )
        self.model.load_extra_state_dict(ck["extra"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.scheduler.load_state_dict(ck["scheduler"])
        if ck.get("scaler"):
            self.scaler.load_state_dict(ck["scaler"])
        self.state = TrainState(**ck["state"])
        self._partial = ck.get("partial")
        torch.set_rng_state(ck["rng"]["torch"])
        random.setstate(_as_tuple(ck["rng"]["python"]))
        _np_set_state(ck["rng"]["numpy"])
        if "cuda" in ck["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ck["rng"]["cuda"])

    def _save_student(self, name: str) -> None:
        if self.out_dir is None or not self.dist.is_main:
            return
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.export_student().state_dict().items()}
        atomic_write(self.out_dir / name, lambda tmp: save_file(state, tmp))


def _np_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "name": name,
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "cached": float(cached),
    }


def _np_set_state(s: dict[str, Any]) -> None:
    np.random.set_state((s["name"], s["keys"].numpy().astype(np.uint32), s["pos"], s["has_gauss"], s["cached"]))


def _as_tuple(o: Any) -> Any:
    return tuple(_as_tuple(v) for v in o) if isinstance(o, (list, tuple)) else o

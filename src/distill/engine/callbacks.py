"""Trainer callbacks: progress bar, metrics.jsonl, early stopping."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

if TYPE_CHECKING:
    from distill.engine.trainer import Trainer


class Callback:
    """Hooks the trainer calls; override what you need. Set ``trainer.state.stop = True`` to stop."""

    def on_fit_start(self, trainer: Trainer) -> None: ...

    def on_epoch_start(self, trainer: Trainer) -> None: ...

    def on_step_end(self, trainer: Trainer, losses: dict[str, float] | None) -> None: ...

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None: ...

    def on_fit_end(self, trainer: Trainer) -> None: ...


class ProgressBar(Callback):
    """A tqdm bar over all steps of the fit with ETA; loss parts shown as they are logged."""

    def __init__(self, desc: str = "train", enabled: bool | None = None) -> None:
        self.desc, self.enabled, self.bar = desc, enabled, None

    def on_fit_start(self, trainer: Trainer) -> None:
        total = trainer.epochs * trainer.data.steps_per_epoch()
        disable = (not sys.stderr.isatty()) if self.enabled is None else not self.enabled
        self.bar = tqdm(
            total=total,
            initial=trainer.state.step,
            desc=self.desc,
            unit="step",
            disable=disable,
            dynamic_ncols=True,
            leave=False,
        )

    def on_step_end(self, trainer: Trainer, losses: dict[str, float] | None) -> None:
        self.bar.update(1)
        if losses:
            self.bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items()}, refresh=False)

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        val = record.get("val", {})
        msg = f"{self.desc} epoch {record['epoch']}/{trainer.epochs} loss {record['train']['loss']:.4f}"
        if "acc" in val:
            msg += f" val acc {val['acc']:.4f}"
        msg += f" ({record['epoch_seconds']:.1f}s)"
        (self.bar.write if self.bar and not self.bar.disable else lambda m: print(m, file=sys.stderr))(msg)

    def on_fit_end(self, trainer: Trainer) -> None:
        if self.bar:
            self.bar.close()


class MetricsLogger(Callback):
    """Appends one JSON line per epoch to ``metrics.jsonl``; on resume, lines after the checkpoint are dropped."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def on_fit_start(self, trainer: Trainer) -> None:
        if self.path.exists():  # keep only the epochs the resumed state has seen
            lines = [ln for ln in self.path.read_text().splitlines() if ln.strip()]
            kept = [ln for ln in lines if json.loads(ln)["epoch"] <= trainer.state.epoch]
            self.path.write_text("".join(ln + "\n" for ln in kept))

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


class EarlyStopping(Callback):
    """Stop when validation accuracy has not improved for ``patience`` epochs."""

    def __init__(self, patience: int = 5, min_delta: float = 0.0) -> None:
        self.patience, self.min_delta = patience, min_delta

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if trainer.state.epoch - trainer.state.best_epoch >= self.patience:
            trainer.state.stop = True


class KeepBest(Callback):
    """Keep the weights of the best validation epoch in memory and put them back when training ends (Hugging Face's
    ``load_best_model_at_end``): with :class:`EarlyStopping`, the model returned is the one validation chose, not the
    last one trained. Ties keep the earlier epoch, as the trainer's ``best_epoch`` does."""

    def __init__(self) -> None:
        self.best: dict[str, Any] | None = None
        self.epoch = 0

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if trainer.state.best_epoch == trainer.state.epoch:
            student = trainer.model.export_student()
            self.best = {k: v.detach().clone() for k, v in student.state_dict().items()}
            self.epoch = trainer.state.epoch

    def on_fit_end(self, trainer: Trainer) -> None:
        if self.best is not None:
            trainer.model.export_student().load_state_dict(self.best)

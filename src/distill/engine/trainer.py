"""A small training loop for any :class:`~distill.distillers.base.Distiller` (``scratch`` trains teachers).

It backprops ``StepOutput.loss``, steps the optimizer and a per-step LR schedule, evaluates on the validation
split every epoch, and writes a resumable checkpoint after each epoch (atomically; nothing pickled). Data order
and augmentation depend only on (seed, epoch) — with a teacher cache, the replayed view is ``epoch mod K`` — so
resuming from an epoch checkpoint reproduces an uninterrupted run exactly in deterministic mode. Ctrl-C (SIGINT)
and SIGTERM (what schedulers and containers send) stop at the next step boundary with a mid-epoch checkpoint (the
step position and the epoch's partial sums) and raise :class:`~distill.errors.Interrupted` carrying the signal;
resuming skips the batches of that epoch already done, which is exact for the same reason.

Fast path: a :class:`~distill.engine.cache.TeacherCache` replaces the teacher's forward pass by stored logits;
``channels_last`` (student and teacher, or the teacher alone with ``teacher_channels_last``), autocast (``amp``),
``torch.compile`` of the student (``compile``); the loss is read on the host only every ``check_every`` steps.
Under ``torchrun`` (a process group initialised by :mod:`distill.engine.distributed`) the data are sharded by
rank, the distiller is DDP-wrapped with the teacher excluded, epoch metrics are summed over ranks, and only rank
0 writes files.

Test hook (not a user feature): with ``DISTILL_TEST_SIGNAL_AT_STEP=SIGNAL:STEP[:STAGE]`` in the environment, e.g.
``TERM:10:kd``, the trainer raises that signal in its own process (:func:`signal.raise_signal`, so the real handler
runs, before the call returns) right after global optimizer step ``STEP`` — only in the trainer whose ``out_dir`` is
named ``STAGE`` when one is given. Tests interrupt a run at an exact step this way instead of racing the clock.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from distill.data.module import DataModule
from distill.distillers.base import Distiller
from distill.engine import distributed as D
from distill.engine.cache import TeacherCache
from distill.engine.callbacks import Callback
from distill.engine.checkpoints import Checkpoints, TrainState
from distill.errors import ConfigError, DistillError, Interrupted, terminate_handler
from distill.report.metrics import classification_metrics, predict
from distill.settings import OPTIMIZERS, SCHEDULES, OptimSettings, check_amp  # noqa: F401  (re-exported)

TEST_SIGNAL_VAR = "DISTILL_TEST_SIGNAL_AT_STEP"  # the test hook (module docstring)
# The signals deferred to a step boundary, and the handlers that count as "still Python's default" for each.
DEFERRED_SIGNALS: dict[signal.Signals, tuple[Any, ...]] = {
    signal.SIGINT: (signal.default_int_handler,),
    signal.SIGTERM: (signal.SIG_DFL, terminate_handler),
}


class TrainingDiverged(DistillError):
    """The loss became NaN or infinite."""


def make_optimizer(params: list[torch.nn.Parameter], s: OptimSettings) -> torch.optim.Optimizer:
    if s.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=s.lr, momentum=s.momentum, nesterov=s.nesterov and s.momentum > 0, weight_decay=s.weight_decay
        )
    return torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)


def lr_factor(step: int, steps_per_epoch: int, s: OptimSettings) -> float:
    """LR multiplier at optimizer step ``step``: linear warm-up, then cosine / multistep / constant."""
    total = s.epochs * steps_per_epoch
    warm = int(s.warmup_epochs * steps_per_epoch)
    if step < warm:
        return (step + 1) / warm
    if s.schedule == "cosine":
        progress = (step - warm) / max(1, total - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    if s.schedule == "multistep":
        epoch = step / steps_per_epoch
        return s.gamma ** sum(epoch >= m for m in s.milestones)
    return 1.0


class Trainer(Checkpoints):
    """Trains ``model`` (a Distiller) on ``data``; writes checkpoints and weights into ``out_dir`` when given."""

    def __init__(
        self,
        model: Distiller,
        data: DataModule,
        optim: OptimSettings,
        *,
        device: str | torch.device = "cpu",
        out_dir: Path | None = None,
        callbacks: Sequence[Callback] = (),
        amp: str | None = None,
        channels_last: bool = False,
        teacher_channels_last: bool | None = None,
        check_every: int = 25,
        eval_split: str = "val",
        cache: TeacherCache | None = None,
        compile: bool = False,
    ) -> None:
        self.model, self.data, self.optim_settings = model, data, optim
        self.dist = D.info()
        self.device = D.rank_device(device)
        self.out_dir = Path(out_dir) if out_dir else None
        self.callbacks = list(callbacks)
        self.epochs = optim.epochs
        self.check_every = check_every
        self.eval_split = eval_split if len(data.split(eval_split)[0]) else "test"
        if cache is not None and (model.teacher_features or not model.needs_teacher):
            raise ConfigError(
                f"method {model.name!r} cannot use the teacher cache: "
                + (
                    "it needs the teacher's intermediate features and the cache holds logits only (use cache.mode=off)"
                    if model.needs_teacher
                    else "it has no teacher"
                )
            )
        self.cache = cache
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model.to(self.device, memory_format=self.memory_format) if channels_last else self.model.to(self.device)
        t_cl = channels_last if teacher_channels_last is None else teacher_channels_last
        if model.teacher is not None and t_cl != channels_last:  # convs follow the weights' format on the CPU
            model.teacher.to(memory_format=torch.channels_last if t_cl else torch.contiguous_format)
        if compile:
            model.student.compile()  # in place: state-dict keys are unchanged
        if self.dist.enabled:
            data.shard(self.dist.rank, self.dist.world_size)
        self.forward_model = D.wrap_distiller(model, self.device)
        self.optimizer = make_optimizer(model.trainable_parameters(), optim)
        spe = data.steps_per_epoch()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda st: lr_factor(st, spe, optim))
        check_amp(amp, self.device.type)
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp or "")
        self.scaler = torch.amp.GradScaler("cuda", enabled=amp == "fp16")
        self.state = TrainState()
        self._eval_teacher: Tensor | None = None
        self._partial: dict[str, Any] | None = None  # the interrupted epoch's running sums, from a checkpoint
        self._signal: int | None = None  # the signal that asked to stop, acted on at the next step boundary
        self._signal_at: tuple[signal.Signals, int] | None = None  # the test hook's (signal, step)

    # -- loop --------------------------------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> TrainState:
        if resume and self.checkpoint_path is not None and self.checkpoint_path.exists():
            self.load_checkpoint(self.checkpoint_path)
        self._signal_at = _test_signal_at(self.out_dir)
        for cb in self.callbacks:
            cb.on_fit_start(self)
        try:
            with self._deferred_signals():
                while self.state.epoch < self.epochs and not self.state.stop:
                    record = self.train_epoch()
                    for cb in self.callbacks:
                        cb.on_epoch_end(self, record)
                    self.save_checkpoint()
                    if self._signal:  # a signal during evaluation or the checkpoint: that checkpoint is the one
                        self._interrupt(None, save=False)
        finally:
            for cb in self.callbacks:
                cb.on_fit_end(self)
        return self.state

    def train_epoch(self) -> dict[str, Any]:
        for cb in self.callbacks:
            cb.on_epoch_start(self)
        self.model.train()
        epoch = self.state.epoch
        self.model.set_epoch(epoch, self.epochs)
        skip, partial, self._partial = self.state.batch, self._partial or {}, None  # resumed after Ctrl-C
        t0 = time.perf_counter() - partial.get("train_seconds", 0.0)
        sums: dict[str, Tensor] = {k: v.to(self.device) for k, v in partial.get("sums", {}).items()}
        n_batches, seen = partial.get("n_batches", 0), partial.get("seen", 0)
        zero = torch.zeros((), device=self.device)
        correct = partial["correct"].to(self.device) if "correct" in partial else zero
        labelled = partial["labelled"].to(self.device) if "labelled" in partial else zero.clone()
        autocast = torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype else nullcontext()
        for i, batch in enumerate(self.data.train_batches(epoch, self.device, cache=self.cache)):
            if i < skip:  # done before the interruption; the order is a function of (seed, epoch) alone
                continue
            x = batch.x.contiguous(memory_format=self.memory_format)
            with autocast:
                out = self.forward_model(x, batch.y, teacher_logits=batch.teacher_logits, index=batch.index)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(out.loss).backward()
            if self.optim_settings.grad_clip:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.model.trainable_parameters(), self.optim_settings.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            self.state.step += 1
            n_batches += 1
            seen += len(batch.y)
            correct += (out.logits.detach().argmax(1) == batch.y).sum()  # label -1 (unlabelled) never matches
            labelled += (batch.y >= 0).sum()
            parts = {"loss": out.loss.detach(), **{k: v.detach() for k, v in out.losses.items()}}
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v.float()
            logged = None
            if (i + 1) % self.check_every == 0:  # the only host syncs inside the epoch
                logged = {k: float(v) / n_batches for k, v in sums.items()}
                self._check_finite(logged["loss"], epoch, i)
            self.state.batch = i + 1
            for cb in self.callbacks:
                cb.on_step_end(self, logged)
            if self._signal_at is not None and self.state.step == self._signal_at[1]:
                signal.raise_signal(self._signal_at[0])  # the test hook; the handler has run when this returns
            if self._signal:
                running = {"n_batches": n_batches, "seen": seen, "correct": correct, "labelled": labelled, "sums": sums}
                self._interrupt({**running, "train_seconds": time.perf_counter() - t0})
        train, acc, seen = self._reduce(sums, n_batches, correct, labelled, seen)  # one host sync per epoch (all ranks)
        D.sync_buffers(self.model)  # every rank evaluates and saves rank 0's BatchNorm statistics
        self._check_finite(train.get("loss", 0.0), epoch, n_batches)
        train["acc"] = acc
        train_seconds = time.perf_counter() - t0
        val = self.evaluate(self.eval_split)
        self.state.epoch += 1
        self.state.batch = 0
        if val["acc"] > self.state.best_acc:
            self.state.best_acc, self.state.best_epoch = val["acc"], self.state.epoch
            self._save_student("best.safetensors")
        record = {
            "epoch": self.state.epoch,
            "step": self.state.step,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train": train,
            self.eval_split: val,
            "train_seconds": train_seconds,
            "epoch_seconds": time.perf_counter() - t0,
            "images_per_second": seen / train_seconds,
        }
        if self.eval_split != "val":
            record["val"] = val
        self.state.history.append(record)
        return record

    @contextmanager
    def _deferred_signals(self) -> Iterator[None]:
        """While training, SIGINT (Ctrl-C) and SIGTERM ask to stop at the next step boundary; a second stops at once.

        Only in the main thread of a single process, and only for a signal whose handler is still Python's default
        (``default_int_handler`` for SIGINT; SIG_DFL, or the CLI's :func:`~distill.errors.terminate_handler`, for
        SIGTERM). Under DDP (ranks would stop at different steps) and elsewhere a signal acts as usual and the last
        epoch's checkpoint is what a resume starts from. The previous handlers are put back afterwards.
        """
        self._signal = None
        if self.dist.enabled or threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.getsignal(s) for s in DEFERRED_SIGNALS}
        ours = [s for s, h in previous.items() if any(h is d for d in DEFERRED_SIGNALS[s])]

        def handler(signum: int, frame: Any) -> None:
            if self._signal:  # asked twice: stop now, without another checkpoint
                name = signal.Signals(signum).name
                raise Interrupted(
                    f"interrupted by {name} again; stopped at once; rerun with --resume to continue from the last "
                    "checkpoint",
                    signum,
                )
            self._signal = signum

        for s in ours:
            signal.signal(s, handler)
        try:
            yield
        finally:
            for s in ours:
                signal.signal(s, previous[s])

    def _interrupt(self, partial: dict[str, Any] | None, save: bool = True) -> None:
        """Write a resumable checkpoint (mid-epoch when ``partial`` is given) and raise :class:`Interrupted`."""
        if save:
            self.save_checkpoint(partial)
        signum = self._signal or signal.SIGINT
        spe = self.data.steps_per_epoch()
        where = (
            f"epoch {self.state.epoch + 1}/{self.epochs}, step {self.state.batch}/{spe}"
            if self.state.batch
            else f"after epoch {self.state.epoch}/{self.epochs}"
        )
        what = f"interrupted by {signal.Signals(signum).name} in {where}"
        if self.checkpoint_path is None:
            raise Interrupted(f"{what}; no checkpoint was written (the trainer has no out_dir)", signum)
        raise Interrupted(
            f"{what}; checkpoint saved to {self.checkpoint_path}; rerun with --resume to continue", signum
        )

    def _reduce(
        self, sums: dict[str, Tensor], n_batches: int, correct: Tensor, labelled: Tensor, seen: int
    ) -> tuple[dict[str, float], float, int]:
        """Epoch means of the loss parts and the accuracy on the labelled samples, summed over DDP ranks:
        ``(means, acc, samples)``."""
        keys = sorted(sums)
        counts = torch.tensor([float(n_batches), float(seen)], device=self.device)
        parts = [torch.as_tensor(sums[k], device=self.device).float().view(1) for k in keys]
        packed = torch.cat([*parts, correct.float().view(1), labelled.float().view(1), counts]).double()
        vals = D.all_reduce_sum(packed).tolist()
        batches, total = max(1.0, vals[-2]), int(vals[-1])
        acc = vals[len(keys)] / max(1.0, vals[len(keys) + 1])
        return {k: vals[i] / batches for i, k in enumerate(keys)}, acc, total

    def _check_finite(self, loss: float, epoch: int, step: int) -> None:
        if not math.isfinite(loss):
            kept = (
                f"; the last good checkpoint (epoch {self.state.epoch}) is kept at {self.checkpoint_path}"
                if (self.checkpoint_path and self.checkpoint_path.exists())
                else ""
            )
            raise TrainingDiverged(
                f"loss became {loss} in epoch {epoch + 1} near step {step + 1}{kept}; "
                "lower the learning rate, enable grad_clip, or check the data"
            )

    def evaluate(self, split: str = "val") -> dict[str, float]:
        student = self.model.export_student()
        logits, labels = predict(student, self.data.eval_batches(split, self.device), self.device)
        teacher = None
        if self.model.teacher is not None:
            if self._eval_teacher is None or len(self._eval_teacher) != len(labels):
                self._eval_teacher, _ = predict(
                    self.model.teacher, self.data.eval_batches(split, self.device), self.device
                )
            teacher = self._eval_teacher
        return classification_metrics(logits, labels, teacher)


def _test_signal_at(out_dir: Path | None) -> tuple[signal.Signals, int] | None:
    """The test hook's ``(signal, step)`` for a trainer writing to ``out_dir``; None when unset or for another stage."""
    spec = os.environ.get(TEST_SIGNAL_VAR, "").strip()
    if not spec:
        return None
    try:
        name, step, *stage = spec.split(":")
        sig = signal.Signals[name.upper() if name.upper().startswith("SIG") else f"SIG{name.upper()}"]
        at = int(step)
        if len(stage) > 1 or at < 1:
            raise ValueError(spec)
    except (KeyError, ValueError):
        raise ConfigError(f"{TEST_SIGNAL_VAR}={spec!r}: expected SIGNAL:STEP[:STAGE], e.g. 'TERM:10:kd'") from None
    if stage and (out_dir is None or out_dir.name != stage[0]):
        return None
    return sig, at

"""One training stage: fit a student with a method, save it, measure it; fine-tuning on the validation split
(part of :mod:`distill.api`)."""

from __future__ import annotations

import copy
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from torch import nn

from distill import config as C
from distill.artifacts import load_weights, save_model, write_json
from distill.data.base import ImageData
from distill.data.module import DataModule
from distill.distillers.base import build_distiller
from distill.engine import distributed as D
from distill.engine.cache import open_cache
from distill.engine.callbacks import MetricsLogger, ProgressBar
from distill.engine.setup import resolve_device
from distill.engine.tracking import tracking_callbacks
from distill.engine.trainer import OptimSettings, Trainer
from distill.errors import ConfigError
from distill.report.bench import count_params, latency_ms, size_on_disk
from distill.report.metrics import classification_metrics, predict


def fit(
    cfg: C.Config,
    dm: DataModule,
    data: ImageData,
    student: nn.Module,
    teacher: nn.Module | None,
    method: str,
    params: dict[str, Any],
    optim: OptimSettings,
    out: Path,
    label: str,
    resume: bool,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train ``student`` with ``method`` into model directory ``out`` (skipped when already done).

    Under ``torchrun`` every rank calls this; the data are sharded, the student is DDP-wrapped and only rank 0
    writes. With ``cache.mode`` views/fixed, logit methods read the teacher's outputs from a
    :class:`~distill.engine.cache.TeacherCache` (in ``cache.dir``, default ``<run>/teacher_cache``); methods that
    need the teacher's features run the teacher every step.
    """
    dist = D.init_from_env(resolve_device(cfg.device))
    device = D.rank_device(resolve_device(cfg.device))
    done = out / "done.json"
    if done.exists():  # a finished stage of a resumed run
        load_weights(student, out / "model.safetensors", what=label)
        return student.to(device), json.loads(done.read_text())
    distiller = build_distiller(method, student, teacher, dm.input_shape, len(dm.x_train), dm.num_classes, **params)
    if distiller.teacher is None:  # without a teacher, the unlabelled part of the training split teaches nothing
        dm = dm.labeled_only()
    t0 = time.perf_counter()
    cache = None
    if cfg.cache.mode != "off" and distiller.needs_teacher and distiller.teacher is not None:
        if distiller.teacher_features:
            if dist.is_main:
                print(f"{label}: method {method!r} needs the teacher's features; the logit cache is not used and the "
                      "teacher runs every step", file=sys.stderr)  # fmt: skip
        else:
            t_cl = cfg.channels_last if cfg.teacher_channels_last is None else cfg.teacher_channels_last
            cache = open_cache(
                cfg.cache, dm, distiller.teacher.to(device), directory=out.parent.parent / "teacher_cache",
                device=device, channels_last=t_cl,
            )  # fmt: skip
    cache_seconds = time.perf_counter() - t0
    trainer = Trainer(
        distiller,
        dm,
        optim,
        device=device,
        out_dir=out,
        amp=cfg.amp,
        channels_last=cfg.channels_last,
        teacher_channels_last=cfg.teacher_channels_last,
        compile=cfg.compile,
        cache=cache,
        callbacks=[
            ProgressBar(label),
            MetricsLogger(out / "metrics.jsonl"),
            *tracking_callbacks(
                out,
                label,
                tensorboard=cfg.tracking.tensorboard,
                mlflow=cfg.tracking.mlflow,
                params={"method": method, **params, **asdict(optim)},
            ),
        ]
        if dist.is_main
        else [],
    )
    state = trainer.fit(resume=resume)
    D.barrier()  # rank 0's best.safetensors is complete before anyone reads it
    distiller.close()
    if cfg.select == "best" and (out / "best.safetensors").exists():
        load_weights(student, out / "best.safetensors", what=label)
    info = {
        "method": method,
        "params": params,
        "epochs": state.epoch,
        "best_val_acc": state.best_acc,
        "best_epoch": state.best_epoch,
        "train_seconds": time.perf_counter() - t0,
        "cache_seconds": cache_seconds,  # building or verifying the teacher cache (0 without one)
        "sec_per_epoch": sum(r["train_seconds"] for r in state.history) / max(1, len(state.history)),
    }
    return student, info


def finish_stage(model: nn.Module, spec: dict, out: Path, info: dict) -> None:
    """Write a finished stage's model directory and ``done.json`` unless a resumed run already has them.

    Every rank calls this; rank 0 alone decides and writes, the others wait, so no rank can skip the barrier.
    """
    if D.is_main() and not (out / "model.json").exists():
        save_model(out, model, spec)
        write_json(out / "done.json", info)
    D.barrier()


def measure(model: nn.Module, weights: Path | list[Path], data: ImageData, bench: C.BenchConfig) -> dict[str, Any]:
    """Parameters, size on disk (summed over ``weights`` files) and CPU latency at each benchmark batch size."""
    files = weights if isinstance(weights, list) else [weights]
    row: dict[str, Any] = {"params": count_params(model), "size_bytes": sum(size_on_disk(w) for w in files)}
    if bench.latency:
        shape = (data.in_channels, *data.image_size)
        for bs in bench.batch_sizes:
            row[f"latency_ms_b{bs}"] = latency_ms(model, shape, bs, repeats=bench.repeats, threads=bench.threads)
    return row


def finetune_on_val(
    cfg: C.Config,
    dm: Any,
    student: nn.Module,
    teacher: nn.Module | None,
    out: Path,
    label: str,
    resume: bool,
) -> tuple[nn.Module, dict[str, Any]]:
    """Fine-tune a distilled ``student`` on the validation split (the recipe's ``flow`` section).

    Returns the student and the per-stage accuracies: validation after distillation, validation after
    fine-tuning (now seen in training, so an optimistic number) and test before/after fine-tuning; the test split
    is never used to choose anything. The fine-tuning run (checkpoints, metrics) lives in ``out/finetune``.
    """
    flow = cfg.flow
    if len(dm.x_val) == 0:
        raise ConfigError("flow.finetune_on_val needs a validation split; set data.val_size > 0")
    device = resolve_device(cfg.device)

    def acc(split: str) -> float:
        logits, y = predict(student.to(device), dm.eval_batches(split, device), device)
        return classification_metrics(logits, y)["acc"]

    stages = {"val_acc_distilled": acc("val"), "test_acc_distilled": acc("test")}
    val_dm = copy.copy(dm)  # the validation split becomes the training split; "val" still names it for logging
    val_dm.x_train, val_dm.y_train = dm.x_val, dm.y_val
    optim = replace(cfg.train, epochs=flow.finetune_epochs, lr=flow.finetune_lr, warmup_epochs=0.0)
    method = flow.finetune_method
    params = dict(flow.finetune_params)
    run_cfg = replace(cfg, select="last")  # choosing the best epoch on the data being trained on would mean nothing
    if getattr(cfg, "cache", None) is not None and cfg.cache.mode != "off":
        run_cfg = replace(run_cfg, cache=replace(cfg.cache, mode="off"))  # the cache holds the training split
    student, info = fit(
        run_cfg, val_dm, dm.data, student, teacher, method, params, optim, out / "finetune", label, resume
    )
    stages.update({"val_acc_finetuned": acc("val"), "test_acc_finetuned": acc("test")})
    return student, {
        "method": method,
        "params": params,
        "epochs": info["epochs"],
        "lr": flow.finetune_lr,
        "train_seconds": info["train_seconds"],
        **stages,
    }

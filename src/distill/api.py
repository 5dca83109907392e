"""The Python entry points: ``run`` (the whole pipeline), ``train``, ``distill``, ``evaluate``.

Each takes a :class:`~distill.config.Config` (or a recipe path) and turns it into keyword arguments for the
library; the library never sees a config object.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from distill import config as C
from distill.artifacts import load_model, load_weights, save_model, versions, write_json, write_manifest
from distill.data.base import ImageData, load_dataset  # noqa: F401  (load_dataset: importable from here, as before)
from distill.data.module import DataModule, load_datamodule
from distill.distillers import DISTILLERS
from distill.distillers.base import build_distiller, method_temperature
from distill.distillers.multi_teacher import MultiTeacher
from distill.engine import distributed as D
from distill.engine.cache import open_cache
from distill.engine.callbacks import MetricsLogger, ProgressBar
from distill.engine.setup import resolve_device, seed_everything
from distill.engine.tracking import log_run, tracking_callbacks
from distill.engine.trainer import OptimSettings, Trainer
from distill.errors import CheckpointError, ConfigError, DistillError
from distill.models.preprocess import adapt_input
from distill.models.transfer import init_from_teacher
from distill.models.zoo import create_model
from distill.report.bench import count_params, latency_ms, size_on_disk
from distill.report.html import save_predictions, write_html
from distill.report.markdown import write_reports
from distill.report.metrics import classification_metrics, predict
from distill.workflow import rundir


def as_config(cfg: C.Config | str | Path | None, overrides: tuple[str, ...] | list[str] = ()) -> C.Config:
    if isinstance(cfg, C.Config):
        return _with_overrides(cfg, overrides)
    return C.load_config(cfg, overrides)


def _with_overrides(cfg: C.Config, overrides: tuple[str, ...] | list[str]) -> C.Config:
    if not overrides:
        return cfg
    raw = C.to_dict(cfg)
    for text in overrides:
        C.apply_override(raw, *C.parse_override(text))
    return C.from_dict(C.Config, raw)


def load_data(cfg: C.Config) -> tuple[ImageData, DataModule]:
    return load_datamodule(cfg.data, cfg.seed)


def model_spec(m: C.ModelConfig, data: ImageData, **extra: Any) -> dict[str, Any]:
    """What ``model.json`` records: enough to rebuild the model and feed it correctly."""
    return {
        "model": m.model,
        "kwargs": dict(m.kwargs),
        "num_classes": data.num_classes,
        "in_channels": data.in_channels,
        "classes": list(data.classes),
        "preprocessing": {
            "input_shape": [data.in_channels, *data.image_size],
            "scale": getattr(data, "scale", 1 / 255),
            "mean": list(data.mean),
            "std": list(data.std),
        },
        "dataset": {"name": data.name, "fingerprint": data.fingerprint()},
        **extra,
    }


def build_model(m: C.ModelConfig, data: ImageData) -> nn.Module:
    return create_model(m.model, num_classes=data.num_classes, in_channels=data.in_channels, **m.kwargs)


def check_outputs(model: nn.Module, data: ImageData, what: str) -> None:
    """Refuse a model whose output size differs from the dataset's class count."""
    with torch.no_grad():
        was = model.training
        model.eval()
        shape = (1, data.in_channels, *data.image_size)
        try:
            out = model(torch.zeros(shape, device=next(model.parameters()).device))
        except RuntimeError as e:  # e.g. a CNN whose pooling leaves nothing of a tiny image
            raise ConfigError(f"{what} cannot take {data.name}'s input of shape {list(shape[1:])}: {e}") from e
        finally:
            model.train(was)
    if out.shape[-1] != data.num_classes:
        raise ConfigError(f"{what} has {out.shape[-1]} outputs but {data.name} has {data.num_classes} classes")


def load_teacher(
    path: str | Path, data: ImageData, public_key: str | Path | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    model, spec = load_model(Path(path), public_key=public_key)
    grey_to_rgb = data.in_channels == 1 and spec["in_channels"] == 3 and "preprocessing" in spec
    if spec["num_classes"] != data.num_classes or (spec["in_channels"] != data.in_channels and not grey_to_rgb):
        raise CheckpointError(
            f"teacher {path} was made for {spec['num_classes']} classes x {spec['in_channels']} channels, but "
            f"{data.name} has {data.num_classes} classes x {data.in_channels} channels"
        )
    # the teacher's own normalisation, size and channel order (model.json), applied to the data's batches
    note = adapt_input(model, spec, data, f"teacher {path}")
    if note and D.is_main():
        print(note, file=sys.stderr)
    return model, spec


def load_ensemble(dirs: list[str], data: ImageData, public_key: str | Path | None = None) -> nn.Module:
    """Several saved teachers as one frozen :class:`~distill.distillers.multi_teacher.MultiTeacher`.

    ``multi_kd`` distils from each member at its own temperature; any other method sees the ensemble's averaged
    distribution (at T = 1, then softened by the method's own temperature).
    """
    return MultiTeacher([load_teacher(d, data, public_key)[0] for d in dirs])


def _recipe_identity(text: str) -> Any:
    """What must be equal to resume a run: the recipe without where its progress is reported (tracking)."""
    import yaml

    raw = yaml.safe_load(text) or {}
    raw.pop("tracking", None)
    return raw


def run_inputs(cfg: C.Config, recipe: str | Path | None = None) -> list[tuple[str, str | Path | None]]:
    """What a run reads (recipe, teacher, ensemble, key, data root): ``--overwrite`` must never delete them."""
    return [
        ("the recipe", recipe),
        ("the teacher", cfg.teacher.checkpoint),
        *(("the ensemble member", m) for m in cfg.teacher.ensemble),
        ("the public key", cfg.teacher.public_key),
        ("the data root", cfg.data.root),
    ]


def _has_recipe(out: Path) -> bool:
    """A run directory from before run-directory markers: it holds the recipe (legacy rule for ``--resume``)."""
    return (out / "config.yaml").is_file()


def prepare_out_dir(
    out: Path,
    overwrite: bool,
    resume: bool,
    cfg: C.Config,
    *,
    kind: str = "run",
    inputs: list[tuple[str, str | Path | None]] | None = None,
) -> None:
    """Create ``out`` with the recipe in it; an existing non-empty one is resumed (same recipe only), replaced
    (only a distill directory none of whose inputs lie in it) or refused: see :mod:`distill.workflow.rundir`."""
    inputs = run_inputs(cfg) if inputs is None else inputs
    action = rundir.prepare(out, kind=kind, overwrite=overwrite, resume=resume, inputs=inputs, resumable=_has_recipe)
    saved = out / "config.yaml"
    if action == "resume" and saved.exists():
        if _recipe_identity(saved.read_text()) != _recipe_identity(C.dump_yaml(cfg)):
            raise ConfigError(
                f"{out} was made with a different recipe; resume it with the same one, or choose another --out"
            )
        return
    try:
        saved.write_text(C.dump_yaml(cfg))
    except OSError as e:
        raise DistillError(f"cannot write {saved}: {e.strerror or e}") from e


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


def run(
    cfg: C.Config | str | Path,
    out: str | Path | None = None,
    overrides: tuple[str, ...] | list[str] = (),
    overwrite: bool = False,
    resume: bool = False,
) -> dict[str, Any]:
    """The whole pipeline: teacher (trained or loaded) → one student per method → evaluation → report."""
    recipe_path = cfg if isinstance(cfg, (str, Path)) else None
    recipe_name = Path(cfg).stem if isinstance(cfg, (str, Path)) else "run"
    cfg = as_config(cfg, overrides)
    inputs = run_inputs(cfg, recipe_path)
    if out:  # refuse a bad --out now, before minutes of loading (prepare_out_dir checks again)
        rundir.check(out, kind="run", overwrite=overwrite, resume=resume, inputs=inputs, resumable=_has_recipe)
    out = Path(out) if out else Path("runs") / f"{recipe_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    t_start = time.perf_counter()
    seed_everything(cfg.seed, cfg.deterministic)
    data, dm = load_data(cfg)
    device = resolve_device(cfg.device)
    D.init_from_env(device)  # under torchrun: every rank runs this; only rank 0 writes
    out = Path(D.broadcast_object(str(out)))  # the default name has a timestamp: all ranks use rank 0's
    # Build everything once before any training so that a bad name or parameter fails in seconds, not after the teacher.
    validate_recipe(cfg, data, dm)
    if D.is_main():
        prepare_out_dir(out, overwrite, resume, cfg, inputs=inputs)
    D.barrier()

    teacher_dir = out / "teacher"
    if cfg.teacher.ensemble:
        teacher = load_ensemble(cfg.teacher.ensemble, data, cfg.teacher.public_key)
        t_info = {"method": "ensemble", "members": list(cfg.teacher.ensemble)}
        if D.is_main():
            write_json(teacher_dir / "ensemble.json", t_info)
    elif cfg.teacher.checkpoint:
        teacher, t_spec = load_teacher(cfg.teacher.checkpoint, data, cfg.teacher.public_key)
        t_info = {"method": "loaded", "source": str(cfg.teacher.checkpoint)}
        finish_stage(teacher, t_spec, teacher_dir, t_info)
    else:
        torch.manual_seed(cfg.seed)
        teacher = build_model(cfg.teacher, data)
        teacher, t_info = fit(
            cfg, dm, data, teacher, None, "scratch", {}, cfg.teacher.train, teacher_dir, "teacher", resume
        )
        finish_stage(teacher, model_spec(cfg.teacher, data), teacher_dir, t_info)
    teacher = teacher.to(device).eval()
    t_test, y_test = predict(teacher, dm.eval_batches("test", device), device)
    if D.is_main():
        save_predictions(teacher_dir, t_test, y_test)  # for report.html: per-class, confusion, calibration
    rows = {
        "teacher": {
            "name": "teacher",
            "method": t_info["method"],
            "model": cfg.teacher.model,
            **classification_metrics(t_test, y_test),
            **t_info,
        }
    }

    students = []
    for m in cfg.methods:
        label = m.label or m.name
        sdir = out / "students" / label
        torch.manual_seed(cfg.seed + 1)  # every student starts from the same initial weights
        student = build_model(cfg.student, data)
        transfer = init_from_teacher(student, teacher, cfg.student.init_from_teacher, dm.input_shape)
        optim = C.method_optim(cfg, m)
        student, info = fit(cfg, dm, data, student, teacher, m.name, m.params, optim, sdir, label, resume)
        if transfer.mode != "none":
            info.setdefault("init_from_teacher", transfer.summary())
        if cfg.flow.finetune_on_val and "flow" not in info:  # "flow" is in a resumed stage's done.json
            student, info["flow"] = finetune_on_val(cfg, dm, student, teacher, sdir, label, resume)
        finish_stage(
            student,
            model_spec(cfg.student, data, method=m.name, params=m.params, teacher=str(teacher_dir)),
            sdir,
            info,
        )
        logits, _ = predict(student, dm.eval_batches("test", device), device)
        if D.is_main():
            save_predictions(sdir, logits, y_test)
        students.append(
            {
                "name": label,
                "method": m.name,
                "model": cfg.student.model,
                **classification_metrics(logits, y_test, t_test),
                **info,
            }
        )

    if not D.is_main():  # rank 0 alone measures and writes the reports
        return {"out": str(out), "rank": D.info().rank}
    t_weights = [Path(m) / "model.safetensors" for m in cfg.teacher.ensemble] or [teacher_dir / "model.safetensors"]
    rows["teacher"].update(measure(teacher, t_weights, data, cfg.bench))
    for row in students:
        model, _ = load_model(out / "students" / row["name"])
        row.update(measure(model, out / "students" / row["name"] / "model.safetensors", data, cfg.bench))
    report = build_report(cfg, data, rows["teacher"], students, time.perf_counter() - t_start)
    write_reports(out, report)
    write_run_html([out], out / "report.html")
    log_run(out, report, cfg.tracking.mlflow)  # MLflow (when on): final metrics, reports, students
    write_manifest(out, {"config": C.to_dict(cfg), "metrics": {r["name"]: r["accuracy"] for r in students}})
    report["out"] = str(out)
    return report


def train(
    cfg: C.Config | str | Path, out: str | Path | None = None, overrides: tuple[str, ...] | list[str] = (), **kw: Any
) -> dict[str, Any]:
    """Train (or load) the recipe's teacher only."""
    return run(cfg, out, [*overrides, "methods=[]"], **kw)


def distill(
    cfg: C.Config | str | Path,
    teacher: str | Path,
    out: str | Path | None = None,
    overrides: tuple[str, ...] | list[str] = (),
    **kw: Any,
) -> dict[str, Any]:
    """Distil the recipe's students from the saved teacher in model directory ``teacher``."""
    return run(cfg, out, [*overrides, f"teacher.checkpoint={json.dumps(str(teacher))}"], **kw)


def validate_recipe(cfg: C.Config, data: ImageData, dm: DataModule) -> None:
    """Instantiate every model and method on the real shapes; raises on any bad name, parameter or class count."""
    device = resolve_device(cfg.device)
    if cfg.amp not in (None, "bf16", "fp16"):
        raise ConfigError(f"amp must be null, 'bf16' or 'fp16', got {cfg.amp!r}")
    if cfg.amp == "fp16" and device.type != "cuda":
        raise ConfigError("amp='fp16' needs a CUDA device; use amp='bf16' on the CPU")
    if cfg.teacher.ensemble:
        teacher = load_ensemble(cfg.teacher.ensemble, data, cfg.teacher.public_key)
    elif cfg.teacher.checkpoint:
        teacher = load_teacher(cfg.teacher.checkpoint, data, cfg.teacher.public_key)[0]
    else:
        teacher = build_model(cfg.teacher, data)
    check_outputs(teacher, data, f"teacher {cfg.teacher.model!r}")
    for m in cfg.methods:
        _check_black_box(m.name, teacher)
        student = build_model(cfg.student, data)
        check_outputs(student, data, f"student {cfg.student.model!r}")
        init_from_teacher(student, teacher, cfg.student.init_from_teacher, dm.input_shape)
        d = build_distiller(m.name, student, teacher, dm.input_shape, len(dm.x_train), dm.num_classes, **m.params)
        d.close()
        if dm.num_labeled < len(dm.x_train) and d.needs_every_label:
            raise ConfigError(
                f"method {m.name!r} needs a label on every training image, but data.labeled_fraction="
                f"{cfg.data.labeled_fraction} leaves {len(dm.x_train) - dm.num_labeled} without one; use a method "
                "that learns from the teacher alone on unlabelled images (kd, hard, dist, ...) or labeled_fraction=1"
            )


def _check_black_box(method: str, teacher: nn.Module) -> None:
    """Refuse a method that reads the teacher's features when the teacher is a black box (an ONNX graph)."""
    if getattr(teacher, "black_box", False) and getattr(DISTILLERS.get(method), "teacher_features", False):
        raise ConfigError(
            f"method {method!r} reads the teacher's intermediate features, but the teacher is an ONNX model (a black "
            "box: logits only); use a logit method such as kd, dkd, dist or hard"
        )


def build_report(cfg: C.Config, data: ImageData, teacher: dict, students: list[dict], seconds: float) -> dict[str, Any]:
    teacher["accuracy"] = teacher.pop("acc")
    scratch = next((s for s in students if s["method"] == "scratch"), None)
    for s in students:
        s["accuracy"] = s.pop("acc")
    for s in students:
        for bs in cfg.bench.batch_sizes:
            k = f"latency_ms_b{bs}"
            if k in s and k in teacher:
                s[f"speedup_b{bs}"] = teacher[k] / s[k]
        gap = teacher["accuracy"] - scratch["accuracy"] if scratch else 0.0
        s["gap_recovered"] = (s["accuracy"] - scratch["accuracy"]) / gap if scratch and gap > 0 else None
    return {
        "dataset": {
            "name": data.name,
            "train": len(data.x_train),
            "test": len(data.x_test),
            "classes": data.num_classes,
            "fingerprint": data.fingerprint(),
        },
        "teacher": teacher,
        "students": students,
        "seconds": seconds,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "versions": versions(),
        "config": asdict(cfg),
    }


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


def recompute_predictions(run_dir: Path, model_dirs: list[Path]) -> dict[Path, tuple[np.ndarray, np.ndarray]]:
    """Run each saved model on the test split of the run's recipe: what ``report.html`` shows for runs made before
    test-set logits were saved (passed to :func:`distill.report.html.write_html` as ``rerun``)."""
    cfg = C.load_config(Path(run_dir) / "config.yaml")
    _, dm = load_data(cfg)
    out = {}
    for d in model_dirs:
        model, _ = load_model(d)
        logits, y = predict(model, dm.eval_batches("test", "cpu"), "cpu")
        out[d] = (logits.numpy(), y.numpy())
    return out


def write_run_html(paths: list[Path] | Path, out_file: Path) -> Path:
    """``report.html`` of runs and sweeps, with the models of older runs re-run and methods' default temperatures."""
    return write_html(paths, out_file, rerun=recompute_predictions, temperature=method_temperature)


def evaluate(
    model_dir: str | Path,
    cfg: C.Config | str | Path | None = None,
    split: str = "test",
    overrides: tuple[str, ...] | list[str] = (),
) -> dict[str, float]:
    """Accuracy, top-5, NLL and ECE of a saved model on ``split`` of the recipe's dataset."""
    cfg = as_config(cfg, overrides)
    data, dm = load_data(cfg)
    model, spec = load_teacher(model_dir, data)
    device = resolve_device(cfg.device)
    logits, y = predict(model.to(device), dm.eval_batches(split, device), device)
    return {"model": spec["model"], "split": split, "n": len(y), **classification_metrics(logits, y)}

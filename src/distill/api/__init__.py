"""The Python entry points: ``run`` (the whole pipeline), ``train``, ``distill``, ``evaluate``.

Each takes a :class:`~distill.config.Config` (or a recipe path) and turns it into keyword arguments for the
library; the library never sees a config object.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from distill import config as C
from distill.api.recipe import (
    _has_recipe,
    as_config,
    build_model,
    check_outputs,
    load_data,
    model_spec,
    prepare_out_dir,
    run_inputs,
    validate_recipe,
)
from distill.api.reports import build_report, recompute_predictions, write_run_html
from distill.api.stage import finetune_on_val, finish_stage, fit, measure
from distill.api.teachers import load_ensemble, load_teacher
from distill.artifacts import load_model, write_json, write_manifest
from distill.data.base import ImageData, load_dataset
from distill.engine import distributed as D
from distill.engine.setup import resolve_device, seed_everything
from distill.engine.tracking import log_run
from distill.models.transfer import init_from_teacher
from distill.report.examples import save_examples
from distill.report.html import save_predictions
from distill.report.markdown import write_reports
from distill.report.metrics import classification_metrics, predict
from distill.workflow import rundir

# the pieces live in distill.api.recipe, .teachers, .stage and .reports; every name stays importable from here
__all__ = [
    "ImageData",
    "as_config",
    "build_model",
    "build_report",
    "check_outputs",
    "distill",
    "evaluate",
    "finetune_on_val",
    "finish_stage",
    "fit",
    "load_data",
    "load_dataset",
    "load_ensemble",
    "load_teacher",
    "measure",
    "model_spec",
    "prepare_out_dir",
    "recompute_predictions",
    "resolve_device",
    "run",
    "run_inputs",
    "seed_everything",
    "train",
    "validate_recipe",
    "write_run_html",
]


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
        save_examples(out, data.x_test, data.y_test, data.classes, getattr(data, "meta", None))  # "Inputs" figure
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

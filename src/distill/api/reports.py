"""The run's report: the rows of report.json, and report.html with older runs' predictions recomputed (part of
:mod:`distill.api`)."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from distill import config as C
from distill.api.recipe import load_data
from distill.artifacts import load_model, versions
from distill.data.base import ImageData
from distill.distillers.base import method_temperature
from distill.report.html import write_html
from distill.report.metrics import predict


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

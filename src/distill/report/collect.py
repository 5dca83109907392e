"""What ``report.html`` is made of: each run's models, rows, histories and saved test-set predictions, and each
sweep's ``sweep.json`` (read from the run and sweep directories; see :mod:`distill.report.html`)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from distill.artifacts import atomic_write
from distill.errors import DistillError
from distill.report.examples import Examples, load_examples

PREDICTIONS = "test_logits.safetensors"

Predictions = dict[Path, tuple[np.ndarray, np.ndarray]]  # model directory -> (test logits (N, K), labels (N,))
Rerun = Callable[[Path, list[Path]], Predictions]  # (run directory, model directories) -> their test predictions
Temperature = Callable[[str, dict[str, Any]], "float | None"]  # (method, params) -> its softening temperature


def save_predictions(model_dir: Path, logits: torch.Tensor, labels: torch.Tensor) -> Path:
    """Store a model's test-set ``logits`` ``(N, K)`` and ``labels`` ``(N,)`` for the report."""
    path = Path(model_dir) / PREDICTIONS
    state = {"logits": logits.detach().float().cpu().contiguous(), "labels": labels.detach().long().cpu().contiguous()}
    atomic_write(path, lambda tmp: save_file(state, tmp))
    return path


def load_predictions(model_dir: Path) -> tuple[np.ndarray, np.ndarray] | None:
    path = Path(model_dir) / PREDICTIONS
    if not path.is_file():
        return None
    t = load_file(str(path))
    return t["logits"].numpy(), t["labels"].numpy()


# -- what a page is made of ----------------------------------------------------------------------------------------


@dataclass
class Model:
    name: str  # display name (prefixed by the run when the page compares several)
    row: dict[str, Any]  # the model's row of report.json
    dir: Path
    spec: dict[str, Any]  # model.json
    history: list[dict[str, Any]]  # metrics.jsonl
    logits: np.ndarray | None = None
    temperature: float | None = None  # the distillation temperature, for methods that soften with one


@dataclass
class Run:
    dir: Path
    name: str
    report: dict[str, Any]
    models: list[Model]  # the teacher first
    classes: list[str]
    labels: np.ndarray | None = None
    note: str = ""  # why predictions are missing, when they are
    examples: Examples | None = None  # a few test inputs (examples.safetensors), when the run saved them


@dataclass
class Sweep:
    dir: Path
    name: str
    data: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def collect_run(
    run_dir: Path, prefix: str = "", rerun: Rerun | None = None, temperature: Temperature | None = None
) -> Run:
    run_dir = Path(run_dir)
    report = _read_json(run_dir / "report.json")
    if "teacher" not in report or "students" not in report:  # e.g. a distill compress output directory
        what = (
            f"{run_dir} is a distill {report['kind']} output (its table is report.md there), not a run"
            if isinstance(report.get("kind"), str)
            else f"{run_dir}/report.json has no teacher and students: not a run's report"
        )
        raise DistillError(f"{what}; distill report renders run directories (distill run / train / distill) and sweeps")
    entries = [(report["teacher"], run_dir / "teacher")]
    entries += [(s, run_dir / "students" / s["name"]) for s in report["students"]]
    models = []
    for row, d in entries:
        spec = _read_json(d / "model.json")
        m = Model(prefix + row["name"], row, d, spec, _read_jsonl(d / "metrics.jsonl"))
        if d.name != "teacher" and row.get("method") not in (None, "scratch", "loaded"):
            params = spec.get("params") or {}
            if "temperature" in params:
                m.temperature = float(params["temperature"])
            elif temperature is not None:
                m.temperature = temperature(row["method"], params)
        models.append(m)
    classes = models[0].spec.get("classes") or [str(i) for i in range(report["dataset"]["classes"])]
    run = Run(run_dir, run_dir.resolve().name, report, models, [str(c) for c in classes])
    run.examples = load_examples(run_dir)
    _attach_predictions(run, rerun)
    return run


def _attach_predictions(run: Run, rerun: Rerun | None) -> None:
    loaded = {m.dir: load_predictions(m.dir) for m in run.models}
    if any(v is None for v in loaded.values()):
        if rerun is None:
            run.note = "test-set predictions are not available (not saved); per-class, confusion, calibration omitted"
            return
        try:
            loaded = rerun(run.dir, [m.dir for m in run.models])
        except (DistillError, OSError, KeyError) as e:
            run.note = f"test-set predictions are not available ({e}); per-class, confusion and calibration omitted"
            return
    for m in run.models:
        m.logits, run.labels = loaded[m.dir]


def collect_sweep(sweep_dir: Path) -> Sweep:
    sweep_dir = Path(sweep_dir)
    return Sweep(sweep_dir, sweep_dir.resolve().name, _read_json(sweep_dir / "sweep.json"))


def collect(
    paths: list[Path], rerun: Rerun | None = None, temperature: Temperature | None = None
) -> tuple[list[Run], list[Sweep]]:
    runs, sweeps = [], []
    multi = len(paths) > 1
    for p in map(Path, paths):
        if (p / "sweep.json").is_file():
            sweeps.append(collect_sweep(p))
        elif (p / "report.json").is_file():
            runs.append(collect_run(p, f"{p.resolve().name}/" if multi else "", rerun, temperature))
        else:
            raise DistillError(f"{p} has neither report.json (a run) nor sweep.json (a sweep); is it finished?")
    return runs, sweeps

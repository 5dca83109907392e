"""The sweep's summary: each trial's line, the Pareto front or best trial, and the automatically chosen student
(part of :mod:`distill.sweep`)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from distill.sweep.trials import _Context


def _trial_line(t: Any) -> str:
    a = t.user_attrs
    cost = f"{a.get('params_count', 0):,} params, {a.get('latency_ms_b1', float('nan')):.3f} ms"
    state = t.state.name.lower()
    if state == "complete":
        return (
            f"trial {t.number}: val acc {a.get('val_acc', float('nan')):.4f}, test acc {a.get('accuracy'):.4f}; {cost}"
        )
    return f"trial {t.number}: {state}; {cost}"


def _copy_model(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("model.json", "model.safetensors"):
        shutil.copy2(src / name, dst / name)


def summarize(
    study: Any,
    ctx: _Context,
    objective: str,
    storage: str,
    study_name: str,
    budget_params: int | None,
    budget_latency_ms: float | None,
    auto_student: float | None,
) -> dict[str, Any]:
    """What ``sweep.json`` holds: the teacher, every trial, the best trial(s) and the auto-student choice."""
    from optuna.trial import TrialState

    trials = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        trials.append(
            {
                "number": t.number,
                "state": t.state.name,
                "params": dict(t.params),
                "values": list(t.values) if t.values else None,
                "val_acc": a.get("val_acc"),
                "accuracy": a.get("accuracy"),
                "agreement": a.get("agreement"),
                "ece": a.get("ece"),
                "params_count": a.get("params_count"),
                "size_bytes": a.get("size_bytes"),
                "latency_ms_b1": a.get("latency_ms_b1"),
                "model": a.get("model"),
                "kwargs": a.get("kwargs"),
                "method_params": a.get("method_params"),
                "dir": a.get("dir"),
            }
        )
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        best = []
    elif len(study.directions) > 1:
        best = sorted(t.number for t in study.best_trials)
    else:
        best = [study.best_trial.number]
    budget = {"params": budget_params} if budget_params is not None else None
    if budget_latency_ms is not None:
        budget = {"latency_ms_b1": budget_latency_ms}
    result = {
        "study": study_name,
        "storage": storage,
        "objective": objective,
        "directions": [d.name.lower() for d in study.directions],
        "budget": budget,
        "dataset": {
            "name": ctx.data.name,
            "train": len(ctx.data.x_train),
            "test": len(ctx.data.x_test),
            "classes": ctx.data.num_classes,
        },
        "teacher": ctx.teacher_row,
        "trials": trials,
        "best": best,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    if auto_student is not None:
        result["auto_student"] = choose_auto_student(trials, ctx.teacher_row["val_acc"], auto_student)
    return result


def choose_auto_student(trials: list[dict[str, Any]], teacher_val_acc: float, points: float) -> dict[str, Any]:
    """The finished trial with the fewest parameters whose validation accuracy is at least the teacher's minus
    ``points`` percentage points (ties: the more accurate); ``trial`` is None when no trial qualifies."""
    threshold = teacher_val_acc - points / 100
    ok = [t for t in trials if t["state"] == "COMPLETE" and t.get("val_acc") is not None and t["val_acc"] >= threshold]
    out: dict[str, Any] = {"points": points, "teacher_val_acc": teacher_val_acc, "threshold": threshold, "trial": None}
    if ok:
        t = min(ok, key=lambda t: (t["params_count"], -t["val_acc"]))
        out.update(
            {
                "trial": t["number"],
                "params_count": t["params_count"],
                "val_acc": t["val_acc"],
                "accuracy": t["accuracy"],
                "model": t["model"],
                "kwargs": t["kwargs"],
                "method_params": t["method_params"],
                "lr": t["params"].get("lr"),
                "dir": t["dir"],
            }
        )
    return out

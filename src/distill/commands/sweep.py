"""``distill sweep RECIPE``: an Optuna search of the student's size and the distillation hyper-parameters."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from distill.commands import add_overrides


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="search temperature, alpha, learning rate and the student's width/depth (Optuna; resumable)",
        description="Each trial distils a student from the recipe's teacher (trained once, in OUT/teacher). "
        "Trials are scored on validation accuracy; the study is kept in SQLite, so running the same command "
        "again resumes it up to --trials finished trials. Writes OUT/sweep.json and OUT/report.html.",
    )
    p.add_argument("recipe", type=Path)
    p.add_argument("--trials", type=int, default=10, help="finished trials wanted in total (default 10)")
    p.add_argument(
        "--objective",
        choices=["acc", "acc_latency", "acc_params"],
        help="acc: best accuracy (under a budget); acc_latency / acc_params: the Pareto front of accuracy "
        "against batch-1 CPU latency / parameters (default: acc, or acc_params with --auto-student)",
    )
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--budget-params", type=int, metavar="N", help="students above N parameters are pruned")
    budget.add_argument("--budget-latency-ms", type=float, metavar="X", help="students slower than X ms are pruned")
    p.add_argument("--storage", help="Optuna storage URL (default: sqlite:///OUT/study.db)")
    p.add_argument("--study-name", default="distill-sweep", help="the study's name in the storage")
    p.add_argument(
        "--auto-student",
        type=float,
        metavar="POINTS",
        help="pick the smallest student within POINTS accuracy points of the teacher (copied to OUT/auto_student)",
    )
    p.add_argument("--method", default="kd", help="the distillation method whose hyper-parameters are searched")
    p.add_argument("--out", type=Path, help="sweep directory (default: runs/sweep-<recipe>)")
    add_overrides(p, "override a recipe value")
    p.set_defaults(handler=run_sweep)


def run_sweep(args: argparse.Namespace) -> int:
    from distill.sweep import sweep

    result = sweep(
        args.recipe,
        args.out,
        trials=args.trials,
        objective=args.objective,
        budget_params=args.budget_params,
        budget_latency_ms=args.budget_latency_ms,
        storage=args.storage,
        auto_student=args.auto_student,
        method=args.method,
        study_name=args.study_name,
        overrides=args.overrides,
    )
    print(summary(result))
    return 0


def summary(result: dict) -> str:
    t = result["teacher"]
    lines = [
        f"teacher: val acc {t['val_acc']:.4f}, test acc {t['accuracy']:.4f}, {t['params']:,} params, "
        f"{t['latency_ms_b1']:.3f} ms",
        f"{'best' if len(result['directions']) == 1 else 'Pareto front'} ({result['objective']}):",
    ]
    by_number = {tr["number"]: tr for tr in result["trials"]}
    for n in result["best"]:
        tr = by_number[n]
        lines.append(
            f"  trial {n}: val acc {tr['val_acc']:.4f}, test acc {tr['accuracy']:.4f}, {tr['params_count']:,} params, "
            f"{tr['latency_ms_b1']:.3f} ms; {tr['model']} {json.dumps(tr['kwargs'])} {json.dumps(tr['params'])}"
        )
    auto = result.get("auto_student")
    if auto:
        if auto["trial"] is None:
            lines.append(f"auto-student: no trial within {auto['points']:g} points of the teacher")
        else:
            lines.append(
                f"auto-student: trial {auto['trial']} ({auto['params_count']:,} params, val acc {auto['val_acc']:.4f}) "
                f"-> {Path(result['out']) / 'auto_student'}"
            )
    lines.append(f"sweep directory: {result['out']} (sweep.json, report.html)")
    return "\n".join(lines)

"""Distilling with few labels: the teacher knows every label, the student sees only a fraction of them.

Hinton et al. call the images a student is distilled on a *transfer set*; it need not be labelled. Here the
teacher (the demo's, ``assets/demo-teacher``, trained on all 55,000 training images) labels every training image
by its outputs, while only 1 %, 10 % or 100 % of the images keep their true label (the same fraction of every
class, drawn with the seed). Three students of the same architecture and initialisation:

- ``scratch``: the labelled images only (a method without a teacher has nothing to learn from the rest);
- ``hard``: the teacher's argmax on every image, plus the true label where there is one;
- ``kd``: the teacher's softened outputs on every image (Hinton's soft targets), plus the true label where there
  is one.

Protocol (``PROTOCOL`` below; one row of it per fraction and seed):

- The validation split (5,000 images) is the teacher's, whatever the seed (``data.split_seed=0``): no student is
  validated on images the teacher was trained on. Each student keeps its best validation epoch; test accuracy is
  read once, at the end.
- Every student that sees all images trains ``epochs`` epochs. ``scratch`` gets as many optimiser steps as they
  do (``epochs / fraction`` epochs of its smaller split), capped at ``scratch_max_epochs``: past the cap the
  validation accuracy has long stopped rising (``best_epoch`` in the JSON shows where it peaked).
- The teacher's outputs are computed once per run (``cache.mode=fixed``, no augmentation), so a distilled epoch
  costs what a scratch epoch costs.

    python benchmarks/transfer.py                  # writes benchmarks/results/transfer.{json,md}
    python benchmarks/transfer.py --quick          # a minutes-long smoke run of the whole pipeline
    python benchmarks/transfer.py --fractions 0.01 --seeds 0 --epochs 4

Finished (fraction, seed) runs are kept under ``benchmarks/cache/transfer/`` and skipped when the script is run
again with the same protocol.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from common import machine_info, teacher_accuracy  # noqa: E402

from distill import api  # noqa: E402
from distill import config as C  # noqa: E402

TEACHER = ROOT / "assets" / "demo-teacher"
PROTOCOL: dict[str, Any] = {
    "teacher": "assets/demo-teacher",
    "student": {"model": "cnn", "kwargs": {"width": 16, "blocks": 1}},
    "val_size": 5000,
    "split_seed": 0,
    "batch_size": 128,
    "epochs": 8,
    "scratch_max_epochs": 150,
    "lr": 0.05,
    "weight_decay": 5e-4,
    "augment": False,
    "kd": {"temperature": 4.0, "alpha": 0.9},
    "hard": {"pseudo_weight": 0.9, "ce_weight": 0.1},
}
METHODS = ("scratch", "hard", "kd")


def scratch_epochs(p: dict[str, Any], fraction: float) -> int:
    """As many optimiser steps as the students that see every image, capped (see the module docstring)."""
    return min(p["scratch_max_epochs"], max(p["epochs"], round(p["epochs"] / fraction)))


def overrides(p: dict[str, Any], fraction: float, seed: int, quick: bool) -> list[str]:
    methods = [
        {"name": "scratch", "train": {"epochs": scratch_epochs(p, fraction)}},
        {"name": "hard", "params": p["hard"]},
        {"name": "kd", "params": p["kd"]},
    ]
    out = [
        f"seed={seed}",
        "select=best",
        "cache.mode=fixed",
        f"teacher.checkpoint={json.dumps(str(TEACHER))}",
        f"student={json.dumps(p['student'])}",
        f"data.val_size={p['val_size']}",
        f"data.split_seed={p['split_seed']}",
        f"data.batch_size={p['batch_size']}",
        f"data.augment={str(p['augment']).lower()}",
        f"data.labeled_fraction={fraction}",
        f"train={json.dumps({'epochs': p['epochs'], 'lr': p['lr'], 'weight_decay': p['weight_decay']})}",
        f"methods={json.dumps(methods)}",
        "bench.latency=false",
    ]
    if quick:
        out.append("data.train_subset=3000")
    return out


def run_one(p: dict[str, Any], fraction: float, seed: int, work: Path, quick: bool) -> dict[str, Any]:
    out = work / f"f{fraction}-s{seed}"
    t0 = time.perf_counter()
    report = api.run(C.Config(), out, overrides(p, fraction, seed, quick), overwrite=True)
    row: dict[str, Any] = {"fraction": fraction, "seed": seed, "wall_s": round(time.perf_counter() - t0, 1)}
    for s in report["students"]:
        row[s["name"]] = {
            "test_acc": s["accuracy"],
            "best_val_acc": s["best_val_acc"],
            "best_epoch": s["best_epoch"],
            "epochs": s["epochs"],
            "sec_per_epoch": round(s["sec_per_epoch"], 2),
        }
    return row


def mean_std(xs: list[float]) -> dict[str, Any]:
    return {
        "acc_mean": round(statistics.fmean(xs), 4),
        "acc_std": round(statistics.stdev(xs), 4) if len(xs) > 1 else 0.0,
        "accs": [round(x, 4) for x in xs],
    }


def summarise(p: dict[str, Any], rows: list[dict[str, Any]], teacher_acc: float) -> dict[str, Any]:
    fractions: dict[str, Any] = {}
    for f in sorted({r["fraction"] for r in rows}):
        fr = [r for r in rows if r["fraction"] == f]
        entry = {m: mean_std([r[m]["test_acc"] for r in fr]) for m in METHODS}
        for m in METHODS:
            entry[m]["val_acc_mean"] = round(statistics.fmean(r[m]["best_val_acc"] for r in fr), 4)
            entry[m]["best_epochs"] = [r[m]["best_epoch"] for r in fr]
            entry[m]["epochs"] = fr[0][m]["epochs"]
        base = entry["scratch"]["acc_mean"]
        for m in ("hard", "kd"):
            gap = teacher_acc - base
            entry[m]["gap_recovered"] = round((entry[m]["acc_mean"] - base) / gap, 3) if gap > 0 else None
        entry["seeds"] = sorted(r["seed"] for r in fr)
        fractions[str(f)] = entry
    return {"teacher": {"acc_mean": round(teacher_acc, 4)}, "fractions": fractions}


def goals(summary: dict[str, Any]) -> dict[str, Any]:
    """The goals of the benchmark: at 1 % labels the distilled student matches the same student on 100 % of the
    labels, and recovers at least 85 % of the gap between scratch on 1 % and the teacher."""
    fr = summary["fractions"]
    if "0.01" not in fr or "1.0" not in fr:
        return {}
    full = fr["1.0"]["scratch"]["acc_mean"]
    out = {}
    for m in ("kd", "hard"):
        out[m] = {
            "at_1pct_vs_scratch_100pct": round(fr["0.01"][m]["acc_mean"] - full, 4),
            "matches_100pct_labels": fr["0.01"][m]["acc_mean"] >= full,
            "gap_recovered_at_1pct": fr["0.01"][m]["gap_recovered"],
            "recovers_85pct": (fr["0.01"][m]["gap_recovered"] or 0) >= 0.85,
        }
    return out


def markdown(result: dict[str, Any]) -> str:
    t = result["teacher"]["acc_mean"]
    lines = [
        "# Distilling with few labels (Fashion-MNIST)",
        "",
        f"Teacher ({result['protocol']['teacher']}): test accuracy {t:.4f}. Student "
        f"`{result['protocol']['student']['model']}` {result['protocol']['student']['kwargs']}; test accuracy, "
        f"mean ± std over seeds {result['seeds']}; GR = share of the gap between scratch (same fraction) and the "
        "teacher that the student recovers.",
        "",
        "| labelled | scratch (labelled only) | hard (teacher's argmax on all) | kd (soft targets on all) | GR hard |"
        " GR kd |",
        "|---|---|---|---|---|---|",
    ]
    for f, e in result["fractions"].items():

        def cell(m: str, e: dict[str, Any] = e) -> str:
            return f"{e[m]['acc_mean']:.4f} ± {e[m]['acc_std']:.4f}"

        lines.append(
            f"| {float(f):.0%} | {cell('scratch')} ({e['scratch']['epochs']} ep.) | {cell('hard')} | {cell('kd')} | "
            f"{e['hard']['gap_recovered']:.0%} | {e['kd']['gap_recovered']:.0%} |"
        )
    lines += ["", f"Goals: `{json.dumps(result.get('goals', {}))}`", ""]
    m = result["machine"]
    lines.append(f"Machine: {m['cpu']}, {m['threads']} threads; {m['versions']}; {result['date']}; "
                 f"{result['wall_s'] / 60:.1f} min.")  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fractions", default="0.01,0.1,1.0")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--epochs", type=int, default=None, help="override the protocol's epochs")
    ap.add_argument("--quick", action="store_true", help="3,000 training images, 1 epoch, 1 seed: a smoke run")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    args = ap.parse_args(argv)
    p = dict(PROTOCOL)
    if args.epochs:
        p["epochs"] = args.epochs
    if args.quick:
        p.update(epochs=1, scratch_max_epochs=2)
        args.seeds = "0"
    fractions = [float(x) for x in args.fractions.split(",")]
    seeds = [int(x) for x in args.seeds.split(",")]
    work = HERE / "cache" / "transfer"
    work.mkdir(parents=True, exist_ok=True)
    done_file = work / ("quick.jsonl" if args.quick else "runs.jsonl")
    key = json.dumps(p, sort_keys=True)
    done = [json.loads(x) for x in done_file.read_text().splitlines()] if done_file.exists() else []
    done = [r for r in done if r.get("protocol") == key]
    t0 = time.perf_counter()
    rows = []
    for f in fractions:
        for seed in seeds:
            hit = next((r for r in done if r["fraction"] == f and r["seed"] == seed), None)
            if hit is None:
                hit = {**run_one(p, f, seed, work, args.quick), "protocol": key}
                with done_file.open("a") as fh:
                    fh.write(json.dumps(hit) + "\n")
            rows.append(hit)
            print(json.dumps({k: v for k, v in hit.items() if k != "protocol"}), flush=True)
    result = {
        **summarise(p, rows, teacher_accuracy(TEACHER)),
        "protocol": p,
        "seeds": seeds,
        "wall_s": round(sum(r["wall_s"] for r in rows), 1),
        "this_invocation_s": round(time.perf_counter() - t0, 1),
        **machine_info(),
    }
    result["goals"] = goals(result)
    if not args.quick:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "transfer.json").write_text(json.dumps(result, indent=2) + "\n")
        (args.out / "transfer.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

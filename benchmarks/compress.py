"""Compression benchmark on the Fashion-MNIST teacher of the demo (cnn, width 16).

Two runs of ``distill compress`` (configs/compress.yaml):

* ``structured_50``: 50 % of every conv's channels pruned (L1), recovered by KD from the unpruned teacher, then
  int8 and ONNX; the headline compares the recovered model with the teacher;
* ``int8``: the teacher itself quantized to int8 (x86, static, calibrated on 1,024 training images).

``acc_drop`` is in accuracy points on the 10,000 test images, ``speedup`` is the teacher's median CPU latency at
batch 256 over the compressed model's (``speedup_b1`` at batch 1 too). Goals: structured_50 loses <= 0.5 point and
runs >= 1.8x faster; int8 loses <= 0.3 point and runs >= 1.5x faster.

    python benchmarks/compress.py            # writes benchmarks/results/compress.json and .md (minutes)
    python benchmarks/compress.py --quick    # seconds-long check on a slice; writes under benchmarks/cache/

The teacher is read from benchmarks/cache/teacher/ when another benchmark left one there, else from (or trained
into) benchmarks/cache/compress_teacher/ with the demo recipe's teacher settings.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from distill import api
from distill import config as C
from distill.compress.pipeline import compress

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
GOALS = {"structured_50": {"acc_drop_max": 0.5, "speedup_min": 1.8}, "int8": {"acc_drop_max": 0.3, "speedup_min": 1.5}}


def teacher_dir(quick: bool) -> Path:
    """A trained demo teacher: a shared one if present, else our own (trained once, then cached)."""
    shared = HERE / "cache" / "teacher"
    if not quick and (shared / "model.json").is_file():
        return shared
    own = HERE / "cache" / ("compress_teacher_quick" if quick else "compress_teacher")
    if (own / "model.json").is_file():
        return own
    overrides = ["methods=[]"]
    if quick:
        overrides += ["data.train_subset=2000", "data.test_subset=500", "data.val_size=200", "teacher.train.epochs=1"]
    cfg = C.load_config(ROOT / "configs" / "demo.yaml", overrides)
    api.seed_everything(cfg.seed)
    data, dm = api.load_data(cfg)
    teacher = api.build_model(cfg.teacher, data)
    print(f"training the teacher into {own} ...", flush=True)
    teacher, info = api.fit(cfg, dm, data, teacher, None, "scratch", {}, cfg.teacher.train, own, "teacher", False)
    api.finish_stage(teacher.cpu(), api.model_spec(cfg.teacher, data), own, info)
    return own


def headline(rows: list[dict], stage: str, name: str) -> dict:
    base, row = rows[0], next(r for r in rows if r["stage"] == stage)
    goal = GOALS[name]
    out = {
        "acc_drop": row["acc_drop"],
        "speedup": row.get("speedup_b256"),
        "speedup_b1": row.get("speedup_b1"),
        "speedup_b256": row.get("speedup_b256"),
        "accuracy_before": base["accuracy"],
        "accuracy_after": row["accuracy"],
        "params_before": base["params"],
        "params_after": row["params"],
        "latency_ms_before": {k: v for k, v in base.items() if k.startswith("latency_ms_b")},
        "latency_ms_after": {k: v for k, v in row.items() if k.startswith("latency_ms_b")},
        "stage": stage,
        "goal": goal,
    }
    sp = out["speedup"] or 0.0
    out["met"] = out["acc_drop"] <= goal["acc_drop_max"] and sp >= goal["speedup_min"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a seconds-long check on a slice (not a measurement)")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads while timing (default 1)")
    ap.add_argument("--results", type=Path, help="where compress.json/.md go (default benchmarks/results)")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    teacher = teacher_dir(args.quick)
    recipe = ROOT / "configs" / "compress.yaml"
    runs = HERE / "cache" / ("compress_runs_quick" if args.quick else "compress_runs")
    common = [f"bench.threads={args.threads}", "bench.batch_sizes=[1, 256]"]
    if args.quick:
        common += [
            "data.train_subset=2000", "data.test_subset=500", "data.val_size=200", "recover.train.epochs=1",
            "bench.repeats=3", "quantize.calibration_images=256",
        ]  # fmt: skip
    t0 = time.perf_counter()
    pruned = compress(teacher, recipe, runs / "structured_50", common, overwrite=True)
    int8 = compress(
        teacher, recipe, runs / "int8", [*common, "prune.enabled=false", "recover.enabled=false"], overwrite=True
    )
    result = {
        "structured_50": headline(pruned["stages"], "recovered", "structured_50"),
        "int8": headline(int8["stages"], "quantized", "int8"),
        "rows": {"structured_50": pruned["stages"], "int8": int8["stages"]},
        "teacher": str(teacher.relative_to(ROOT) if teacher.is_relative_to(ROOT) else teacher),
        "quick": args.quick,
        "seconds": time.perf_counter() - t0,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "threads": args.threads,
            "quantized_engine": torch.backends.quantized.engine,
        },
        "versions": int8["versions"],
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    out = args.results or (HERE / "cache" / "compress_quick" if args.quick else HERE / "results")
    out.mkdir(parents=True, exist_ok=True)
    (out / "compress.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (out / "compress.md").write_text(markdown(result))
    print(markdown(result))
    print(f"wrote {out / 'compress.json'} and {out / 'compress.md'}")
    return 0


def markdown(r: dict) -> str:
    from distill.compress.pipeline import markdown as stage_table

    m = r["machine"]
    lines = [
        "# Compression benchmark — Fashion-MNIST teacher (cnn, width 16)"
        + (" — QUICK CHECK, not a result" if r["quick"] else ""),
        "",
        f"{r['date']}, {m['platform']}, {m['processor']}, {m['cpus']} CPUs, timed on {m['threads']} thread(s); "
        f"torch {r['versions']['torch']}, torch-pruning {r['versions'].get('torch-pruning', '—')}, "
        f"onnxruntime {r['versions'].get('onnxruntime', '—')}. Teacher: `{r['teacher']}`. Took {r['seconds']:.0f} s.",
        "",
        "| goal | accuracy drop (pts) | goal | speed-up b256 | speed-up b1 | goal | met |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in ("structured_50", "int8"):
        h = r[name]
        lines.append(
            f"| {name} | {h['acc_drop']:+.2f} | <= {h['goal']['acc_drop_max']} | {h['speedup_b256'] or 0:.2f}x | "
            f"{h['speedup_b1'] or 0:.2f}x | >= {h['goal']['speedup_min']}x | {'yes' if h['met'] else 'no'} |"
        )
    for name in ("structured_50", "int8"):
        fake = {
            "stages": r["rows"][name],
            "model": {"model": "cnn", "kwargs": {"width": 16}},
            "dataset": {"name": "fashion_mnist", "test": 0},
            "seconds": 0,
            "versions": r["versions"],
            "threads": m["threads"],
            "date": r["date"],
        }
        table = stage_table(fake).split("\n")[4:]  # the stage table, without its heading
        lines += ["", f"## {name}", "", *table]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())

"""Compression benchmark on Fashion-MNIST: a model with something to prune, and the demo-sized one beside it.

Three runs of ``distill compress`` (configs/compress.yaml):

* ``structured_50``: an over-parameterised teacher — the CIFAR-style ResNet-8x4 (``resnet8x4``: a 32-channel stem
  and one basic block per stage at 64, 128 and 256 channels, 1.21 M parameters) trained on Fashion-MNIST (55,000
  training images, the 5,000-image validation split of seed 0, 10 epochs, SGD lr 0.05 cosine: the demo teacher's
  recipe, configs/demo_teacher.yaml, with this model) — has 50 % of every conv's channels pruned (L1), is
  recovered by KD from the unpruned model, then int8 and ONNX; the headline compares the recovered model with it;
* ``structured_50_small``: the same on the 72,666-parameter ``cnn`` (width 16, blocks 2) of the earlier table;
* ``int8``: that small teacher quantized to int8 (x86, static, calibrated on 1,024 training images).

``acc_drop`` is in accuracy points on the 10,000 test images, ``speedup`` is the teacher's median CPU latency at
batch 256 over the compressed model's (``speedup_b1`` at batch 1 too). Goals: structured_50 (and _small) loses
<= 0.5 point and runs >= 1.8x faster; int8 loses <= 0.3 point and runs >= 1.5x faster.

    python benchmarks/compress.py            # writes benchmarks/results/compress.json and .md
    python benchmarks/compress.py --quick    # seconds-long check on a slice; writes under benchmarks/cache/
    python benchmarks/compress.py --only structured_50     # one row (the others are kept from the last results)

Cost on 2 CPU cores: training the ResNet-8x4 (~1.5 s per 128-image step on one busy core, ~430 steps an epoch) is
the bulk — about an hour, once: it is cached in benchmarks/cache/compress_teacher_resnet8x4/ (and resumes from its
last epoch when interrupted); its recovery (6 KD epochs, the teacher's forward every step) about half an hour.

The small teacher is read from benchmarks/cache/teacher/ when another benchmark left one there, else from (or
trained into) benchmarks/cache/compress_teacher/ with the same recipe.
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
STRUCTURED_GOAL = {"acc_drop_max": 0.5, "speedup_min": 1.8}
GOALS = {"structured_50": STRUCTURED_GOAL, "structured_50_small": STRUCTURED_GOAL,
         "int8": {"acc_drop_max": 0.3, "speedup_min": 1.5}}  # fmt: skip
ROWS = ("structured_50", "structured_50_small", "int8")
BIG = {"model": "resnet8x4", "kwargs": {}, "epochs": 10}  # the over-parameterised teacher of structured_50
SMALL = {"model": "cnn", "kwargs": {"width": 16, "blocks": 2}, "epochs": 10}  # today's 72,666-parameter teacher
QUICK_DATA = ["data.train_subset=2000", "data.test_subset=500", "data.val_size=200"]


def train_teacher(folder: Path, m: dict, quick: bool) -> Path:
    """``m``'s model trained into ``folder`` with the demo teacher's recipe (once; resumed when interrupted)."""
    if (folder / "model.json").is_file():
        return folder
    overrides = [f"teacher.model={m['model']}", f"teacher.kwargs={json.dumps(m['kwargs'])}",
                 f"teacher.train.epochs={1 if quick else m['epochs']}"]  # fmt: skip
    if quick:
        overrides += [*QUICK_DATA, "data.split_seed=null"]
    cfg = C.load_config(ROOT / "configs" / "demo_teacher.yaml", overrides)
    api.seed_everything(cfg.seed)
    data, dm = api.load_data(cfg)
    teacher = api.build_model(cfg.teacher, data)
    n = sum(p.numel() for p in teacher.parameters())
    print(f"training the teacher {m['model']} {m['kwargs']} ({n:,} parameters) into {folder} ...", flush=True)
    teacher, info = api.fit(cfg, dm, data, teacher, None, "scratch", {}, cfg.teacher.train, folder, "teacher", True)
    api.finish_stage(teacher.cpu(), api.model_spec(cfg.teacher, data), folder, info)
    return folder


def teacher_dir(quick: bool, big: bool = False) -> Path:
    """The trained teacher of a row: a shared small one if present, else our own (trained once, then cached)."""
    if big:
        return train_teacher(HERE / "cache" / f"compress_teacher_{BIG['model']}{'_quick' if quick else ''}", BIG, quick)
    shared = HERE / "cache" / "teacher"
    if not quick and (shared / "model.json").is_file():
        return shared
    return train_teacher(HERE / "cache" / ("compress_teacher_quick" if quick else "compress_teacher"), SMALL, quick)


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


def rel(p: Path) -> str:
    return str(p.relative_to(ROOT) if p.is_relative_to(ROOT) else p)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a seconds-long check on a slice (not a measurement)")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads while timing (default 1)")
    ap.add_argument("--results", type=Path, help="where compress.json/.md go (default benchmarks/results)")
    ap.add_argument("--only", help=f"comma-separated rows to (re)run, of {','.join(ROWS)}; the others are kept")
    args = ap.parse_args(argv)
    only = args.only.split(",") if args.only else list(ROWS)
    if set(only) - set(ROWS):
        ap.error(f"unknown row(s) {sorted(set(only) - set(ROWS))}; rows: {', '.join(ROWS)}")
    torch.manual_seed(0)
    out = args.results or (HERE / "cache" / "compress_quick" if args.quick else HERE / "results")
    previous = json.loads((out / "compress.json").read_text()) if (out / "compress.json").exists() else {}
    recipe = ROOT / "configs" / "compress.yaml"
    runs = HERE / "cache" / ("compress_runs_quick" if args.quick else "compress_runs")
    common = [f"bench.threads={args.threads}", "bench.batch_sizes=[1, 256]"]
    if args.quick:
        common += [*QUICK_DATA, "recover.train.epochs=1", "bench.repeats=3", "quantize.calibration_images=256"]
    plans = {  # row -> (big teacher?, extra overrides, the stage the headline reads)
        "structured_50": (True, [], "recovered"),
        "structured_50_small": (False, [], "recovered"),
        "int8": (False, ["prune.enabled=false", "recover.enabled=false"], "quantized"),
    }
    t0 = time.perf_counter()
    result: dict = {"rows": {}, "teachers": {}}
    for name in ROWS:
        keep = "teachers" in previous and previous.get("quick") == args.quick  # a results file of this layout
        if name not in only and keep and name in previous["rows"]:
            result[name], result["rows"][name] = previous[name], previous["rows"][name]
            result["teachers"][name] = previous["teachers"].get(name)
            continue
        big, extra, stage = plans[name]
        teacher = teacher_dir(args.quick, big)
        rep = compress(teacher, recipe, runs / name, [*common, *extra], overwrite=True)
        result[name] = headline(rep["stages"], stage, name)
        result["rows"][name] = rep["stages"]
        result["teachers"][name] = rel(teacher)
        result["versions"] = rep["versions"]
    result.update({
        "teacher": result["teachers"].get("structured_50"),  # the over-parameterised one (structured_50's)
        "quick": args.quick,
        "seconds": time.perf_counter() - t0,
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "threads": args.threads,
            "quantized_engine": torch.backends.quantized.engine,
        },
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    })  # fmt: skip
    result.setdefault("versions", previous.get("versions", {}))
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
        "# Compression benchmark — Fashion-MNIST: ResNet-8x4 (1.2 M parameters) and the small cnn (73 K)"
        + (" — QUICK CHECK, not a result" if r["quick"] else ""),
        "",
        f"{r['date']}, {m['platform']}, {m['processor']}, {m['cpus']} CPUs, timed on {m['threads']} thread(s); "
        f"torch {r['versions'].get('torch')}, torch-pruning {r['versions'].get('torch-pruning', '—')}, "
        f"onnxruntime {r['versions'].get('onnxruntime', '—')}. Took {r['seconds']:.0f} s. Teachers: "
        + ", ".join(f"{k}: `{v}`" for k, v in r["teachers"].items())
        + ".",
        "",
        "| row | params before → after | accuracy before % | accuracy drop (pts) | goal | speed-up b256 | "
        "speed-up b1 | goal | met |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    names = [n for n in ROWS if n in r["rows"]]
    for name in names:
        h = r[name]
        lines.append(
            f"| {name} | {h['params_before']:,} → {h['params_after']:,} | {100 * h['accuracy_before']:.2f} | "
            f"{h['acc_drop']:+.2f} | <= {h['goal']['acc_drop_max']} | {h['speedup_b256'] or 0:.2f}x | "
            f"{h['speedup_b1'] or 0:.2f}x | >= {h['goal']['speedup_min']}x | {'yes' if h['met'] else 'no'} |"
        )
    for name in names:
        first = r["rows"][name][0]
        fake = {
            "stages": r["rows"][name],
            "model": {"model": r["teachers"].get(name), "kwargs": {}},
            "dataset": {"name": "fashion_mnist", "test": 0},
            "seconds": 0,
            "versions": r["versions"],
            "threads": m["threads"],
            "date": r["date"],
        }
        table = stage_table(fake).split("\n")[4:]  # the stage table, without its heading
        lines += ["", f"## {name} ({first['params']:,} parameters)", "", *table]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())

"""The demo's recipe (``configs/demo.yaml``) over several seeds: is its distillation gain more than noise?

Each seed is a whole ``distill run`` of the recipe with ``seed=S`` (the labelled subset, the batch order and the
students' initial weights change; the shipped teacher and the validation split do not). Test accuracy is read
once per student, after its best validation epoch was kept. Writes ``benchmarks/results/demo.json``::

    {teacher: {acc_mean, acc_std}, scratch: {acc_mean, acc_std, accs}, kd: {...}, gap_recovered_mean,
     gain_mean, seeds, wall_s, machine, versions, date}

    python benchmarks/demo.py                 # seeds 0, 1, 2 (about 20 minutes on 2 cores)
    python benchmarks/demo.py --seeds 0       # one seed
    python benchmarks/demo.py --from-transfer # no training: the 10 % rows of benchmarks/transfer.py's runs

The demo's recipe is, setting for setting, the 10 % row of ``benchmarks/transfer.py`` without its ``hard``
student (same teacher, student, initial weights, data order, epochs and KD settings); ``--from-transfer`` checks
that this is still so and then reads those runs instead of training the same students again.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import machine_info  # noqa: E402

from distill import api  # noqa: E402

RECIPE = HERE.parent / "configs" / "demo.yaml"


def stats(xs: list[float]) -> dict:
    return {
        "acc_mean": round(statistics.fmean(xs), 4),
        "acc_std": round(statistics.stdev(xs), 4) if len(xs) > 1 else 0.0,
        "accs": [round(x, 4) for x in xs],
    }


def from_transfer(seeds: list[int]) -> list[dict]:
    """The demo's runs as ``benchmarks/transfer.py`` made them (its 10 % rows), after checking the recipes agree."""
    import transfer

    from distill.config import load_config

    cfg, p = load_config(RECIPE), transfer.PROTOCOL
    scratch, kd = cfg.methods
    same = {
        "labeled_fraction": (cfg.data.labeled_fraction, 0.1),
        "student": ({"model": cfg.student.model, "kwargs": cfg.student.kwargs}, p["student"]),
        "epochs": (cfg.train.epochs, p["epochs"]),
        "lr": (cfg.train.lr, p["lr"]),
        "weight_decay": (cfg.train.weight_decay, p["weight_decay"]),
        "scratch_epochs": (scratch.train.get("epochs"), transfer.scratch_epochs(p, 0.1)),
        "kd": (kd.params, p["kd"]),
        "val_size": (cfg.data.val_size, p["val_size"]),
        "split_seed": (cfg.data.split_seed, p["split_seed"]),
        "batch_size": (cfg.data.batch_size, p["batch_size"]),
        "augment": (cfg.data.augment, p["augment"]),
        "select": (cfg.select, "best"),
        "cache": (cfg.cache.mode, "fixed"),
    }
    differ = {k: v for k, v in same.items() if v[0] != v[1]}
    if differ:
        raise SystemExit(f"configs/demo.yaml is no longer transfer.py's 10 % protocol: {differ}; run without "
                         "--from-transfer")  # fmt: skip
    key = json.dumps(p, sort_keys=True)
    rows = [json.loads(x) for x in (HERE / "cache/transfer/runs.jsonl").read_text().splitlines()]
    teacher = transfer.teacher_accuracy(transfer.TEACHER)
    runs = []
    for seed in seeds:
        r = next((r for r in rows if r.get("protocol") == key and r["fraction"] == 0.1 and r["seed"] == seed), None)
        if r is None:
            raise SystemExit(f"benchmarks/transfer.py has no 10 % run for seed {seed} yet")
        acc = {m: r[m]["test_acc"] for m in ("scratch", "kd")}
        gr = (acc["kd"] - acc["scratch"]) / (teacher - acc["scratch"])
        runs.append({"seed": seed, "teacher": teacher, **acc, "gap_recovered": gr, "wall_s": r["wall_s"]})
    return runs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "demo.json")
    ap.add_argument("--from-transfer", action="store_true", help="read transfer.py's 10 %% runs (no training)")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    work = HERE / "cache" / "demo"
    t0 = time.perf_counter()
    runs = from_transfer(seeds) if args.from_transfer else []
    for seed in [] if args.from_transfer else seeds:
        t = time.perf_counter()
        rep = api.run(RECIPE, work / f"seed{seed}", [f"seed={seed}", "bench.latency=false"], overwrite=True)
        acc = {s["name"]: s["accuracy"] for s in rep["students"]}
        gr = (acc["kd"] - acc["scratch"]) / (rep["teacher"]["accuracy"] - acc["scratch"])
        runs.append({"seed": seed, "teacher": rep["teacher"]["accuracy"], **acc, "gap_recovered": gr,
                     "wall_s": round(time.perf_counter() - t, 1)})  # fmt: skip
        print(json.dumps(runs[-1]), flush=True)
    result = {
        "recipe": "configs/demo.yaml",
        "source": "benchmarks/transfer.py runs (10 % rows)" if args.from_transfer else "benchmarks/demo.py runs",
        "teacher": stats([r["teacher"] for r in runs]),
        "scratch": stats([r["scratch"] for r in runs]),
        "kd": stats([r["kd"] for r in runs]),
        "gain_mean": round(statistics.fmean(r["kd"] - r["scratch"] for r in runs), 4),
        "gap_recovered_mean": round(statistics.fmean(r["gap_recovered"] for r in runs), 3),
        "runs": runs,
        "seeds": seeds,
        "wall_s": round(sum(r["wall_s"] for r in runs) if args.from_transfer else time.perf_counter() - t0, 1),
        **machine_info(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("teacher", "scratch", "kd", "gain_mean", "gap_recovered_mean")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

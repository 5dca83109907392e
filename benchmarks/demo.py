"""The demo's recipe (``configs/demo.yaml``) over several seeds: is its distillation gain more than noise?

Each seed is a whole ``distill run`` of the recipe with ``seed=S`` (the labelled subset, the batch order and the
students' initial weights change; the shipped teacher and the validation split do not). Test accuracy is read
once per student, after its best validation epoch was kept. Writes ``benchmarks/results/demo.json``::

    {teacher: {acc_mean, acc_std}, scratch: {acc_mean, acc_std, accs}, kd: {...}, gap_recovered_mean,
     gain_mean, seeds, wall_s, machine, versions, date}

    python benchmarks/demo.py                 # seeds 0, 1, 2 (about 20 minutes on 2 cores)
    python benchmarks/demo.py --seeds 0       # one seed
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "demo.json")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    work = HERE / "cache" / "demo"
    t0 = time.perf_counter()
    runs = []
    for seed in seeds:
        t = time.perf_counter()
        rep = api.run(RECIPE, work / f"seed{seed}", [f"seed={seed}", "bench.latency=false"], overwrite=True)
        acc = {s["name"]: s["accuracy"] for s in rep["students"]}
        gr = (acc["kd"] - acc["scratch"]) / (rep["teacher"]["accuracy"] - acc["scratch"])
        runs.append({"seed": seed, "teacher": rep["teacher"]["accuracy"], **acc, "gap_recovered": gr,
                     "wall_s": round(time.perf_counter() - t, 1)})  # fmt: skip
        print(json.dumps(runs[-1]), flush=True)
    result = {
        "recipe": "configs/demo.yaml",
        "teacher": stats([r["teacher"] for r in runs]),
        "scratch": stats([r["scratch"] for r in runs]),
        "kd": stats([r["kd"] for r in runs]),
        "gain_mean": round(statistics.fmean(r["kd"] - r["scratch"] for r in runs), 4),
        "gap_recovered_mean": round(statistics.fmean(r["gap_recovered"] for r in runs), 3),
        "runs": runs,
        "seeds": seeds,
        "wall_s": round(time.perf_counter() - t0, 1),
        **machine_info(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("teacher", "scratch", "kd", "gain_mean", "gap_recovered_mean")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

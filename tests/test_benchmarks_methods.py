"""benchmarks/methods.py's bookkeeping (the difference to scratch and its 2σ verdict, complete and partial rows,
computed by hand) and benchmarks/gpu.sh's CPU check (one method, one epoch, a tiny subset; the JSON's shape)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FMNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


def load_methods():
    spec = importlib.util.spec_from_file_location("bench_methods", ROOT / "benchmarks" / "methods.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_methods"] = mod
    spec.loader.exec_module(mod)
    return mod


M = load_methods()


def row(method: str, seed: int, acc: float, **kw) -> dict:
    return {"method": method, "seed": seed, "status": "ok", "acc": acc, "best_acc": acc + 0.001, "best_epoch": 18,
            "last_epoch": 20, "sec_per_epoch": 2.0, **kw}  # fmt: skip


def test_two_sigma_is_twice_the_larger_std():
    assert M.two_sigma(0.002, 0.004) == pytest.approx(0.008)
    assert M.two_sigma(0.005, 0.001) == pytest.approx(0.010)


@pytest.mark.parametrize(
    ("mean", "std", "s_mean", "s_std", "delta", "bar", "above", "below"),
    [
        (0.900, 0.002, 0.890, 0.004, 0.010, 0.008, True, False),  # +1.0 pt > 2 x 0.4 pt
        (0.895, 0.002, 0.890, 0.004, 0.005, 0.008, False, False),  # +0.5 pt < 0.8 pt: within noise
        (0.880, 0.001, 0.890, 0.003, -0.010, 0.006, False, True),  # -1.0 pt, beyond 0.6 pt below
        (0.905, 0.006, 0.890, 0.001, 0.015, 0.012, True, False),  # the method's own std is the larger one
    ],
)
def test_compare_by_hand(mean, std, s_mean, s_std, delta, bar, above, below):
    c = M.compare(mean, std, s_mean, s_std)
    assert c["delta_vs_scratch"] == pytest.approx(delta)
    assert c["two_sigma"] == pytest.approx(bar)
    assert c["beyond_2sigma"] is above and c["below_2sigma"] is below


def test_compare_without_sigma_gives_no_verdict():
    c = M.compare(0.9, 0.0, 0.8, 0.0, measured=False)
    assert c["delta_vs_scratch"] == pytest.approx(0.1)
    assert c["two_sigma"] is None and c["beyond_2sigma"] is None and c["below_2sigma"] is None


def test_summarise_by_hand_complete_and_partial():
    scratch = M.summarise([row("scratch", s, a) for s, a in enumerate((0.85, 0.86, 0.87))], 3, None, None)
    assert scratch["acc_mean"] == pytest.approx(0.86) and scratch["acc_std"] == pytest.approx(0.01)
    assert scratch["complete"] is True
    kd = M.summarise([row("kd", s, a) for s, a in enumerate((0.90, 0.92, 0.94))], 3, 0.96, scratch)
    assert kd["acc_mean"] == pytest.approx(0.92) and kd["acc_std"] == pytest.approx(0.02)
    assert kd["delta_vs_scratch"] == pytest.approx(0.06)
    assert kd["two_sigma"] == pytest.approx(0.04)  # 2 x max(0.02, 0.01)
    assert kd["beyond_2sigma"] is True and kd["below_2sigma"] is False
    assert kd["gap_recovered"] == pytest.approx(0.6)  # 0.06 / (0.96 - 0.86)
    assert kd["best_acc"] == pytest.approx(0.921) and kd["best_epoch"] == 18 and kd["last_epoch"] == 20
    at = M.summarise([row("at", 0, 0.80), row("at", 2, 0.84)], 3, 0.96, scratch)  # 2 of 3 seeds
    assert at["complete"] is False and at["seed_ids"] == [0, 2]
    assert at["delta_vs_scratch"] == pytest.approx(-0.04)
    assert at["two_sigma"] == pytest.approx(2 * 0.0282842712)  # stdev(0.80, 0.84)
    assert at["beyond_2sigma"] is False and at["below_2sigma"] is False
    one = M.summarise([row("sp", 0, 0.99)], 3, 0.96, scratch)
    assert one["beyond_2sigma"] is None  # one seed: no σ, no verdict


def test_seeded_subset_is_fixed_and_sorted():
    a, b = M.seeded_subset(100, 10, 1), M.seeded_subset(100, 10, 1)
    assert a.tolist() == b.tolist() == sorted(a.tolist()) and len(set(a.tolist())) == 10
    assert M.seeded_subset(100, None, 1) is None and M.seeded_subset(100, 100, 1) is None


@pytest.mark.slow  # half a minute to a minute on 2 busy cores: six Python processes (torchrun's two among them)
@pytest.mark.skipif(not FMNIST.exists() and not os.environ.get("DISTILL_DATA"), reason="Fashion-MNIST not installed")
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_gpu_sh_cpu_check(tmp_path):
    """gpu.sh --cpu-check: the checks (throughput, bf16 + channels_last, DDP under torchrun with gloo), then one
    method for one epoch; methods_gpu.json has methods.json's shape and the checks."""
    env = {**os.environ, "OUT_DIR": str(tmp_path), "WORKERS": "1", "CHECK_IMAGES": "256", "OMP_NUM_THREADS": "1",
           "PY": sys.executable}  # fmt: skip
    p = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--cpu-check"], env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    res = json.loads((tmp_path / "methods_gpu.json").read_text())
    assert {"teacher", "scratch", "methods", "protocol", "rows", "checks"} <= set(res)
    assert res["teacher"]["params"] == 162_562
    kd = res["methods"]["kd"]
    for key in ("acc_mean", "acc_std", "seeds", "sec_per_epoch", "delta_vs_scratch", "beyond_2sigma", "complete",
                "best_acc", "best_epoch", "last_epoch"):  # fmt: skip
        assert key in kd, key
    assert len(kd["seeds"]) == 2 and kd["complete"] is True
    assert kd["delta_vs_scratch"] == pytest.approx(kd["acc_mean"] - res["scratch"]["acc_mean"])
    assert res["rows"] == {"complete": ["scratch", "kd"], "partial": [], "missing": []}
    proto = res["protocol"]
    assert proto["images"] == 512 and proto["epochs"] == 1 and proto["split_seed"] == 0
    assert {"scratch_E", "scratch_2E"} <= set(proto)
    assert proto["amp"] == "bf16" and proto["channels_last"] is True
    checks = res["checks"]
    for name in ("throughput", "bf16_channels_last", "ddp_torchrun"):
        assert checks[name]["status"] == "pass", checks[name]
    assert checks["fp16_grad_scaler"]["status"] == "skipped" and checks["failed"] == []
    tp = checks["throughput"]
    assert tp["student_alone"] > 0 and tp["kd_cached"] > 0 and tp["kd_teacher_every_step"] > 0
    assert (tmp_path / "methods_gpu.md").read_text().startswith("# Distillation methods")

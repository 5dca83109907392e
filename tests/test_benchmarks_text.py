"""benchmarks/text.py: its bookkeeping by hand — the copies-curve epoch rule, the plan, mean ± std over seeds, and
the goal's choice of row and runtime."""

from __future__ import annotations

import importlib.util
import statistics
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_text_bench():
    spec = importlib.util.spec_from_file_location("bench_text", ROOT / "benchmarks" / "text.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_text"] = mod
    spec.loader.exec_module(mod)
    return mod


T = load_text_bench()


def test_transfer_epochs_keep_the_step_budget_about_equal():
    assert [T.transfer_epochs(k) for k in (1, 4, 10, 20)] == [10, 4, 2, 1]
    for k in (1, 4, 10, 20):  # passes over the labelled set's size: (k + 1) x epochs, 20 within rounding
        assert 19 <= (k + 1) * T.transfer_epochs(k) <= 22


def test_plan_has_three_seeds_for_the_small_students_and_the_curve():
    runs = T.plan()
    names = [(r.name, r.seed) for r in runs]
    assert len(names) == len(set(names))  # no run twice
    for model in ("cnn", "bilstm"):
        for method in ("ce", "kd", "kd+transfer@20"):
            assert sorted(s for n, s in names if n == f"{model}-{method}") == [0, 1, 2]
    assert {r.copies for r in runs if r.model == "cnn" and r.method == "kd+transfer"} == {1, 4, 10, 20}
    tiny = next(r for r in runs if r.method == "tinybert+transfer")
    assert [st[0] for st in tiny.stages] == ["tinybert", "text_kd"]  # intermediate layers, then soft targets
    assert tiny.stages[1][1] == {"alpha": 1.0, "temperature": 1.0}
    keys = {r.key("ctx") for r in runs}
    assert len(keys) == len(runs) and runs[0].key("ctx") != runs[0].key("other teacher")


def row(model, method, acc, seed=0, copies=0, pt=None, onnx=None):
    r = {"name": f"{model}-{method}", "model": model, "method": method, "acc": acc, "seed": seed, "copies": copies,
         "params": 1, "train_seconds": 10.0, "stages": [{"epochs": 1}]}  # fmt: skip
    if pt is not None:
        r["speedup_b1_pytorch"] = pt
    if onnx is not None:
        r["speedup_b1_onnx"] = onnx
    return r


def test_aggregate_is_mean_and_sample_std_over_seeds():
    rows = [row("cnn", "kd", a, seed=s) for s, a in enumerate((0.80, 0.82, 0.84))] + [row("cnn", "ce", 0.78)]
    agg = {r["method"]: r for r in T.aggregate(rows, teacher_acc=0.85)}
    assert agg["kd"]["acc"] == pytest.approx(0.82)
    assert agg["kd"]["acc_std"] == pytest.approx(statistics.stdev([0.80, 0.82, 0.84]))  # 0.02, n - 1
    assert agg["kd"]["acc_std"] == pytest.approx(0.02)
    assert agg["kd"]["accuracy_ratio"] == pytest.approx(0.82 / 0.85)
    assert agg["kd"]["seeds"] == [0, 1, 2] and agg["kd"]["train_seconds"] == pytest.approx(30.0)
    assert agg["ce"]["acc_std"] == 0.0 and agg["ce"]["seeds"] == [0]


def test_goal_takes_the_most_accurate_row_fast_enough_in_its_fastest_runtime():
    rows = [
        {**row("a", "kd", 0.84, pt=12.0, onnx=30.0), "accuracy_ratio": 0.84 / 0.85},
        {**row("b", "kd", 0.845, pt=9.0, onnx=9.5), "accuracy_ratio": 0.845 / 0.85},  # most accurate, too slow
        {**row("c", "kd", 0.80, pt=50.0), "accuracy_ratio": 0.80 / 0.85},
    ]
    g = T.goal(rows, 0.98, 10.0)
    assert g["name"] == "a-kd" and g["runtime"] == "onnx" and g["speedup"] == 30.0
    assert g["goal_met"] is True  # 0.84 / 0.85 = 0.988
    g = T.goal(rows, 0.99, 10.0)
    assert g["name"] == "a-kd" and g["goal_met"] is False  # fast enough, not accurate enough
    g = T.goal(rows, 0.9, 100.0)  # nothing that fast: the most accurate row, goal missed
    assert g["name"] == "b-kd" and g["goal_met"] is False


def test_a_run_is_claimed_by_one_live_worker_and_a_dead_workers_claim_is_taken_over(tmp_path):
    import subprocess

    lock = tmp_path / "claimed"
    assert T.claim(lock) == lock and lock.read_text() == str(__import__("os").getpid())
    assert T.claim(lock) is None  # held by a live process (this one)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs
    lock.write_text(str(dead.pid))
    assert T.claim(lock) == lock and lock.read_text() != str(dead.pid)
    lock.write_text("")  # an empty lock (a worker killed between create and write) is taken over too
    assert T.claim(lock) == lock

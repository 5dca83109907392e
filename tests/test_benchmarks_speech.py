"""benchmarks/speech.py: its goal bookkeeping by hand, and a ``--quick`` run on synthetic spectrograms (the JSON's
shape, resuming from the finished-runs file); configs/speech.yaml loads against the schema."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from distill.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def load_speech():
    spec = importlib.util.spec_from_file_location("bench_speech", ROOT / "benchmarks" / "speech.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_speech"] = mod
    spec.loader.exec_module(mod)
    return mod


S = load_speech()


def student(name: str, method: str, accs: list[float], params: int) -> dict:
    mean = sum(accs) / len(accs)
    std = (sum((a - mean) ** 2 for a in accs) / (len(accs) - 1)) ** 0.5 if len(accs) > 1 else 0.0  # sample std
    return {"name": name, "method": method, "accs": accs, "acc_mean": mean, "acc_std": std, "params": params}


def test_goals_by_hand():
    teacher = {"params": 482_452, "accuracy": 0.90}
    rows = [
        student("tiny", "scratch", [0.80, 0.81, 0.82], 12_148),
        student("tiny", "kd", [0.86, 0.80, 0.85], 12_148),  # mean 0.8367 < 0.98 x 0.90 = 0.882
        student("s", "scratch", [0.86, 0.87, 0.88], 23_180),
        student("s", "kd", [0.89, 0.885, 0.885], 23_180),  # mean 0.8867 >= 0.882, beats scratch 0.87
        student("m", "scratch", [0.88, 0.88, 0.88], 136_580),
        student("m", "kd", [0.90, 0.90, 0.90], 136_580),  # 1/3.5 of the teacher: not a candidate
    ]
    g = S.goals(teacher, rows)
    assert set(g["students"]) == {"tiny", "s"}
    assert g["students"]["tiny"]["kd_wins_per_seed"] == "2/3" and g["students"]["tiny"]["kd_beats_scratch"]
    assert not g["students"]["tiny"]["keeps_98pct"] and not g["students"]["tiny"]["met"]
    assert g["students"]["s"]["keeps_98pct"] and g["students"]["s"]["met"]
    assert g["students"]["s"]["params_ratio"] == pytest.approx(20.8)
    assert g["met"] and g["met_by"] == ["s"]
    # s: +0.0167 against 2 x 0.0100 (scratch's std); tiny: +0.0267 against 2 x 0.0321 (kd's std): both within 2σ
    assert not g["students"]["s"]["kd_beyond_2sigma"] and not g["students"]["tiny"]["kd_beyond_2sigma"]
    wide = [student("s", "scratch", [0.80, 0.80, 0.81], 23_180), student("s", "kd", [0.89, 0.885, 0.885], 23_180)]
    assert S.goals(teacher, wide)["students"]["s"]["kd_beyond_2sigma"]  # +0.0867 against 2 x 0.0058
    # one seed is not enough for the goal, however good the numbers
    one = [student(r["name"], r["method"], r["accs"][:1], r["params"]) for r in rows]
    assert not S.goals(teacher, one)["met"]


def test_synthetic_spectrograms_have_the_audio_folder_shape():
    data = S.synthetic_speech(48, 24)
    assert tuple(data.x_train.shape) == (48, 1, 40, 101) and data.num_classes == 12
    assert data.classes[-2:] == ["_unknown_", "_silence_"] and not data.hflip and data.crop_padding == 0


def test_quick_run_writes_the_results_and_resumes(tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    assert S.main(["--quick", "--out", str(out), "--cache", str(cache)]) == 0
    res = json.loads((out / "speech.json").read_text())
    assert res["protocol"]["quick"] and res["protocol"]["synthetic"]
    assert {"accuracy", "params"} <= set(res["teacher"]) and res["teacher"]["params"] == 482_452
    names = {(s["name"], s["method"]) for s in res["students"]}
    assert names == {(n, m) for n in ("kws_tiny", "ds_cnn_s", "ds_cnn_m") for m in ("scratch", "kd")}
    for s in res["students"]:
        assert {"acc_mean", "acc_std", "seeds", "params", "latency_ms_b1"} <= set(s) and s["seeds"] == [0]
        assert 0.0 <= s["acc_mean"] <= 1.0 and s["latency_ms_b1"] > 0
    ens = res["ensemble"]
    assert len(ens["teachers"]) == 2 and ens["student"]["method"].startswith("multi_kd")
    assert res["int8"]["name"] in ("kws_tiny", "ds_cnn_s") and res["int8"]["latency_ms_b1"] > 0
    assert res["goals"]["met"] is False  # one seed and one epoch: never "met"
    assert {"machine", "versions", "date"} <= set(res)
    assert "Goal:" in (out / "speech.md").read_text()
    lines = (cache / "quick.jsonl").read_text().splitlines()
    assert len(lines) == 7  # 3 students x (scratch, kd) + the ensemble student
    # a second run reads every finished run back instead of training again
    assert S.main(["--quick", "--out", str(out), "--cache", str(cache)]) == 0
    assert len((cache / "quick.jsonl").read_text().splitlines()) == 7


def test_the_recipe_loads():
    cfg = load_config(ROOT / "configs" / "speech.yaml")
    assert cfg.data.name == "audio_folder" and cfg.data.root == "data/speech"
    assert (cfg.teacher.model, cfg.student.model, cfg.student.kwargs) == ("kws_resnet", "ds_cnn", {"size": "s"})
    assert "kd" in [m.name for m in cfg.methods] and cfg.cache.mode != "fixed"
    assert "hflip" not in cfg.data.options and "crop_padding" not in cfg.data.options

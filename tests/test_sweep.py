"""``distill sweep``: a two-trial study on synthetic data that resumes from SQLite; budgets, pruning, auto-student."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from distill.cli import main  # noqa: E402
from distill.sweep import PruningCallback, architecture_space, choose_auto_student, sweep  # noqa: E402
from trust_helpers import tamper_and_rehash  # noqa: E402

RECIPE = Path(__file__).resolve().parents[1] / "configs" / "sweep.yaml"
TINY = [
    "data.name=synthetic",
    "data.train_subset=128",
    "data.test_subset=64",
    "data.val_size=32",
    "data.batch_size=32",
    "train.epochs=1",
    "teacher.train.epochs=1",
    "teacher.kwargs={width: 4, blocks: 1}",
    "bench.repeats=2",
    "device=cpu",
]


def test_two_trial_sweep_resumes_from_its_study(tmp_path, capsys):
    out = tmp_path / "sweep"
    first = sweep(RECIPE, out, trials=1, overrides=TINY, auto_student=100.0, progress=False)
    assert [t["state"] for t in first["trials"]] == ["COMPLETE"]
    teacher_done = (out / "teacher" / "done.json").stat().st_mtime_ns

    args = ["sweep", str(RECIPE), "--out", str(out), "--trials", "2", "--auto-student", "100"]
    assert main([*args, *(x for o in TINY for x in ("--set", o))]) == 0
    assert "auto-student: trial" in capsys.readouterr().out

    study = optuna.load_study(study_name="distill-sweep", storage=f"sqlite:///{out / 'study.db'}")
    assert len(study.trials) == 2 and all(t.state.name == "COMPLETE" for t in study.trials)
    assert (out / "teacher" / "done.json").stat().st_mtime_ns == teacher_done  # the teacher is trained once
    result = json.loads((out / "sweep.json").read_text())
    assert [t["number"] for t in result["trials"]] == [0, 1]
    assert result["objective"] == "acc_params" and result["directions"] == ["maximize", "minimize"]
    for t in result["trials"]:
        assert set(t["params"]) == {"width", "blocks", "temperature", "alpha", "lr"}
        assert (Path(t["dir"]) / "model.safetensors").is_file() and t["params_count"] > 0
        assert 0.0 <= t["val_acc"] <= 1.0 and t["latency_ms_b1"] > 0
    auto = result["auto_student"]
    assert auto["trial"] == min(result["trials"], key=lambda t: (t["params_count"], -t["val_acc"]))["number"]
    assert (out / "auto_student" / "model.safetensors").is_file()
    html = (out / "report.html").read_text()
    assert 'id="pareto"' in html and "trial 1" in html

    # Same study, a parameter budget nothing fits: the third trial is pruned before it trains.
    third = sweep(RECIPE, out, trials=3, overrides=TINY, budget_params=10, auto_student=100.0, progress=False)
    assert [t["state"] for t in third["trials"]] == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert not (out / "trials" / "0002").exists()


def test_a_different_recipe_does_not_resume_a_sweep(tmp_path):
    (tmp_path / "config.yaml").write_text("seed: 123\n")
    with pytest.raises(Exception, match="different recipe"):
        sweep(RECIPE, tmp_path, trials=1, overrides=TINY, progress=False)


def test_pruning_callback_stops_a_hopeless_trial():
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=0.5))
    trial = study.ask()
    cb = PruningCallback(trial)
    cb.on_epoch_end(None, {"epoch": 1, "val": {"acc": 0.9}})
    with pytest.raises(optuna.TrialPruned):
        cb.on_epoch_end(None, {"epoch": 2, "val": {"acc": 0.1}})


def test_search_spaces_stay_in_the_family():
    trial = optuna.trial.FixedTrial({"model": "resnet14"})
    sample, what = architecture_space("resnet8", {})
    assert sample(trial) == ("resnet14", {}) and "resnet56" in what and "resnet8x4" not in what
    sample, _ = architecture_space("cnn", {"dropout": 0.1})
    fixed = optuna.trial.FixedTrial({"width": 3, "blocks": 2})
    assert sample(fixed) == ("cnn", {"dropout": 0.1, "width": 3, "blocks": 2})


def test_auto_student_is_the_smallest_within_the_points():
    trials = [
        {"number": 0, "state": "COMPLETE", "val_acc": 0.90, "params_count": 900},
        {"number": 1, "state": "COMPLETE", "val_acc": 0.88, "params_count": 300},
        {"number": 2, "state": "COMPLETE", "val_acc": 0.80, "params_count": 100},
        {"number": 3, "state": "PRUNED", "val_acc": None, "params_count": 50},
    ]
    for t in trials:
        t.update(accuracy=t["val_acc"], model="cnn", kwargs={}, method_params={}, params={}, dir="d")
    assert choose_auto_student(trials, 0.91, 5.0)["trial"] == 1
    assert choose_auto_student(trials, 0.91, 15.0)["trial"] == 2
    assert choose_auto_student(trials, 0.99, 1.0)["trial"] is None


# -- a saved teacher: its signature (teacher.public_key) and ensembles ----------------------------------------------


def _saved_teacher(directory: Path, width: int = 4) -> Path:
    from distill import api
    from distill.artifacts import save_model

    cfg = api.as_config(RECIPE, TINY)
    data, _ = api.load_data(cfg)
    cfg.teacher.kwargs = {"width": width, "blocks": 1}
    save_model(directory, api.build_model(cfg.teacher, data), api.model_spec(cfg.teacher, data))
    return directory


def test_sweep_refuses_an_unsigned_or_tampered_teacher(tmp_path, capsys):
    from distill.trust import generate_keypair, sign_model

    generate_keypair(tmp_path / "k.key", tmp_path / "k.pub")
    teacher = _saved_teacher(tmp_path / "teacher")
    keyed = [
        f"teacher.checkpoint={json.dumps(str(teacher))}",
        f"teacher.public_key={json.dumps(str(tmp_path / 'k.pub'))}",
    ]
    out = tmp_path / "sweep"
    sets = [x for o in [*TINY, *keyed] for x in ("--set", o)]
    argv = ["sweep", str(RECIPE), "--out", str(out), "--trials", "1", *sets]

    def refused(match: str) -> None:
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("distill: error:") and match in err[0]
        assert not out.exists()

    refused("is not signed")
    sign_model(teacher, tmp_path / "k.key")
    tamper_and_rehash(teacher)
    refused("model.safetensors changed after signing")


def test_sweep_distils_from_a_signed_ensemble(tmp_path):
    from distill.trust import generate_keypair, sign_model

    generate_keypair(tmp_path / "k.key", tmp_path / "k.pub")
    members = [_saved_teacher(tmp_path / "t1", 4), _saved_teacher(tmp_path / "t2", 6)]
    for m in members:
        sign_model(m, tmp_path / "k.key")
    keyed = [
        f"teacher.ensemble={json.dumps([str(m) for m in members])}",
        f"teacher.public_key={json.dumps(str(tmp_path / 'k.pub'))}",
    ]
    out = tmp_path / "sweep"
    result = sweep(RECIPE, out, trials=1, overrides=[*TINY, *keyed], html=False, progress=False)
    assert result["teacher"]["model"] == "ensemble" and result["teacher"]["members"] == [str(m) for m in members]
    assert [t["state"] for t in result["trials"]] == ["COMPLETE"]
    assert json.loads((out / "teacher" / "ensemble.json").read_text())["members"] == [str(m) for m in members]

    (tmp_path / "t2" / "model.safetensors").write_bytes(b"")  # a member changed: refused before any work
    with pytest.raises(Exception, match="changed after signing"):
        sweep(RECIPE, tmp_path / "again", trials=1, overrides=[*TINY, *keyed], html=False, progress=False)
    assert not (tmp_path / "again").exists()


def test_a_model_family_registers_its_own_search_space():
    from distill.models.search_space import SEARCH_SPACES, register_search_space

    sample, what = architecture_space("lenet5", {"k": 1})
    assert what == "lenet5 (no size knob: hyper-parameters only)" and sample(None) == ("lenet5", {"k": 1})

    @register_search_space("lenet5", "lenet5 or a cnn of width 2–4")
    def space(trial, kwargs):
        return ("cnn", {**kwargs, "width": trial.suggest_int("width", 2, 4)}) if trial.suggest_int("c", 0, 1) else (
            "lenet5", dict(kwargs))  # fmt: skip

    try:
        sample, what = architecture_space("lenet5", {"k": 1})
        assert what == "lenet5 or a cnn of width 2–4"
        assert sample(optuna.trial.FixedTrial({"c": 1, "width": 3})) == ("cnn", {"k": 1, "width": 3})
    finally:
        SEARCH_SPACES.remove("lenet5")
    assert architecture_space("lenet5", {})[1] == "lenet5 (no size knob: hyper-parameters only)"

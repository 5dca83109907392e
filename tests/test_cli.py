"""The CLI end to end on the smoke recipe, and the error cases a user meets first."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from distill.cli import main
from distill.report.html import load_predictions

ROOT = Path(__file__).resolve().parents[1]
FMNIST = Path("/usr/share/datasets/fashion-mnist")
needs_fmnist = pytest.mark.skipif(
    not FMNIST.is_dir(), reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)"
)
SYNTH = [
    "--set",
    "data.name=synthetic",
    "--set",
    "data.val_size=64",
    "--set",
    "bench.repeats=2",
    "--set",
    "train.epochs=1",
    "--set",
    "teacher.train.epochs=1",
]


@pytest.mark.parametrize("what", ["models", "methods", "datasets"])
def test_list(what, capsys):
    assert main(["list", what]) == 0
    names = capsys.readouterr().out.split()
    assert names == sorted(names) and len(names) >= 3
    assert {"models": "resnet8x4", "methods": "kd", "datasets": "fashion_mnist"}[what] in names


@needs_fmnist
def test_smoke_recipe_end_to_end(tmp_path):
    """The smoke recipe through the installed console script, as a user runs it."""
    out = tmp_path / "run"
    exe = Path(sys.executable).with_name("distill")
    cmd = [str(exe) if exe.exists() else sys.executable, *([] if exe.exists() else ["-m", "distill"])]
    r = subprocess.run(
        [*cmd, "run", str(ROOT / "configs/smoke.yaml"), "--out", str(out)], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    names = [s["name"] for s in report["students"]]
    assert names == ["scratch", "kd", "hard", "fitnet"]
    for entry in [report["teacher"], *report["students"]]:
        for key in ("name", "method", "accuracy", "params", "size_bytes", "latency_ms_b1", "latency_ms_b256"):
            assert key in entry, key
        # the accuracy is that of the model's saved test-set predictions (500 images), counted here
        model_dir = out / ("teacher" if entry is report["teacher"] else f"students/{entry['name']}")
        logits, labels = load_predictions(model_dir)
        assert len(labels) == 500
        assert entry["accuracy"] == pytest.approx(float((logits.argmax(1) == labels).mean()), abs=1e-6)
        assert entry["size_bytes"] == (model_dir / "model.safetensors").stat().st_size
    teacher, scratch = report["teacher"]["accuracy"], report["students"][0]["accuracy"]
    for s in report["students"]:
        want = (s["accuracy"] - scratch) / (teacher - scratch) if teacher > scratch else None
        assert s["gap_recovered"] == (pytest.approx(want, abs=1e-9) if want is not None else None)
        assert s["speedup_b1"] == pytest.approx(report["teacher"]["latency_ms_b1"] / s["latency_ms_b1"], rel=1e-9)
    assert report["students"][0]["gap_recovered"] == 0.0
    for f in (
        "config.yaml",
        "report.md",
        "manifest.json",
        "teacher/model.safetensors",
        "teacher/metrics.jsonl",
        "students/kd/model.safetensors",
        "students/kd/model.json",
    ):
        assert (out / f).is_file(), f
    assert not list(out.rglob("*.pt")) and not list(out.rglob("*.pth")) and not list(out.rglob("*.pkl"))
    assert "| teacher |" in r.stdout
    # info and evaluate on the finished run
    r2 = subprocess.run([*cmd, "info", str(out)], capture_output=True, text=True)
    assert r2.returncode == 0 and "kd" in r2.stdout
    r3 = subprocess.run(
        [*cmd, "evaluate", str(out / "students/kd"), "--set", "data.test_subset=500"], capture_output=True, text=True
    )
    assert r3.returncode == 0, r3.stderr
    assert json.loads(r3.stdout)["acc"] == pytest.approx(report["students"][1]["accuracy"], abs=1e-6)


def test_distill_from_saved_teacher_and_resume_skips_finished_stages(tmp_path, capsys):
    assert main(["train", str(ROOT / "configs/smoke.yaml"), "--out", str(tmp_path / "t"), *SYNTH]) == 0
    teacher = tmp_path / "t" / "teacher"
    assert (teacher / "model.json").is_file()
    args = [
        "distill",
        str(ROOT / "configs/smoke.yaml"),
        "--teacher",
        str(teacher),
        "--out",
        str(tmp_path / "s"),
        *SYNTH,
        "--set",
        "methods=[{name: kd}]",
    ]
    assert main(args) == 0
    before = (tmp_path / "s/students/kd/model.safetensors").read_bytes()
    assert main([*args, "--resume"]) == 0  # everything done: nothing retrained
    assert (tmp_path / "s/students/kd/model.safetensors").read_bytes() == before


def run_err(args, capsys):
    capsys.readouterr()  # drop what earlier calls printed
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("distill: error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_unknown_names_list_what_exists(tmp_path, capsys):
    msg = run_err(
        [
            "run",
            str(ROOT / "configs/smoke.yaml"),
            "--out",
            str(tmp_path / "x"),
            *SYNTH,
            "--set",
            "student.model=resnet9",
        ],
        capsys,
    )
    assert "unknown model 'resnet9'" in msg and "resnet8" in msg
    msg = run_err(
        [
            "run",
            str(ROOT / "configs/smoke.yaml"),
            "--out",
            str(tmp_path / "x"),
            *SYNTH,
            "--set",
            "methods=[{name: dkdd}]",
        ],
        capsys,
    )
    assert "unknown method 'dkdd'" in msg and "kd" in msg
    msg = run_err(
        ["run", str(ROOT / "configs/smoke.yaml"), "--out", str(tmp_path / "x"), "--set", "data.name=fmnist"], capsys
    )
    assert "fashion_mnist" in msg
    assert not (tmp_path / "x").exists()  # nothing was written for a bad recipe


def test_missing_dataset_says_how_to_get_it(tmp_path, capsys):
    msg = run_err(
        [
            "run",
            str(ROOT / "configs/smoke.yaml"),
            "--out",
            str(tmp_path / "x"),
            "--set",
            f"data.root={tmp_path / 'empty'}",
        ],
        capsys,
    )
    assert "apt-get install dataset-fashion-mnist" in msg


def test_class_count_mismatch_names_both_sides(tmp_path, capsys):
    assert main(["train", str(ROOT / "configs/smoke.yaml"), "--out", str(tmp_path / "t"), *SYNTH]) == 0
    msg = run_err(
        [
            "distill",
            str(ROOT / "configs/smoke.yaml"),
            "--teacher",
            str(tmp_path / "t/teacher"),
            "--out",
            str(tmp_path / "s"),
            *SYNTH,
            "--set",
            "data.name=digits",
        ],
        capsys,
    )
    assert "4 classes" in msg and "10 classes" in msg


def test_existing_run_directory_is_never_silently_overwritten(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    msg = run_err(["run", str(ROOT / "configs/smoke.yaml"), "--out", str(out), *SYNTH], capsys)
    assert "--overwrite" in msg and "--resume" in msg
    assert (out / "precious.txt").read_text() == "keep me"


def test_tampered_teacher_weights_are_refused(tmp_path, capsys):
    assert main(["train", str(ROOT / "configs/smoke.yaml"), "--out", str(tmp_path / "t"), *SYNTH]) == 0
    w = tmp_path / "t/teacher/model.safetensors"
    data = bytearray(w.read_bytes())
    data[-1] ^= 0xFF
    w.write_bytes(bytes(data))
    msg = run_err(
        [
            "distill",
            str(ROOT / "configs/smoke.yaml"),
            "--teacher",
            str(tmp_path / "t/teacher"),
            "--out",
            str(tmp_path / "s"),
            *SYNTH,
        ],
        capsys,
    )
    assert "sha256" in msg


def test_debug_shows_traceback(tmp_path):
    with pytest.raises(Exception, match="unknown model"):
        main(
            [
                "--debug",
                "run",
                str(ROOT / "configs/smoke.yaml"),
                "--out",
                str(tmp_path / "x"),
                *SYNTH,
                "--set",
                "student.model=nope",
            ]
        )


def test_ensemble_of_saved_teachers_through_a_recipe(tmp_path, capsys):
    for i in (1, 2):
        assert main(["train", str(ROOT / "configs/smoke.yaml"), "--out", str(tmp_path / f"t{i}"), *SYNTH,
                     "--set", f"seed={i}"]) == 0  # fmt: skip
    ens = f"[{tmp_path / 't1/teacher'}, {tmp_path / 't2/teacher'}]"
    methods = "methods=[{name: multi_kd}, {name: kd}]"
    args = ["run", str(ROOT / "configs/smoke.yaml"), "--out", str(tmp_path / "s"), *SYNTH]
    assert main([*args, "--set", f"teacher.ensemble={ens}", "--set", methods]) == 0
    report = json.loads((tmp_path / "s/report.json").read_text())
    assert report["teacher"]["method"] == "ensemble"
    one = json.loads((tmp_path / "t1/report.json").read_text())["teacher"]
    assert report["teacher"]["params"] == 2 * one["params"]
    assert [s["method"] for s in report["students"]] == ["multi_kd", "kd"]


def test_born_again_generations(tmp_path, capsys):
    assert main(["train", str(ROOT / "configs/smoke.yaml"), "--out", str(tmp_path / "t"), *SYNTH]) == 0
    assert main(["born-again", str(ROOT / "configs/smoke.yaml"), "--teacher", str(tmp_path / "t/teacher"),
                 "--generations", "2", "--out", str(tmp_path / "ban"), *SYNTH,
                 "--set", "methods=[{name: kd, params: {alpha: 1.0}}]"]) == 0  # fmt: skip
    rows = json.loads((tmp_path / "ban/born_again.json").read_text())
    assert [r["generation"] for r in rows] == [1, 2] and rows[1]["ensemble_accuracy"] is not None
    assert (tmp_path / "ban/gen2/model.safetensors").is_file()

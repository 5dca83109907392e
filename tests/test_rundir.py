"""Run directories (issue 13, data loss): ``--overwrite`` never deletes what distill did not write, nor an input of
the command; a bad ``--out`` is one line, exit 2, nothing written (:mod:`distill.workflow.rundir`)."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from distill import api
from distill.artifacts import save_model
from distill.cli import main
from distill.errors import DistillError
from distill.workflow import rundir
from distill.workflow.rundir import MARKER

ROOT = Path(__file__).resolve().parents[1]

TINY = """\
seed: 0
data: {name: synthetic, options: {n_train: 128, n_test: 64}, val_size: 32, batch_size: 32}
teacher: {model: cnn, kwargs: {width: 4, blocks: 1}, train: {epochs: 1, lr: 0.05}}
student: {model: cnn, kwargs: {width: 4, blocks: 1}}
train: {epochs: 1, lr: 0.05}
methods: [{name: kd}]
bench: {latency: false}
"""


@pytest.fixture
def recipe(tmp_path: Path) -> str:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return str(path)


@pytest.fixture
def base(tmp_path: Path, recipe: str) -> Path:
    """A run directory distill made, holding a real (untrained) teacher for the tiny recipe."""
    cfg = api.as_config(recipe)
    data, _ = api.load_data(cfg)
    out = tmp_path / "base"
    api.prepare_out_dir(out, False, False, cfg)
    save_model(out / "teacher", api.build_model(cfg.teacher, data), api.model_spec(cfg.teacher, data))
    return out


def tree(d: Path) -> dict[str, bytes]:
    """Every file under ``d`` (hidden ones too) and its bytes."""
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def one_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("distill: error: "), lines
    return lines[0]


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    d = tmp_path / "victim"
    (d / "sub").mkdir(parents=True)
    (d / "thesis.txt").write_text("four years of work\n")
    (d / "sub" / "notes.md").write_text("# notes\n")
    return d


# -- the reported data losses ---------------------------------------------------------------------------------------


def test_overwrite_keeps_a_folder_distill_did_not_make(recipe, victim, capsys):
    before = tree(victim)
    assert main(["run", recipe, "--out", str(victim), "--overwrite"]) == 2
    line = one_line(capsys)
    assert "not made by distill" in line and MARKER in line
    assert tree(victim) == before


def test_resume_into_a_foreign_folder_is_refused(recipe, victim, capsys):
    before = tree(victim)
    assert main(["run", recipe, "--out", str(victim), "--resume"]) == 2
    assert "is not a run directory" in one_line(capsys)
    assert tree(victim) == before


@pytest.mark.parametrize("where", ["base", "base/teacher"])
def test_distill_overwrite_never_deletes_its_teacher(recipe, base, where, capsys):
    before = tree(base)
    out = base.parent / where
    assert main(["distill", recipe, "--teacher", str(base / "teacher"), "--out", str(out), "--overwrite"]) == 2
    line = one_line(capsys)
    assert "the teacher" in line and "--overwrite would delete it" in line
    assert tree(base) == before


def test_overwrite_never_deletes_an_ensemble_member(recipe, base, capsys):
    before = tree(base)
    member = json.dumps(str(base / "teacher"))
    argv = ["run", recipe, "--out", str(base), "--overwrite", "--set", f"teacher.ensemble=[{member}]"]
    assert main(argv) == 2
    assert "the ensemble member" in one_line(capsys)
    assert tree(base) == before


def test_compress_overwrite_never_deletes_its_input_model(base, capsys):
    pytest.importorskip("torch_pruning")
    before = tree(base)
    argv = ["compress", "--model", str(base / "teacher"), "--out", str(base), "--overwrite"]
    assert main([*argv, "--set", "data.name=synthetic", "--set", "device=cpu"]) == 2
    assert "the input model" in one_line(capsys)
    assert tree(base) == before


def test_overwrite_replaces_a_run_directory_distill_made(recipe, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", recipe, "--out", str(out)]) == 0
    marker = json.loads((out / MARKER).read_text())
    assert marker["kind"] == "run" and marker["created"] and marker["distill"]
    (out / "stale.txt").write_text("from the old run")
    assert main(["train", recipe, "--out", str(out), "--overwrite"]) == 0
    assert not (out / "stale.txt").exists() and (out / "report.json").is_file() and (out / MARKER).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "tiny.yaml"]  # no old copy left aside


# -- bad --out: one line, exit 2, nothing written ------------------------------------------------------------------


@pytest.mark.parametrize("command", ["run", "born-again", "text", "compress"])
def test_out_naming_a_file_is_refused(command, recipe, tmp_path, capsys):
    f = tmp_path / "results.txt"
    f.write_text("not a directory")
    argv = {
        "run": ["run", recipe],
        "born-again": ["born-again", recipe, "--teacher", str(tmp_path / "t")],
        "text": ["text", str(ROOT / "configs/text.yaml")],
        "compress": ["compress", "--model", str(tmp_path / "m")],
    }[command]
    assert main([*argv, "--out", str(f), "--overwrite"]) == 2
    assert "is a file, not a directory" in one_line(capsys)
    assert f.read_text() == "not a directory"


def test_read_only_parent_is_one_line(recipe, tmp_path, capsys, monkeypatch):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        if os.access(parent, os.W_OK):  # root writes anyway: act as a user the mode applies to
            real = os.access
            monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != parent and real(p, mode, **kw))
        assert main(["run", recipe, "--out", str(parent / "sub" / "run")]) == 2
        line = one_line(capsys)
        assert "cannot create run directory" in line and "Permission denied" in line
        assert list(parent.iterdir()) == []
    finally:
        parent.chmod(0o755)


def test_filesystem_errors_while_creating_are_one_line_and_leave_nothing(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(rundir, "write_marker", full)
    with pytest.raises(DistillError, match=r"cannot create run directory .*No space left on device"):
        rundir.prepare(tmp_path / "a" / "b", kind="run")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_replacement_restores_the_old_directory(tmp_path, monkeypatch):
    old = tmp_path / "run"
    rundir.prepare(old, kind="run")
    (old / "report.json").write_text("{}")
    before = tree(old)

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(rundir, "write_marker", denied)
    with pytest.raises(DistillError, match="Permission denied"):
        rundir.prepare(old, kind="run", overwrite=True)
    assert tree(old) == before and sorted(p.name for p in tmp_path.iterdir()) == ["run"]


@pytest.mark.parametrize("nested", [False, True])
def test_an_over_long_name_is_one_line(recipe, tmp_path, nested, capsys):
    out = tmp_path / "a" / ("x" * 256) if nested else tmp_path / ("x" * 256)
    assert main(["run", recipe, "--out", str(out)]) == 2
    assert "File name too long" in one_line(capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.yaml"]


def test_born_again_with_zero_generations_leaves_nothing(recipe, base, tmp_path, capsys):
    out = tmp_path / "ba"
    argv = ["born-again", recipe, "--teacher", str(base / "teacher"), "--out", str(out)]
    assert main([*argv, "--generations", "0"]) == 2
    assert "--generations must be >= 1" in one_line(capsys)
    assert not out.exists()
    assert main([*argv, "--generations", "1"]) == 0  # the corrected rerun is not blocked
    assert json.loads((out / MARKER).read_text())["kind"] == "born-again"


# -- the rules --------------------------------------------------------------------------------------------------------


def test_legacy_directories_count_as_ours(tmp_path):
    def make(name: str, files: dict[str, str]) -> Path:
        d = tmp_path / name
        d.mkdir()
        for f, text in files.items():
            (d / f).write_text(text)
        return d

    assert rundir.is_ours(make("run", {"config.yaml": "seed: 0\n", "report.json": "{}"}))
    assert rundir.is_ours(make("text", {"manifest.json": json.dumps({"format": "distill-manifest/1"})}))
    assert rundir.is_ours(make("model", {"model.json": "{}", "model.safetensors": ""}))
    assert rundir.is_ours(make("marked", {MARKER: "{}"}))
    assert not rundir.is_ours(make("cfg", {"config.yaml": "seed: 0\n"}))
    assert not rundir.is_ours(make("other", {"manifest.json": "{}", "notes.md": ""}))


def test_resume_needs_the_same_kind(tmp_path):
    d = tmp_path / "d"
    rundir.prepare(d, kind="run")
    (d / "config.yaml").write_text("seed: 0\n")
    assert rundir.check(d, kind="run", resume=True) == "resume"
    with pytest.raises(DistillError, match="is not a sweep directory"):
        rundir.check(d, kind="sweep", resume=True)


def test_an_out_inside_an_input_is_never_replaced(tmp_path):
    data = tmp_path / "data"
    out = data / "runs" / "x"
    rundir.prepare(out, kind="run")
    (out / "report.json").write_text("{}")
    with pytest.raises(DistillError, match="lies inside the data root"):
        rundir.check(out, kind="run", overwrite=True, inputs=[("the data root", data)])
    assert rundir.check(out, kind="run", overwrite=True, inputs=[("the data root", tmp_path / "elsewhere")]) == (
        "replace"
    )


def test_a_directory_holding_only_the_marker_counts_as_empty(tmp_path):
    d = tmp_path / "d"
    rundir.prepare(d, kind="compress")
    assert rundir.prepare(d, kind="text") == "create"
    assert json.loads((d / MARKER).read_text())["kind"] == "text"

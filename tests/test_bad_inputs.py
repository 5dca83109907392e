"""Every bad input in tests/bad_input_cases.py: one line saying what is wrong, exit 2, no traceback, nothing lost."""

import errno
import hashlib
import json
import pickle
import re
import shutil
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distill.cli import main
from distill.config import load_config
from distill.data.idx import write_idx
from distill.errors import ConfigError
from distill.trust import generate_keypair, sign_model

sys.path.insert(0, str(Path(__file__).parent))
from bad_input_cases import CASES, RUN, SYN, fill

ROOT = Path(__file__).resolve().parents[1]


class Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch /tmp/distill-pwned",))


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def tree_digest(d: Path) -> dict[str, str]:
    return {
        str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    base = tmp_path_factory.mktemp("bad")
    recipe = str(ROOT / "configs/smoke.yaml")
    run = base / "run"
    assert main(["run", recipe, "--out", str(run), *SYN]) == 0
    teacher = run / "teacher"
    wrong = base / "wrongarch"
    shutil.copytree(teacher, wrong)
    spec = json.loads((wrong / "model.json").read_text())
    spec["kwargs"] = {"width": 5}
    (wrong / "model.json").write_text(json.dumps(spec))
    tampered = base / "tampered"
    shutil.copytree(teacher, tampered)
    flip(tampered / "model.safetensors", -2)
    generate_keypair(base / "k.key", base / "k.pub")
    signed = base / "signed"
    shutil.copytree(teacher, signed)
    sign_model(signed, base / "k.key")
    flip(signed / "model.json", 5)
    truncrun = base / "truncrun"
    shutil.copytree(run, truncrun)
    for f in ("done.json", "model.json", "model.safetensors"):
        (truncrun / "teacher" / f).unlink()
    ck = truncrun / "teacher" / "checkpoint.safetensors"
    ck.write_bytes(ck.read_bytes()[:-100])
    evil = base / "evil.pt"
    evil.write_bytes(pickle.dumps({"weight": Evil()}))
    garbage = base / "garbage"
    garbage.mkdir()
    for name in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ):
        (garbage / name).write_bytes(b"not an idx file at all")
    (base / "empty").mkdir()
    x = np.zeros((100, 28, 28), dtype=np.uint8)
    for name, labels in (("oneclass", np.zeros(100)), ("stray", np.r_[np.arange(99) % 4, 300])):
        for prefix, n in (("train", 100), ("t10k", 20)):
            write_idx(base / name / f"{prefix}-images-idx3-ubyte", x[:n])
            write_idx(base / name / f"{prefix}-labels-idx1-ubyte", labels[:n].astype(np.int16))
    write_audio_folders(base)
    truncreport = base / "truncreport"
    truncreport.mkdir()
    (truncreport / "report.json").write_bytes((run / "report.json").read_bytes()[:200])
    return {
        "recipe": recipe,
        "run": str(run),
        "teacher": str(teacher),
        "wrongarch": str(wrong),
        "tampered": str(tampered),
        "signed": str(signed),
        "pub": str(base / "k.pub"),
        "truncrun": str(truncrun),
        "evil": str(evil),
        "garbage": str(garbage),
        "empty": str(base / "empty"),
        "key": str(base / "k.key"),
        "keyprefix": str(base / "k"),
        "textrecipe": str(ROOT / "configs/text.yaml"),
        "oneclass": str(base / "oneclass"),
        "stray": str(base / "stray"),
        "truncreport": str(truncreport),
        **{k: str(base / k) for k in ("badwav", "emptywav", "emptyclass", "noaudio")},
    }


def write_wav(path: Path, seconds: float = 0.5, freq: float = 440.0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(round(16000 * seconds)) / 16000
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes((8000 * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes())


def write_audio_folders(base: Path) -> None:
    """Audio folders (train/ and test/ of two classes) with one defect each (see bad_input_cases.py)."""
    for name in ("badwav", "emptywav", "emptyclass"):
        for split in ("train", "test"):
            for i, c in enumerate(("no", "yes")):
                write_wav(base / name / split / c / "a.wav", freq=300 + 200 * i)
    (base / "badwav" / "train" / "yes" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really")
    (base / "emptywav" / "test" / "no" / "empty.wav").write_bytes(b"")
    (base / "emptyclass" / "train" / "maybe").mkdir()
    for c in ("cats", "dogs"):
        (base / "noaudio" / c).mkdir(parents=True)
        (base / "noaudio" / c / "a.txt").write_text("not audio")


def write_recipes(tmp: Path) -> None:
    (tmp / "bad.yaml").write_text("train: [1, 2\nmethods: x\n")
    (tmp / "list.yaml").write_text("- 1\n- 2\n")
    (tmp / "tag.yaml").write_text("seed: !!python/object/apply:os.system ['touch /tmp/distill-pwned']\n")
    (tmp / "dup.yaml").write_text("seed: 1\ndata: {name: synthetic}\nseed: 2\n")
    (tmp / "latin.yaml").write_bytes("seed: 0  # café\n".encode("latin-1"))
    rows = "".join(f"{i},{'Orléans' if i % 2 else 'Caen'},{'yn'[i % 2]}\n" for i in range(20))
    (tmp / "latin.csv").write_bytes(("x,town,label\n" + rows).encode("latin-1"))


@pytest.mark.parametrize(("case", "what", "argv", "pattern"), CASES, ids=[c[0] for c in CASES])
def test_bad_input(case, what, argv, pattern, fixtures, tmp_path, capsys):
    write_recipes(tmp_path)
    args = [fill(a, {"tmp": tmp_path, **fixtures}) for a in argv]
    watched = [Path(fixtures[k]) for k in ("run", "truncrun", "teacher")]
    before = [tree_digest(d) for d in watched]
    capsys.readouterr()
    code = main(args)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, f"{case}: exit {code}, stderr: {err}"
    assert "Traceback" not in err
    assert len(lines) == 1 and lines[0].startswith("distill: error: "), f"{case}: {err}"
    assert re.search(pattern, lines[0]), f"{case}: {lines[0]!r} does not match {pattern!r}"
    assert not (tmp_path / "out").exists(), f"{case}: wrote a run directory for a bad input"
    assert [tree_digest(d) for d in watched] == before, f"{case}: changed existing files"
    assert not Path("/tmp/distill-pwned").exists()


def test_there_are_at_least_30_cases_and_ids_are_unique():
    ids = [c[0] for c in CASES]
    assert len(ids) >= 30 and len(set(ids)) == len(ids)


def test_docs_table_lists_every_case():
    doc = (ROOT / "docs/bad-inputs.md").read_text()
    missing = [c[0] for c in CASES if f"`{c[0]}`" not in doc]
    assert not missing, f"docs/bad-inputs.md is stale (run scripts/bad_inputs_doc.py): {missing}"


yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.floats(allow_nan=True) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
keys = st.sampled_from(["seed", "data", "train", "teacher", "student", "methods", "bench", "select", "amp", "bogus"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(keys, yaml_values, max_size=4))
def test_config_loader_fuzz_only_raises_config_errors(tmp_path, raw):
    p = tmp_path / "fuzz.yaml"
    p.write_text(yaml.safe_dump(raw))
    try:
        load_config(p)
    except ConfigError as e:
        assert str(e) and "\n" not in str(e)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=60))
def test_config_loader_fuzz_raw_text(tmp_path, text):
    p = tmp_path / "fuzz.yaml"
    p.write_text(text)
    try:
        load_config(p)
    except ConfigError:
        pass


# ----------------------------------------------------------------------------------------- the CLI's error boundary


def _raise(exc: BaseException):
    def dispatch(args):
        raise exc

    return dispatch


ENV_ERRORS = [
    (
        PermissionError(errno.EACCES, "Permission denied", "/no-dir/out"),
        "cannot create '/no-dir/out': Permission denied",
    ),
    (OSError(errno.EROFS, "Read-only file system", "/mnt/ro/x"), "cannot write '/mnt/ro/x': Read-only file system"),
    (OSError(errno.ENOSPC, "No space left on device", "/f"), "cannot write '/f': No space left on device; free"),
    (OSError(errno.ENOSPC, "No space left on device"), "No space left on device (errno 28)"),
    (FileNotFoundError(errno.ENOENT, "No such file or directory", "/x/y"), "cannot open '/x/y': No such file"),
    (OSError(errno.ENAMETOOLONG, "File name too long", "/t/" + "n" * 300), "path too long: '/t/nnn"),
    (UnicodeDecodeError("utf-8", b"ab\xff", 2, 3, "invalid start byte"), "cannot read a file as utf-8 text (byte 0xff"),
    (UnicodeEncodeError("ascii", "caf\xe9", 3, 4, "ordinal not in range"), "cannot encode 'é' as ascii; use a UTF-8"),
]


@pytest.mark.parametrize(
    ("exc", "expect"), ENV_ERRORS, ids=[type(e).__name__ + str(i) for i, (e, _) in enumerate(ENV_ERRORS)]
)
def test_environment_errors_raised_anywhere_are_one_line_and_debug_still_raises(monkeypatch, capsys, exc, expect):
    import distill.cli as cli

    monkeypatch.setattr(cli, "dispatch", _raise(exc))
    assert main(["list", "models"]) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"distill: error: {expect}"), lines
    with pytest.raises(type(exc)):
        main(["--debug", "list", "models"])


def test_bugs_keep_their_traceback(monkeypatch):
    import distill.cli as cli

    monkeypatch.setattr(cli, "dispatch", _raise(RuntimeError("a bug")))
    with pytest.raises(RuntimeError, match="a bug"):
        main(["list", "models"])


def test_a_file_where_the_cache_directory_should_be_is_one_line(fixtures, tmp_path, capsys):
    """A real OSError from deep inside a run (the teacher cache's temporary file) reaches the boundary."""
    (tmp_path / "afile").write_text("x")
    args = [*RUN, "--set", "cache.mode=fixed", "--set", "data.augment=false", "--set", f"cache.dir={tmp_path}/afile/c"]
    capsys.readouterr()
    assert main([fill(a, {"tmp": tmp_path, **fixtures}) for a in args]) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip() and "epoch" not in ln]
    assert len(lines) == 1 and re.fullmatch(
        r"distill: error: cannot use '.*': .*/afile is a file, not a directory", lines[0]
    )


def test_pickle_refusal_is_one_line_in_a_real_process(fixtures, tmp_path):
    """torch warns (two lines) before it refuses the pickle; outside pytest's capture only our line may remain."""
    args = [*RUN, "--set", "student.model=torchvision:resnet18", "--set", "student.kwargs={checkpoint: '{evil}'}"]
    argv = [fill(a, {"tmp": tmp_path, **fixtures}) for a in args]
    proc = subprocess.run([sys.executable, "-m", "distill", *argv], capture_output=True, text=True, timeout=300)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("distill: error: refusing to unpickle")
    assert not Path("/tmp/distill-pwned").exists()


def test_info_refuses_a_report_that_is_not_one(fixtures, tmp_path, capsys):
    good = json.loads((Path(fixtures["run"]) / "report.json").read_text())
    bad = {
        "a list": ([], "expected a JSON object, got list"),
        "no students": ({**good, "students": None}, "'students' is missing or of the wrong type"),
        "text seconds": ({**good, "seconds": "long"}, "'seconds' is missing"),
        "text accuracy": (
            {**good, "students": [{**good["students"][0], "accuracy": "high"}]},
            "students.0.accuracy is 'high', not a number",
        ),
        "latin-1": (None, "is not valid JSON"),
    }
    for what, (report, expect) in bad.items():
        d = tmp_path / what.replace(" ", "_")
        d.mkdir()
        if report is None:
            (d / "report.json").write_bytes('{"date": "é"}'.encode("latin-1"))
        else:
            (d / "report.json").write_text(json.dumps(report))
        capsys.readouterr()
        assert main(["info", str(d)]) == 2, what
        lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert len(lines) == 1 and expect in lines[0], (what, lines)

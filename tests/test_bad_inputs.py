"""Every bad input in tests/bad_input_cases.py: one line saying what is wrong, exit 2, no traceback, nothing lost."""

import hashlib
import json
import pickle
import re
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distill.cli import main
from distill.config import load_config
from distill.errors import ConfigError
from distill.trust import generate_keypair, sign_model

sys.path.insert(0, str(Path(__file__).parent))
from bad_input_cases import CASES, SYN, fill

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
    }


def write_recipes(tmp: Path) -> None:
    (tmp / "bad.yaml").write_text("train: [1, 2\nmethods: x\n")
    (tmp / "list.yaml").write_text("- 1\n- 2\n")
    (tmp / "tag.yaml").write_text("seed: !!python/object/apply:os.system ['touch /tmp/distill-pwned']\n")


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

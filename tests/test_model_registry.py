"""The model registry: named, numbered versions in MLflow (local SQLite) with lineage; fetch verifies hashes."""

import json
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import torch

from distill.artifacts import load_model, save_model, sha256_file
from distill.cli import main
from distill.models.zoo import create_model
from distill.trust import fingerprint, generate_keypair, sign_model, verify_model

pytest.importorskip("mlflow")

RECIPE = "seed: 0\ndata: {name: synthetic}\nmethods: [{name: kd}]\n"


def spec(**extra):
    return {
        "model": "cnn",
        "kwargs": {"width": 4, "blocks": 1},
        "num_classes": 4,
        "in_channels": 1,
        "classes": ["a", "b", "c", "d"],
        "dataset": {"name": "synthetic", "fingerprint": "f" * 64},
        **extra,
    }


def tiny(seed):
    torch.manual_seed(seed)
    return create_model("cnn", num_classes=4, in_channels=1, width=4, blocks=1)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One SQLite store for the module (MLflow's first open of a store takes seconds), a run with a teacher and a
    student, and a key pair; the teacher is registered first so that the students' lineage can name it."""
    base = tmp_path_factory.mktemp("registry")
    run = base / "run"
    run.mkdir()
    (run / "config.yaml").write_text(RECIPE)
    save_model(run / "teacher", tiny(0), spec())
    save_model(run / "students" / "kd", tiny(1), spec(method="kd", teacher=str(run / "teacher")))
    generate_keypair(base / "k.key", base / "k.pub")
    uri = f"sqlite:///{(base / 'db' / 'mlruns.db').as_posix()}"
    assert main(["register", str(run / "teacher"), "--name", "teach", "--uri", uri]) == 0
    assert main(["register", str(run / "students" / "kd"), "--name", "student", "--uri", uri]) == 0
    key = str(base / "k.key")
    assert main(["register", str(run / "students" / "kd"), "--name", "student", "--uri", uri, "--key", key]) == 0
    return {"base": base, "run": run, "uri": uri, "pub": base / "k.pub"}


def version(store, name, v):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=store["uri"], registry_uri=store["uri"]).get_model_version(name, str(v))


def test_two_versions_with_lineage_tags(store):
    student = store["run"] / "students" / "kd"
    v1, v2 = version(store, "student", 1), version(store, "student", 2)
    for v in (v1, v2):
        t = v.tags
        assert t["distill.teacher_name"] == "teach" and t["distill.teacher_version"] == "1"
        assert t["distill.teacher_path"] == str((store["run"] / "teacher").resolve())
        assert t["distill.teacher_sha256"] == sha256_file(store["run"] / "teacher" / "model.safetensors")
        assert t["distill.recipe"] == RECIPE
        assert t["distill.data_fingerprint"] == "f" * 64
        assert t["distill.weights_sha256"] == sha256_file(student / "model.safetensors")
        assert t["distill.method"] == "kd"
    assert v1.tags["distill.signer"] == ""
    assert v2.tags["distill.signer"] == fingerprint(store["pub"])
    assert sorted(json.loads(v2.tags["distill.files_sha256"])) == ["model.json", "model.safetensors", "signature.json"]
    assert not (student / "signature.json").exists()  # --key signed a copy, not the user's directory
    assert version(store, "teach", 1).tags.get("distill.teacher_name") is None


def test_models_list_shows_versions_and_lineage(store, capsys):
    capsys.readouterr()
    assert main(["models", "list", "student", "--uri", store["uri"]]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split(":")[0] for ln in lines] == ["student v1", "student v2"]
    assert "teacher teach v1" in lines[0] and "signer -" in lines[0]
    assert f"signer {fingerprint(store['pub'])[:12]}" in lines[1]
    assert main(["models", "list", "--uri", store["uri"], "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["version"]) for r in rows] == [("student", 1), ("student", 2), ("teach", 1)]


def test_fetch_verifies_and_refuses_to_overwrite(store, tmp_path, capsys):
    out = tmp_path / "fetched"
    assert main(["models", "fetch", "student", "--version", "2", "--out", str(out), "--uri", store["uri"],
                 "--key", str(store["pub"])]) == 0  # fmt: skip
    model, _ = load_model(out, public_key=store["pub"])
    ref, _ = load_model(store["run"] / "students" / "kd")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref.state_dict().values(), strict=True))
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert main(["models", "fetch", "student", "--version", "1", "--out", str(out), "--uri", store["uri"]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already exists" in err[0] and "--overwrite" in err[0]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert main(["models", "fetch", "student", "--version", "1", "--out", str(out), "--uri", store["uri"],
                 "--overwrite"]) == 0  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == ["model.json", "model.safetensors"]


def test_fetch_of_unsigned_version_with_key_is_refused(store, tmp_path, capsys):
    out = tmp_path / "v1"
    args = ["models", "fetch", "student", "--version", "1", "--out", str(out), "--uri", store["uri"]]
    assert main([*args, "--key", str(store["pub"])]) == 2
    assert "is not signed" in capsys.readouterr().err
    assert not out.exists() and not list(tmp_path.iterdir())


def test_tampered_registered_file_is_refused_on_fetch(store, tmp_path, capsys):
    base = store["base"]
    save_model(base / "victim", tiny(2), spec())
    assert main(["register", str(base / "victim"), "--name", "victim", "--uri", store["uri"]]) == 0
    src = Path(unquote(urlparse(version(store, "victim", 1).source).path))
    weights = src / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x01
    weights.write_bytes(bytes(data))
    out = tmp_path / "victim"
    capsys.readouterr()
    assert main(["models", "fetch", "victim", "--version", "1", "--out", str(out), "--uri", store["uri"]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.safetensors" in err[0] and "tampered" in err[0]
    assert not out.exists() and not list(tmp_path.iterdir())  # nothing half-fetched left behind


def test_bad_requests_are_one_line_errors(store, tmp_path, capsys):
    uri = store["uri"]
    cases = [
        (["models", "fetch", "student", "--version", "9", "--out", str(tmp_path / "x"), "--uri", uri], "versions"),
        (["models", "list", "nobody", "--uri", uri], "no registered model 'nobody'"),
        (["register", str(tmp_path), "--name", "x", "--uri", uri], "is not a model directory"),
        (["register", str(store["run"] / "teacher"), "--name", "x", "--uri", "http://example.com"], "not local"),
    ]
    for argv, pattern in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and pattern in err[0], (argv, err)


def tree(directory):
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def text_like(directory, seed, key=None):
    """A model directory with a subfolder, as a text model's ``tokenizer/``; signed with ``key`` when given."""
    save_model(directory, tiny(seed), spec())
    (directory / "tokenizer").mkdir()
    (directory / "tokenizer" / "tokenizer.json").write_text('{"model": {"vocab": {"[PAD]": 0, "good": 1}}}\n')
    if key is not None:
        sign_model(directory, key)
    return directory


@pytest.mark.parametrize("sign", ["before", "on-register"])
def test_signed_model_with_a_subfolder_round_trips_and_tampering_is_refused(store, tmp_path, capsys, sign):
    base, uri, pub = store["base"], store["uri"], str(store["pub"])
    name = f"texty-{sign}"
    src = text_like(tmp_path / "src", 5, base / "k.key" if sign == "before" else None)
    before = tree(src)
    extra = ["--key", str(base / "k.key")] if sign == "on-register" else []
    assert main(["register", str(src), "--name", name, "--uri", uri, *extra]) == 0
    assert tree(src) == before  # the user's directory is not changed
    files = json.loads(version(store, name, 1).tags["distill.files_sha256"])
    assert sorted(files) == ["model.json", "model.safetensors", "signature.json", "tokenizer/tokenizer.json"]
    out = tmp_path / "fetched"
    fetch = ["models", "fetch", name, "--version", "1", "--uri", uri, "--key", pub]
    assert main([*fetch, "--out", str(out)]) == 0
    got = tree(out)
    if sign == "before":
        assert got == before  # identical, file by file
    else:  # the copy was signed on registration: the same files plus its new signature
        assert {k: v for k, v in got.items() if k != "signature.json"} == before
    assert sorted(verify_model(out, pub)) == ["model.json", "model.safetensors", "tokenizer/tokenizer.json"]
    registered = Path(unquote(urlparse(version(store, name, 1).source).path))
    (registered / "tokenizer" / "tokenizer.json").write_text('{"model": {"vocab": {"[PAD]": 0, "bad": 1}}}\n')
    capsys.readouterr()
    assert main([*fetch, "--out", str(tmp_path / "again")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tokenizer/tokenizer.json" in err[0] and "tampered" in err[0], err
    assert not (tmp_path / "again").exists()


def test_register_refuses_a_directory_that_no_longer_matches_its_signature(store, tmp_path, capsys):
    key, uri = str(store["base"] / "k.key"), store["uri"]
    added = text_like(tmp_path / "added", 6, key)
    (added / "tokenizer" / "vocab.txt").write_text("[PAD]\n")
    changed = text_like(tmp_path / "changed", 6, key)
    (changed / "tokenizer" / "tokenizer.json").write_text("{}\n")
    nohash = tmp_path / "nohash"
    save_model(nohash, tiny(6), spec())
    meta = json.loads((nohash / "model.json").read_text())
    del meta["sha256"]
    (nohash / "model.json").write_text(json.dumps(meta))
    cases = [
        ([str(added)], "tokenizer/vocab.txt not covered by the signature"),
        ([str(added), "--key", key], None),  # re-signing a copy covers the added file
        ([str(changed)], "tokenizer/tokenizer.json changed after signing"),
        ([str(changed), "--key", key], "tokenizer/tokenizer.json changed after signing"),  # never vouch for it
        ([str(nohash)], "records no sha256"),
    ]
    for args, pattern in cases:
        capsys.readouterr()
        code = main(["register", *args, "--name", "refused", "--uri", uri])
        err = capsys.readouterr().err.strip().splitlines()
        if pattern is None:
            assert code == 0, err
        else:
            assert code == 2 and len(err) == 1 and pattern in err[0], (args, err)
    # a version whose file list was edited to reach outside the fetched directory is refused before any copy
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    files = json.loads(version(store, "refused", 1).tags["distill.files_sha256"])
    client.set_model_version_tag("refused", "1", "distill.files_sha256", json.dumps({**files, "../escape": "0" * 64}))
    capsys.readouterr()
    out = tmp_path / "out"
    assert main(["models", "fetch", "refused", "--version", "1", "--out", str(out), "--uri", uri]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'../escape' is not a plain relative path" in err[0], err
    assert not out.exists() and not (tmp_path / "escape").exists()

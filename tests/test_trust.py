"""Signatures: a flipped byte anywhere in a signed model directory is refused, always."""

import json

import pytest
import torch

from distill.artifacts import load_model, save_model
from distill.cli import main
from distill.errors import CheckpointError, DistillError
from distill.models.zoo import create_model
from distill.trust import generate_keypair, sign_model, verify_model

SPEC = {
    "model": "cnn",
    "kwargs": {"width": 4, "blocks": 1},
    "num_classes": 4,
    "in_channels": 1,
    "classes": list("abcd"),
}


@pytest.fixture
def signed(tmp_path):
    torch.manual_seed(0)
    model = create_model("cnn", num_classes=4, in_channels=1, width=4, blocks=1)
    d = tmp_path / "model"
    save_model(d, model, SPEC)
    generate_keypair(tmp_path / "k.key", tmp_path / "k.pub")
    sign_model(d, tmp_path / "k.key")
    return d, tmp_path / "k.pub", model


def flip(path, offset):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_valid_signature_loads_the_same_weights(signed):
    d, pub, model = signed
    assert set(verify_model(d, pub)) == {"model.json", "model.safetensors"}
    loaded, _spec = load_model(d, public_key=pub)
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k])


@pytest.mark.parametrize("name", ["model.safetensors", "model.json"])
@pytest.mark.parametrize("where", [0, -1, "middle"])
def test_any_flipped_byte_is_refused(signed, name, where):
    d, pub, _ = signed
    size = (d / name).stat().st_size
    flip(d / name, size // 2 if where == "middle" else where)
    with pytest.raises(CheckpointError, match="changed after signing"):
        verify_model(d, pub)
    with pytest.raises(CheckpointError):
        load_model(d, public_key=pub)


def test_altered_signature_file_and_wrong_key_and_unsigned(signed, tmp_path):
    d, pub, _ = signed
    sig = json.loads((d / "signature.json").read_text())
    sig["files"]["model.json"] = "0" * 64
    (d / "signature.json").write_text(json.dumps(sig))
    with pytest.raises(CheckpointError, match=r"signature .* is invalid"):
        verify_model(d, pub)
    generate_keypair(tmp_path / "other.key", tmp_path / "other.pub")
    with pytest.raises(CheckpointError, match="signed by key"):
        verify_model(d, tmp_path / "other.pub")
    (d / "signature.json").unlink()
    with pytest.raises(CheckpointError, match="not signed"):
        load_model(d, public_key=pub)


def test_unsigned_extra_weights_are_refused(signed):
    d, pub, _ = signed
    (d / "extra.safetensors").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="not covered"):
        verify_model(d, pub)


def test_keys_are_never_overwritten(tmp_path):
    generate_keypair(tmp_path / "a.key", tmp_path / "a.pub")
    before = (tmp_path / "a.key").read_bytes()
    with pytest.raises(DistillError, match="refusing to overwrite"):
        generate_keypair(tmp_path / "a.key", tmp_path / "b.pub")
    assert (tmp_path / "a.key").read_bytes() == before
    assert oct((tmp_path / "a.key").stat().st_mode & 0o777) == "0o600"


def test_cli_keygen_sign_verify(signed, tmp_path, capsys):
    d, _, _ = signed
    assert main(["keygen", "--out", str(tmp_path / "cli")]) == 0
    before = (d / "signature.json").read_bytes()
    assert main(["sign", str(d), "--key", str(tmp_path / "cli.key")]) == 2  # already signed: not replaced silently
    assert "--overwrite" in capsys.readouterr().err and (d / "signature.json").read_bytes() == before
    assert main(["sign", str(d), "--key", str(tmp_path / "cli.key"), "--overwrite"]) == 0
    assert main(["verify", str(d), "--key", str(tmp_path / "cli.pub")]) == 0
    assert "signature valid" in capsys.readouterr().out
    flip(d / "model.safetensors", -3)
    assert main(["verify", str(d), "--key", str(tmp_path / "cli.pub")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "changed after signing" in err[0]


# -- the whole tree is signed (format 2) ----------------------------------------------------------------------------


@pytest.fixture
def signed_tree(tmp_path):
    """A signed model directory with a subfolder, like a text model's ``tokenizer/`` (no real text model needed)."""
    torch.manual_seed(0)
    d = tmp_path / "text-like"
    save_model(d, create_model("cnn", num_classes=4, in_channels=1, width=4, blocks=1), SPEC)
    (d / "tokenizer").mkdir()
    (d / "tokenizer" / "tokenizer.json").write_text('{"vocab": ["a", "b"]}')
    (d / "tokenizer" / "special" / "x.json").parent.mkdir()
    (d / "tokenizer" / "special" / "x.json").write_text("{}")
    generate_keypair(tmp_path / "k.key", tmp_path / "k.pub")
    sign_model(d, tmp_path / "k.key")
    return d, tmp_path / "k.pub"


def test_subfolders_are_signed_by_relative_posix_path(signed_tree):
    d, pub = signed_tree
    sig = json.loads((d / "signature.json").read_text())
    assert sig["format"] == 2
    assert set(verify_model(d, pub)) == {
        "model.json",
        "model.safetensors",
        "tokenizer/tokenizer.json",
        "tokenizer/special/x.json",
    }


def test_a_tampered_file_in_a_subfolder_is_refused(signed_tree):
    d, pub = signed_tree
    flip(d / "tokenizer" / "tokenizer.json", 3)
    with pytest.raises(CheckpointError, match=r"tokenizer/tokenizer\.json changed after signing"):
        verify_model(d, pub)
    with pytest.raises(CheckpointError, match="changed after signing"):
        load_model(d, public_key=pub)


@pytest.mark.parametrize("name", ["tokenizer/extra.txt", "tokenizer/special/added.json", "new/dir/file", ".hidden"])
def test_an_extra_file_anywhere_is_refused(signed_tree, name):
    d, pub = signed_tree
    (d / name).parent.mkdir(parents=True, exist_ok=True)
    (d / name).write_text("x")
    with pytest.raises(CheckpointError, match=rf"{name} not covered by the signature"):
        verify_model(d, pub)


@pytest.mark.parametrize("name", ["tokenizer/special/x.json", "model.json"])
def test_a_missing_signed_file_is_refused(signed_tree, name):
    d, pub = signed_tree
    (d / name).unlink()
    with pytest.raises(CheckpointError, match=rf"{name} missing"):
        verify_model(d, pub)


def test_a_symlink_in_a_signed_tree_is_refused(signed_tree, tmp_path):
    d, pub = signed_tree
    (tmp_path / "elsewhere").mkdir()
    (d / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(CheckpointError, match="linked is a symbolic link"):
        verify_model(d, pub)


def test_an_old_format_signature_is_refused_with_the_resign_hint(signed, tmp_path, capsys):
    """Format 1 covered top-level files only: even a valid one is refused, naming the command that re-signs."""
    d, pub, _ = signed
    sig = json.loads((d / "signature.json").read_text())
    del sig["format"]
    (d / "signature.json").write_text(json.dumps(sig))
    with pytest.raises(CheckpointError, match=r"format-1 signature .*distill sign .* --overwrite"):
        verify_model(d, pub)
    assert main(["verify", str(d), "--key", str(pub)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "re-sign" in err[0]
    assert main(["sign", str(d), "--key", str(tmp_path / "k.key"), "--overwrite"]) == 0
    assert main(["verify", str(d), "--key", str(pub)]) == 0


@pytest.mark.parametrize("text", ["[1, 2]", "{not json", '{"format": 2, "files": {}}', '{"format": 2, "files": []}'])
def test_a_malformed_signature_file_is_refused(signed, text):
    d, pub, _ = signed
    (d / "signature.json").write_text(text)
    with pytest.raises(CheckpointError, match="malformed"):
        verify_model(d, pub)


# -- model.json must be what distill writes -------------------------------------------------------------------------


def test_model_json_records_format_and_sha256(signed):
    d, _, _ = signed
    spec = json.loads((d / "model.json").read_text())
    assert spec["format"] == 1 and len(spec["sha256"]) == 64


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("[1, 2, 3]", "holds a JSON list; expected an object"),
        ('{"num_classes": 4}', "does not name the architecture"),
        ('{"model": "cnn", "num_classes": 4, "in_channels": 1}', "records no sha256"),
        ('{"model": "cnn", "sha256": ""}', "records no sha256"),
        ('{"model": "cnn", "format": 99, "sha256": "00"}', "newer than this distill reads"),
        ("{oops", "is not valid JSON"),
        (b"\xff\xfe{}", "is not UTF-8"),
    ],
)
def test_a_bad_model_json_is_one_line_error(signed, tmp_path, capsys, text, match):
    d, _, _ = signed
    path = d / "model.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(CheckpointError, match=match):
        load_model(d)
    cfg = tmp_path / "r.yaml"
    cfg.write_text("data: {name: synthetic, train_subset: 16, test_subset: 16}\ndevice: cpu\n")
    assert main(["evaluate", str(d), "--recipe", str(cfg)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("distill: error:") and "Traceback" not in err[0]


# -- keygen ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("prefix", "stem"), [("team.v2", "team.v2"), ("team.key", "team"), ("a.b.c", "a.b.c")])
def test_keygen_keeps_a_dotted_name(tmp_path, capsys, prefix, stem):
    assert main(["keygen", "--out", str(tmp_path / "keys" / prefix)]) == 0
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == [f"{stem}.key", f"{stem}.pub"]
    assert f"{stem}.key" in capsys.readouterr().out


def test_keygen_into_a_directory_is_refused(tmp_path, capsys):
    assert main(["keygen", "--out", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err

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

"""Faults: a full disk while writing a checkpoint, crashes mid-write — the previous state always survives."""

import os
import subprocess
import uuid

import pytest
import torch

from distill.artifacts import load_checkpoint, save_checkpoint
from distill.distillers import build_distiller
from distill.engine.trainer import OptimSettings, Trainer
from distill.errors import DistillError


@pytest.fixture
def tiny_disk(tmp_path):
    """A 512 KiB tmpfs: a real 'No space left on device' (needs root; skipped where mounting is not allowed)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs to fill needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def fill(directory):
    """Fill the file system until writes fail."""
    with open(directory / f"filler-{uuid.uuid4().hex}", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
        except OSError:
            pass


def test_full_disk_while_writing_a_checkpoint_keeps_the_previous_one(tiny_disk):
    ck = tiny_disk / "checkpoint.safetensors"
    save_checkpoint(ck, {"w": torch.arange(1000.0), "epoch": 1})
    before = ck.read_bytes()
    fill(tiny_disk)
    with pytest.raises(
        DistillError, match=r"could not write .*checkpoint.safetensors .*No space left.*previous version"
    ):
        save_checkpoint(ck, {"w": torch.zeros(20000), "epoch": 2})
    assert ck.read_bytes() == before
    assert load_checkpoint(ck)["epoch"] == 1
    assert not [p for p in tiny_disk.iterdir() if p.name.endswith(".tmp")]


def test_trainer_on_a_full_disk_stops_cleanly_with_last_checkpoint(tiny_disk, tiny, dm):
    d = build_distiller("scratch", tiny(4), None, dm.input_shape)
    t = Trainer(d, dm, OptimSettings(epochs=1, lr=0.05), out_dir=tiny_disk / "run")
    t.fit()
    good = (tiny_disk / "run/checkpoint.safetensors").read_bytes()
    fill(tiny_disk)
    t.epochs = 2
    with pytest.raises(DistillError, match="No space left"):
        t.fit()
    assert (tiny_disk / "run/checkpoint.safetensors").read_bytes() == good


def test_crash_inside_the_writer_leaves_no_partial_file(tmp_path, monkeypatch):
    ck = tmp_path / "ck.safetensors"
    save_checkpoint(ck, {"a": torch.ones(3)})
    before = ck.read_bytes()

    def exploding_save(tensors, path, metadata=None):
        with open(path, "wb") as f:
            f.write(b"half a file")
        raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of the write

    monkeypatch.setattr("distill.io.save_file", exploding_save)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(ck, {"a": torch.zeros(3)})
    assert ck.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["ck.safetensors"]

"""Test helpers shared by the signature tests of several commands."""

from __future__ import annotations

import json
from pathlib import Path

from safetensors.torch import load_file, save_file

from distill.artifacts import sha256_file


def tamper_and_rehash(directory: Path) -> None:
    """Alter the weights and recompute model.json's sha256, so that only a signature can tell."""
    state = load_file(str(directory / "model.safetensors"))
    first = next(iter(state))
    state[first] = state[first] + 1.0
    save_file(state, str(directory / "model.safetensors"))
    spec = json.loads((directory / "model.json").read_text())
    spec["sha256"] = sha256_file(directory / "model.safetensors")
    (directory / "model.json").write_text(json.dumps(spec))

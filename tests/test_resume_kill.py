"""Exact resume after SIGKILL: a run killed at a random point and resumed ends bit-for-bit where an uninterrupted
run ends (deterministic mode, synthetic data). Three kill points here (two with the teacher cache, one without);
raise KILLS for a longer soak."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from distill import api

KILLS = [("views", 11), ("off", 12), ("views", 13)]  # (cache mode, seed of the random kill point)
EPOCHS = 6

RECIPE = """
seed: 0
deterministic: true
device: cpu
data: {{name: synthetic, val_size: 32, batch_size: 32}}
teacher: {{model: cnn, kwargs: {{width: 4, blocks: 1}}, train: {{epochs: 1, lr: 0.05}}}}
student: {{model: cnn, kwargs: {{width: 6, blocks: 1}}}}
train: {{epochs: {epochs}, lr: 0.05}}
cache: {{mode: "{mode}", views: 3}}
methods: [{{name: kd, params: {{temperature: 4.0, alpha: 0.9}}}}]
bench: {{latency: false}}
"""


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the same as the subprocess (OMP_NUM_THREADS=1), so float sums agree bit for bit
    yield
    torch.set_num_threads(before)
    torch.use_deterministic_algorithms(False)  # api.run(deterministic=True) switched it on for this process


_REFERENCE: dict[str, dict[str, torch.Tensor]] = {}


def weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(str(out / "students" / "kd" / "model.safetensors"))


def reference(recipe: Path, mode: str, root: Path) -> dict[str, torch.Tensor]:
    if mode not in _REFERENCE:
        api.run(recipe, out=root / f"ref-{mode}")
        _REFERENCE[mode] = weights(root / f"ref-{mode}")
    return _REFERENCE[mode]


@pytest.mark.parametrize(("mode", "seed"), KILLS)
def test_sigkill_at_a_random_point_then_resume_is_bit_exact(tmp_path_factory, one_thread, mode, seed):
    root = tmp_path_factory.getbasetemp()
    recipe = root / f"recipe-{mode}.yaml"
    recipe.write_text(RECIPE.format(epochs=EPOCHS, mode=mode))
    out = tmp_path_factory.mktemp("killed") / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "distill", "run", str(recipe), "--out", str(out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rng = random.Random(seed)
    after_epochs, fraction = rng.randint(1, EPOCHS - 2), rng.random()
    metrics = out / "students" / "kd" / "metrics.jsonl"
    deadline = time.monotonic() + 120
    try:
        # wait for a student checkpoint and `after_epochs` finished epochs, then a random fraction of an epoch
        while time.monotonic() < deadline and proc.poll() is None:
            lines = metrics.read_text().splitlines() if metrics.exists() else []
            if len(lines) >= after_epochs:
                time.sleep(fraction * json.loads(lines[-1])["epoch_seconds"])  # somewhere inside the next epoch
                break
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed; lower the kill point"
    assert (out / "students" / "kd" / "checkpoint.safetensors").exists()
    assert not (out / "students" / "kd" / "done.json").exists()

    api.run(recipe, out=out, resume=True)
    resumed, ref = weights(out), reference(recipe, mode, root)
    assert resumed.keys() == ref.keys()
    for k in ref:
        assert torch.equal(resumed[k], ref[k]), k
    lines = metrics.read_text().splitlines()
    assert len(lines) == EPOCHS  # the epochs after the checkpoint were dropped and redone, none twice

"""Exact resume after SIGKILL, SIGINT and SIGTERM: a run killed at a random point and resumed ends bit-for-bit where
an uninterrupted run ends (deterministic mode, tiny synthetic data, one thread everywhere).

Ten SIGKILLs, half with the teacher cache: each picks a stage (teacher or student), a random optimizer step and a
phase — right after that step, at the end of its epoch before the checkpoint is written, or half-way through
writing that checkpoint. The killed runs are forked from one pre-imported driver process (a fresh interpreter per
kill would spend seconds importing torch); each is resumed in this process. SIGINT and SIGTERM reach a real
``python -m distill run`` through the trainer's test hook (it raises the signal in its own process right after a given
step, so nothing races the clock): the run must stop in one line with exit 128 + signum and a checkpoint that resumes
exactly. No test here waits for a file or sleeps; the only time limits are generous safety nets.
"""

import json
import os
import random
import select
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from distill import api, cli
from distill.artifacts import load_checkpoint
from distill.cli import main
from distill.engine.trainer import TEST_SIGNAL_VAR
from distill.errors import Interrupted, sigterm_as_interrupt

KILLS = [("views" if i % 2 == 0 else "off", 100 + i) for i in range(10)]  # (cache mode, seed of the kill point)
EPOCHS, TEACHER_EPOCHS = 4, 2
STEPS = 7  # per epoch: (256 - 32 validation) / 32
PHASES = ("step", "epoch_end", "write")
SAFETY_S = 600  # only against a hung run; a loaded machine is slow, never wrong
SIGNALS = pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["INT", "TERM"])

RECIPE = """
seed: 0
deterministic: true
device: cpu
data: {{name: synthetic, val_size: 32, batch_size: 32, options: {{n_train: 256, n_test: 64}}}}
teacher: {{model: cnn, kwargs: {{width: 4, blocks: 1}}, train: {{epochs: {teacher_epochs}, lr: 0.05}}}}
student: {{model: cnn, kwargs: {{width: 6, blocks: 1}}}}
train: {{epochs: {epochs}, lr: 0.05}}
cache: {{mode: "{mode}", views: 3}}
methods: [{{name: kd, params: {{temperature: 4.0, alpha: 0.9}}}}]
bench: {{latency: false}}
tracking: {{tensorboard: false}}
"""

# Reads one JSON job per line, forks, runs it in the child and kills the child (SIGKILL, from the inside) at the
# job's point; answers with the child's fate. It runs no torch op itself, so forking it is safe.
DRIVER = r"""
import json, os, signal, sys, traceback
import torch
import distill.io as store
from distill import api
from distill.engine.callbacks import Callback
from distill.engine.tracking import extra_callbacks


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def job(recipe, out, label, step, phase):
    torch.set_num_threads(1)
    armed = []
    real_save = store.save_file

    def half_written(tensors, path, metadata=None):  # the checkpoint's temporary file, cut short, then death
        real_save(tensors, path, metadata=metadata)
        if armed and phase == "write":
            with open(path, "r+b") as f:
                f.truncate(os.path.getsize(path) // 2)
            die()

    store.save_file = half_written

    class Kill(Callback):
        def on_step_end(self, trainer, losses):
            if trainer.state.step == step:
                if phase == "step":
                    die()
                armed.append(True)

        def on_epoch_end(self, trainer, record):
            if armed and phase == "epoch_end":
                die()

    with extra_callbacks(lambda d, l: Kill() if l == label else None):
        api.run(recipe, out=out)


for line in sys.stdin:
    pid = os.fork()
    if pid == 0:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        try:
            job(**json.loads(line))
            os._exit(0)
        except BaseException:
            traceback.print_exc()
            os._exit(1)
    _, status = os.waitpid(pid, 0)
    sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    print(json.dumps({"signal": sig, "code": os.WEXITSTATUS(status) if sig is None else None}), flush=True)
"""

ENV = {**{k: v for k, v in os.environ.items() if k != TEST_SIGNAL_VAR}, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the same as the killed runs, so float sums agree bit for bit
    yield
    torch.set_num_threads(before)
    torch.use_deterministic_algorithms(False)  # api.run(deterministic=True) switched it on for this process


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("kill")


@pytest.fixture(scope="module")
def driver(root):
    log = open(root / "driver.log", "w")  # kept open for the whole module
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=ENV, text=True
    )
    yield proc
    proc.stdin.close()
    proc.wait(timeout=SAFETY_S)
    log.close()


def recipe_file(root: Path, mode: str) -> Path:
    path = root / f"recipe-{mode}.yaml"
    if not path.exists():
        path.write_text(RECIPE.format(epochs=EPOCHS, teacher_epochs=TEACHER_EPOCHS, mode=mode))
    return path


_REFERENCE: dict[str, dict[str, dict[str, torch.Tensor]]] = {}


def weights(out: Path) -> dict[str, dict[str, torch.Tensor]]:
    return {s: load_file(str(out / s / "model.safetensors")) for s in ("teacher", "students/kd")}


def reference(root: Path, mode: str) -> dict[str, dict[str, torch.Tensor]]:
    if mode not in _REFERENCE:
        api.run(recipe_file(root, mode), out=root / f"ref-{mode}")
        _REFERENCE[mode] = weights(root / f"ref-{mode}")
    return _REFERENCE[mode]


def assert_same(out: Path, ref: dict[str, dict[str, torch.Tensor]]) -> None:
    got = weights(out)
    for stage, tensors in ref.items():
        assert got[stage].keys() == tensors.keys()
        for k in tensors:
            assert torch.equal(got[stage][k], tensors[k]), f"{stage}: {k}"
    for stage, epochs in (("teacher", TEACHER_EPOCHS), ("students/kd", EPOCHS)):
        lines = (out / stage / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(ln)["epoch"] for ln in lines] == list(range(1, epochs + 1))  # none lost, none twice


def kill_point(seed: int) -> dict:
    rng = random.Random(seed)
    label = "teacher" if rng.random() < 0.3 else "kd"
    total = STEPS * (TEACHER_EPOCHS if label == "teacher" else EPOCHS)
    return {"label": label, "step": rng.randint(1, total), "phase": rng.choice(PHASES)}


@pytest.mark.parametrize(("mode", "seed"), KILLS)
def test_sigkill_at_a_random_step_then_resume_is_bit_exact(root, driver, one_thread, mode, seed):
    recipe, out = recipe_file(root, mode), root / f"killed-{seed}"
    point = kill_point(seed)
    driver.stdin.write(json.dumps({"recipe": str(recipe), "out": str(out), **point}) + "\n")
    driver.stdin.flush()
    ready, _, _ = select.select([driver.stdout], [], [], SAFETY_S)
    assert ready, f"the killed run did not end in {SAFETY_S} s (see {root / 'driver.log'})"
    fate = json.loads(driver.stdout.readline())
    assert fate["signal"] == signal.SIGKILL, f"{point}: {fate} (see {root / 'driver.log'})"
    stage = out / ("teacher" if point["label"] == "teacher" else "students/kd")
    assert not (stage / "done.json").exists()

    api.run(recipe, out=out, resume=True)
    assert_same(out, reference(root, mode))


@SIGNALS
def test_signal_mid_epoch_saves_a_checkpoint_exits_128_plus_signum_in_one_line_and_resumes_exactly(
    root, one_thread, sig
):
    recipe, out = recipe_file(root, "views"), root / f"sig{sig.name}"
    checkpoint = out / "students" / "kd" / "checkpoint.safetensors"
    env = {**ENV, TEST_SIGNAL_VAR: f"{sig.name}:{STEPS + 3}:kd"}  # the student, after step 3 of epoch 2
    cmd = [sys.executable, "-m", "distill", "run", str(recipe), "--out", str(out)]
    r = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=SAFETY_S)
    err = r.stderr
    assert r.returncode == 128 + sig, f"exit {r.returncode}; stderr:\n{err}"  # 130 for SIGINT, 143 for SIGTERM
    assert "Traceback" not in err
    said = [ln for ln in err.splitlines() if ln.startswith("distill:")]  # epoch progress lines are not messages
    assert len(said) == 1 and said[0] == err.strip().splitlines()[-1], err
    assert f"interrupted by {sig.name} in epoch 2/{EPOCHS}, step 3/{STEPS}" in said[0], said[0]
    assert "--resume" in said[0] and str(checkpoint) in said[0], said[0]
    ck = load_checkpoint(checkpoint)
    assert (ck["state"]["epoch"], ck["state"]["batch"], ck["partial"]["n_batches"]) == (1, 3, 3)
    assert not (out / "students" / "kd" / "done.json").exists()

    assert main(["run", str(recipe), "--out", str(out), "--resume"]) == 0
    assert_same(out, reference(root, "views"))


def _trainer(dm, tiny, out, epochs=2):
    from distill.distillers import build_distiller
    from distill.engine.trainer import OptimSettings, Trainer

    d = build_distiller("scratch", tiny(4), None, dm.input_shape)
    return Trainer(d, dm, OptimSettings(epochs=epochs, lr=0.05), out_dir=out, check_every=2)


@SIGNALS
def test_signal_mid_epoch_checkpoints_the_step_and_resume_skips_the_done_batches(
    tmp_path, tiny, dm, one_thread, monkeypatch, sig
):
    monkeypatch.delenv(TEST_SIGNAL_VAR, raising=False)
    whole = _trainer(dm, tiny, tmp_path / "whole")
    whole.fit()
    cut = _trainer(dm, tiny, tmp_path / "cut")
    monkeypatch.setenv(TEST_SIGNAL_VAR, f"{sig.name}:{dm.steps_per_epoch() + 3}")
    with pytest.raises(Interrupted, match=r"epoch 2/2, step 3/7; checkpoint saved to .*--resume") as e:
        cut.fit()
    assert e.value.signum == sig
    # the handlers were put back
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    ck = load_checkpoint(tmp_path / "cut" / "checkpoint.safetensors")
    assert (ck["state"]["epoch"], ck["state"]["batch"], ck["partial"]["n_batches"]) == (1, 3, 3)
    again = _trainer(dm, tiny, tmp_path / "cut")
    again.fit(resume=True)  # the hook's step is behind it: it does not fire again
    for k, v in whole.model.state_dict().items():
        assert torch.equal(again.model.state_dict()[k], v), k
    assert [h["train"] for h in again.state.history] == [h["train"] for h in whole.state.history]
    assert again.state.step == whole.state.step and again.state.batch == 0
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_a_sigterm_handler_installed_by_someone_else_is_left_alone(tmp_path, tiny, dm, monkeypatch):
    seen: list[int] = []

    def theirs(signum, frame):
        seen.append(signum)

    monkeypatch.setenv(TEST_SIGNAL_VAR, "TERM:3")
    before = signal.signal(signal.SIGTERM, theirs)
    try:
        state = _trainer(dm, tiny, tmp_path / "run", epochs=1).fit()
        assert signal.getsignal(signal.SIGTERM) is theirs
    finally:
        signal.signal(signal.SIGTERM, before)
    assert seen == [signal.SIGTERM] and state.epoch == 1  # their handler ran; training went on


def test_the_test_hook_is_inert_unless_set_for_this_stage(tmp_path, tiny, dm, monkeypatch):
    from distill.engine import trainer as trainer_module
    from distill.errors import ConfigError

    raised: list[int] = []
    monkeypatch.setattr(trainer_module.signal, "raise_signal", raised.append)
    monkeypatch.delenv(TEST_SIGNAL_VAR, raising=False)
    assert _trainer(dm, tiny, tmp_path / "unset", epochs=1).fit().epoch == 1
    monkeypatch.setenv(TEST_SIGNAL_VAR, "TERM:2:kd")  # meant for a stage named kd
    assert _trainer(dm, tiny, tmp_path / "teacher", epochs=1).fit().epoch == 1
    assert raised == []
    _trainer(dm, tiny, tmp_path / "kd", epochs=1).fit()  # the patched raise_signal only records
    assert raised == [signal.SIGTERM]
    monkeypatch.setenv(TEST_SIGNAL_VAR, "TERM")
    with pytest.raises(ConfigError, match="SIGNAL:STEP"):
        _trainer(dm, tiny, tmp_path / "bad", epochs=1).fit()


def test_interrupted_carries_its_signal_and_the_cli_exits_128_plus_signum(monkeypatch, capsys):
    import pickle

    e = pickle.loads(pickle.dumps(Interrupted("stopped", signal.SIGTERM)))
    assert (str(e), e.signum, isinstance(e, KeyboardInterrupt)) == ("stopped", signal.SIGTERM, True)
    assert Interrupted("x").signum == signal.SIGINT
    for sig, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):

        def dispatch(args, sig=sig):
            raise Interrupted(f"interrupted by {sig.name}; rerun with --resume", sig)

        monkeypatch.setattr(cli, "dispatch", dispatch)
        assert main(["list", "models"]) == code
        assert capsys.readouterr().err == f"distill: interrupted by {sig.name}; rerun with --resume\n"


def test_sigterm_as_interrupt_raises_in_the_block_and_restores_the_default():
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    with pytest.raises(Interrupted, match=r"SIGTERM.*--resume") as e, sigterm_as_interrupt():
        signal.raise_signal(signal.SIGTERM)
    assert e.value.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL


def test_sigterm_outside_training_exits_143_in_one_line():
    """SIGTERM while no trainer runs (the teacher cache builds, data load): one line and 143, not a silent death."""
    code = (
        "import signal, sys\n"
        "import distill.cli as c\n"
        "c.dispatch = lambda args: signal.raise_signal(signal.SIGTERM)\n"
        "sys.exit(c.main(['list', 'models']))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=SAFETY_S)
    assert r.returncode == 143, f"exit {r.returncode}; stderr:\n{r.stderr}"
    assert r.stderr.splitlines() == [
        "distill: interrupted by SIGTERM; rerun with --resume to continue from the last checkpoint"
    ], r.stderr

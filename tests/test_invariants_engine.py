"""Trainer invariants checked against independent computations: what is recorded as validation is the validation
split, the learning rate follows its closed-form schedule at every step (and is the one applied), every training
step sees the dataset's labels, evaluation runs without autograd on un-augmented inputs, and a resumed run that
draws from the random number generators (CRD samples its negatives) ends bit-for-bit where a straight run ends.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from distill.data.module import DataModule
from distill.distillers import build_distiller
from distill.engine.callbacks import Callback
from distill.engine.trainer import OptimSettings, Trainer
from test_invariants_data import by_hand, ids_of, indexed, label_of, unnormalise


@torch.no_grad()
def evaluate_by_hand(model: nn.Module, x_uint8: torch.Tensor, y: torch.Tensor, mean, std) -> dict[str, float]:
    """Accuracy and NLL of ``model`` on raw uint8 images, normalised here, in eval mode, one batch."""
    was = model.training
    model.eval()
    x = (x_uint8.float() / 255.0 - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    logits = model(x).double()
    model.train(was)
    return {
        "acc": (logits.argmax(1) == y).double().mean().item(),
        "nll": F.cross_entropy(logits, y).item(),
        "logits": logits,
    }


class IndependentEval(Callback):
    """After each epoch, evaluates the student (and teacher) on each split by hand and keeps the record beside it."""

    def __init__(self, dm: DataModule) -> None:
        self.dm, self.rows = dm, []

    def on_epoch_end(self, trainer, record):
        dm, d = self.dm, trainer.model
        mine = {}
        for split in ("train", "val"):
            x, y = dm.split(split)
            mine[split] = evaluate_by_hand(d.export_student(), x, y, dm.data.mean, dm.data.std)
            if d.teacher is not None:
                t = evaluate_by_hand(d.teacher.model, x, y, dm.data.mean, dm.data.std)["logits"]
                s = mine[split]["logits"]
                mine[split]["agreement"] = (s.argmax(1) == t.argmax(1)).double().mean().item()
        self.rows.append((record, mine))


@pytest.mark.parametrize("method", ["scratch", "kd"])
def test_recorded_validation_metrics_are_those_of_the_validation_split(method, tiny, synth):
    dm = DataModule(synth, batch_size=32, val_size=48, seed=0)
    teacher = tiny(8, 1) if method == "kd" else None
    d = build_distiller(method, tiny(4, 2), teacher, dm.input_shape)
    cb = IndependentEval(dm)
    Trainer(d, dm, OptimSettings(epochs=3, lr=0.02), callbacks=[cb]).fit()
    assert len(cb.rows) == 3
    for record, mine in cb.rows:
        val = record["val"]
        assert val["acc"] == pytest.approx(mine["val"]["acc"], abs=1e-6), record["epoch"]
        assert val["nll"] == pytest.approx(mine["val"]["nll"], rel=1e-4), record["epoch"]
        # and not those of the training split (the NLLs of two different sets of images differ)
        assert val["nll"] != pytest.approx(mine["train"]["nll"], rel=1e-4)
        if method == "kd":
            assert val["agreement"] == pytest.approx(mine["val"]["agreement"], abs=1e-6)


def test_best_epoch_is_the_one_with_the_highest_recorded_validation_accuracy(tiny, synth):
    dm = DataModule(synth, batch_size=32, val_size=48, seed=0)
    d = build_distiller("scratch", tiny(4, 2), None, dm.input_shape)
    state = Trainer(d, dm, OptimSettings(epochs=4, lr=0.05)).fit()
    accs = [r["val"]["acc"] for r in state.history]
    assert state.best_acc == max(accs)
    assert state.best_epoch == 1 + accs.index(max(accs))  # the first epoch reaching it


# --- the learning rate -----------------------------------------------------------------------------------------------


def expected_lr(step: int, spe: int, s: OptimSettings) -> float:
    """The LR of optimizer step ``step`` (0-based) from the documented schedule, written out independently."""
    total, warm = s.epochs * spe, int(s.warmup_epochs * spe)
    if step < warm:  # linear warm-up reaching lr at its last step
        return s.lr * (step + 1) / warm
    if s.schedule == "cosine":
        t = min(1.0, (step - warm) / max(1, total - warm))
        return s.lr * (1 + math.cos(math.pi * t)) / 2
    if s.schedule == "multistep":
        passed = len([m for m in s.milestones if step / spe >= m])
        return s.lr * s.gamma**passed
    return s.lr


class LrProbe(Callback):
    """Records the optimizer's LR before the first step and after each step, and the LR actually applied by
    each plain-SGD step, measured from the parameter change: ``Δθ = −lr · g``."""

    def __init__(self) -> None:
        self.lrs, self.applied, self.prev = [], [], None

    def _flat(self, trainer):
        return torch.cat([p.detach().flatten().double() for p in trainer.model.trainable_parameters()])

    def on_fit_start(self, trainer):
        self.lrs.append(trainer.optimizer.param_groups[0]["lr"])
        self.prev = self._flat(trainer)

    def on_step_end(self, trainer, losses):
        now = self._flat(trainer)
        g = torch.cat([p.grad.flatten().double() for p in trainer.model.trainable_parameters()])
        self.applied.append(float(-((now - self.prev) @ g) / (g @ g)))
        self.prev = now
        self.lrs.append(trainer.optimizer.param_groups[0]["lr"])


SCHEDULES = [
    {"schedule": "cosine"},
    {"schedule": "cosine", "warmup_epochs": 1.5},
    {"schedule": "multistep", "milestones": [1, 2.5], "gamma": 0.3},
    {"schedule": "multistep", "milestones": [2], "gamma": 0.5, "warmup_epochs": 1},
    {"schedule": "constant"},
]


@pytest.mark.parametrize("kw", SCHEDULES, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()))
def test_lr_follows_the_schedule_at_every_step_and_is_the_one_applied(kw, tiny, synth):
    dm = DataModule(synth, batch_size=32, val_size=32, seed=0, augment=False)  # 7 steps per epoch
    s = OptimSettings(epochs=4, lr=0.05, momentum=0.0, weight_decay=0.0, **kw)
    d = build_distiller("scratch", tiny(4, 2), None, dm.input_shape)
    probe = LrProbe()
    t = Trainer(d, dm, s, callbacks=[probe])
    t.fit()
    spe = dm.steps_per_epoch()
    assert spe == 7 and t.state.step == 4 * spe
    want = [expected_lr(i, spe, s) for i in range(4 * spe + 1)]
    assert probe.lrs == pytest.approx(want, rel=1e-9, abs=1e-15)
    # the LR used by step i is the one set before it, and it is what moved the weights
    assert probe.applied == pytest.approx(want[:-1], rel=2e-3)
    # the epoch record holds the LR in force at the end of that epoch
    assert [r["lr"] for r in t.state.history] == pytest.approx([want[e * spe] for e in (1, 2, 3, 4)], rel=1e-9)


def test_lr_schedule_survives_a_resume(tiny, synth, tmp_path):
    dm = DataModule(synth, batch_size=32, val_size=32, seed=0, augment=False)
    s = OptimSettings(epochs=3, lr=0.05, momentum=0.0, weight_decay=0.0, warmup_epochs=1)
    d = build_distiller("scratch", tiny(4, 2), None, dm.input_shape)
    t = Trainer(d, dm, s, out_dir=tmp_path)
    t.epochs = 1
    t.fit()
    probe = LrProbe()
    d2 = build_distiller("scratch", tiny(4, 2), None, dm.input_shape)
    Trainer(d2, dm, s, out_dir=tmp_path, callbacks=[probe]).fit(resume=True)
    spe = dm.steps_per_epoch()
    assert probe.lrs == pytest.approx([expected_lr(i, spe, s) for i in range(spe, 3 * spe + 1)], rel=1e-9)


# --- labels ------------------------------------------------------------------------------------------------------


def test_every_training_step_sees_the_labels_of_its_images(tmp_path):
    """The (x, y) pairs that reach the distiller: y is the label of the very image x (traced through its id
    pixels), every training row once per epoch, no validation row."""
    data = indexed(n_train=160, size=8)
    dm = DataModule(data, batch_size=32, val_size=32, seed=0, augment=False)
    torch.manual_seed(0)
    d = build_distiller("scratch", nn.Sequential(nn.Flatten(), nn.Linear(64, 5)), None, dm.input_shape)
    t = Trainer(d, dm, OptimSettings(epochs=2, lr=0.01))
    seen = []
    real = t.forward_model

    def recording(x, y, **kw):
        seen.append((x.detach().clone(), y.clone(), kw.get("index")))
        return real(x, y, **kw)

    t.forward_model = recording
    t.fit()
    assert len(seen) == 2 * dm.steps_per_epoch()
    val_rows = set(ids_of(dm.x_val).tolist())
    per_epoch = [seen[: len(seen) // 2], seen[len(seen) // 2 :]]
    for steps in per_epoch:
        ids_seen = []
        for x, y, index in steps:
            ids = ids_of(unnormalise(x))
            assert torch.equal(y, label_of(ids)), "labels do not belong to their images"
            torch.testing.assert_close(x.double(), by_hand(dm.x_train[index]), rtol=0, atol=1e-5)
            ids_seen += ids.tolist()
        assert sorted(ids_seen) == sorted(ids_of(dm.x_train).tolist())
        assert not set(ids_seen) & val_rows


# --- evaluation ----------------------------------------------------------------------------------------------------


class Recorder(nn.Module):
    """A tiny classifier that records its inputs and whether autograd and train mode were on when it ran."""

    def __init__(self, in_features: int, k: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, k)
        self.calls: list[tuple[torch.Tensor, bool, bool]] = []

    def forward(self, x):
        self.calls.append((x.detach().clone(), torch.is_grad_enabled(), self.training))
        return self.fc(x.flatten(1))


@pytest.mark.parametrize("global_seed", [None, 0])
def test_trainer_evaluation_runs_without_autograd_on_unaugmented_inputs(global_seed):
    data = indexed(n_train=120, size=8, crop_padding=2, hflip=True)
    dm = DataModule(data, batch_size=32, val_size=24, seed=0, augment=True, eval_batch_size=10)
    model = Recorder(64, 5)
    d = build_distiller("scratch", model, None, dm.input_shape)
    t = Trainer(d, dm, OptimSettings(epochs=1, lr=0.01))
    if global_seed is not None:
        torch.manual_seed(global_seed)
    t.fit()
    train_calls = [c for c in model.calls if c[2]]
    eval_calls = [c for c in model.calls if not c[2]]
    assert len(train_calls) == dm.steps_per_epoch() and all(grad for _, grad, _ in train_calls)
    assert eval_calls and not any(grad for _, grad, _ in eval_calls), "evaluation ran under autograd"
    x_eval = torch.cat([x for x, _, _ in eval_calls])
    torch.testing.assert_close(x_eval.double(), by_hand(dm.x_val), rtol=0, atol=1e-5)
    assert model.training  # train mode is back after evaluating
    # the same through evaluate() on every split
    for split in ("train", "val", "test"):
        model.calls.clear()
        metrics = t.evaluate(split)
        x_all, y_all = dm.split(split)
        x_eval = torch.cat([x for x, _, _ in model.calls])
        assert not any(grad or train for _, grad, train in model.calls)
        torch.testing.assert_close(x_eval.double(), by_hand(x_all), rtol=0, atol=1e-5)
        with torch.no_grad():
            logits = model.fc(by_hand(x_all).float().flatten(1))
        assert metrics["acc"] == pytest.approx((logits.argmax(1) == y_all).double().mean().item(), abs=1e-6)


# --- exact resume with a method that draws random numbers ---------------------------------------------------------


def rng_snapshot() -> tuple:
    return torch.get_rng_state().clone(), random.getstate(), np.random.get_state()[1].copy()


class RngAtEpochStart(Callback):
    def __init__(self) -> None:
        self.states: dict[int, tuple] = {}

    def on_epoch_start(self, trainer):
        self.states[trainer.state.epoch] = rng_snapshot()


def crd_run(tiny, dm, out, epochs_now: int, resume: bool = False, scramble: int | None = None):
    torch.manual_seed(0)
    d = build_distiller(
        "crd", tiny(4, 2), tiny(6, 1), dm.input_shape, len(dm.x_train), nce_k=8, feat_dim=16, crd_weight=0.8
    )
    probe = RngAtEpochStart()
    t = Trainer(d, dm, OptimSettings(epochs=2, lr=0.05), out_dir=out, callbacks=[probe])
    t.epochs = epochs_now  # stop early as a crash would, with the same 2-epoch schedule
    if scramble is not None:  # a fresh process: the generators are wherever its start-up left them
        torch.manual_seed(scramble)
        random.seed(scramble)
        np.random.seed(scramble)
    t.fit(resume=resume)
    return d, probe


def test_resume_with_crd_negatives_is_bit_exact(tiny, tmp_path):
    from distill.data.base import load_dataset

    data = load_dataset("synthetic", n_train=96, n_test=16, num_classes=4, size=16)
    dm = DataModule(data, batch_size=16, val_size=16, seed=0)
    straight, p_straight = crd_run(tiny, dm, tmp_path / "a", 2)
    crd_run(tiny, dm, tmp_path / "b", 1)
    resumed, p_resumed = crd_run(tiny, dm, tmp_path / "b", 2, resume=True, scramble=987)
    # the generators at the start of epoch 2 are where the straight run had them
    a, b = p_straight.states[1], p_resumed.states[1]
    assert torch.equal(a[0], b[0]), "torch RNG state not restored on resume"
    assert a[1] == b[1], "python RNG state not restored on resume"
    assert np.array_equal(a[2], b[2]), "numpy RNG state not restored on resume"
    sa, sb = straight.state_dict(), resumed.state_dict()
    assert sa.keys() == sb.keys()
    assert any(k.startswith("memory_") for k in sa)  # the memory banks are compared too
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k

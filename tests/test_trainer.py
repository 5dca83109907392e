"""Trainer: learning, schedules, checkpoints that resume exactly, the NaN guard, augmentation."""

import json
import math

import pytest
import torch

from distill.artifacts import load_checkpoint, save_checkpoint
from distill.data.augment import AugmentSpec, Views, apply_views, identity_views
from distill.distillers import build_distiller
from distill.engine.callbacks import Callback, EarlyStopping, KeepBest, MetricsLogger
from distill.engine.trainer import OptimSettings, Trainer, TrainingDiverged, lr_factor
from distill.errors import CheckpointError, ConfigError


def test_scratch_training_learns_synthetic_data(tiny, dm):
    d = build_distiller("scratch", tiny(8), None, dm.input_shape)
    t = Trainer(d, dm, OptimSettings(epochs=6, lr=0.1))
    before = t.evaluate("test")
    state = t.fit()
    assert state.epoch == 6 and state.step == 6 * dm.steps_per_epoch()
    losses = [r["train"]["loss"] for r in state.history]
    assert losses[-1] < 0.5 * losses[0] and min(losses[-2:]) < min(losses[:2])  # it learns, not just once
    assert [r["train"]["acc"] for r in state.history][-1] > 0.85
    after = t.evaluate("test")  # 128 held-out samples, not only the 32 of the validation split
    assert after["acc"] > 0.85 and after["acc"] > before["acc"] + 0.3 and after["nll"] < 0.5 * before["nll"]
    assert state.history[-1]["val"]["acc"] > 0.9


def test_keep_best_returns_the_weights_of_the_best_validation_epoch(tiny, dm):
    """With KeepBest the model after fit is the best validation epoch's: its validation accuracy, evaluated anew,
    is the recorded best, and the weights are that epoch's exactly (not the last epoch's)."""

    class Snapshots(Callback):  # the student's weights at the end of every epoch, independently of KeepBest
        def __init__(self):
            self.weights = []

        def on_epoch_start(self, trainer):
            if trainer.state.epoch == 2:  # wreck the third epoch's start: it cannot be the best
                with torch.no_grad():
                    for p in trainer.model.student.parameters():
                        p.zero_()

        def on_epoch_end(self, trainer, record):
            self.weights.append({k: v.clone() for k, v in trainer.model.student.state_dict().items()})

    torch.manual_seed(0)
    snaps = Snapshots()
    t = Trainer(build_distiller("scratch", tiny(8), None, dm.input_shape), dm, OptimSettings(epochs=3, lr=0.1),
                callbacks=[snaps, KeepBest()])  # fmt: skip
    state = t.fit()
    accs = [r["val"]["acc"] for r in state.history]
    assert state.best_epoch < 3 and accs[2] < state.best_acc  # the last epoch is not the best
    assert state.best_epoch == 1 + accs.index(max(accs))
    kept = t.model.student.state_dict()
    assert all(torch.equal(kept[k], v) for k, v in snaps.weights[state.best_epoch - 1].items())
    assert t.evaluate("val")["acc"] == pytest.approx(state.best_acc)


def test_early_stopping_stops_after_patience_epochs_without_a_better_validation(tiny, dm):
    torch.manual_seed(0)
    t = Trainer(build_distiller("scratch", tiny(8), None, dm.input_shape), dm, OptimSettings(epochs=10, lr=0.1),
                callbacks=[EarlyStopping(patience=2)])  # fmt: skip
    t.evaluate = lambda split="val": {"acc": 0.5, "loss": 1.0}  # a validation accuracy that never improves
    state = t.fit()
    assert state.best_epoch == 1 and state.epoch == 3  # epoch 1 is best; 2 and 3 are not: stop after 3


def test_kd_evaluation_reports_agreement_with_teacher(tiny, dm):
    d = build_distiller("kd", tiny(4, 2), tiny(8, 1), dm.input_shape)
    state = Trainer(d, dm, OptimSettings(epochs=1)).fit()
    x_val = (dm.x_val.float() / 255 - dm.mean.view(1, -1, 1, 1)) / dm.std.view(1, -1, 1, 1)
    with torch.no_grad():
        student = d.student.eval()(x_val).argmax(1)
        teacher = d.teacher.model.eval()(x_val).argmax(1)
    want = (student == teacher).double().mean().item()
    assert state.history[-1]["val"]["agreement"] == pytest.approx(want, abs=1e-6)
    assert state.history[-1]["val"]["acc"] == pytest.approx((student == dm.y_val).double().mean().item(), abs=1e-6)


def test_resume_from_epoch_checkpoint_gives_identical_weights(tiny, dm, tmp_path):
    def run(out, epochs, resume=False):
        torch.manual_seed(0)
        d = build_distiller("kd", tiny(4, 2), tiny(8, 1), dm.input_shape)
        t = Trainer(d, dm, OptimSettings(epochs=3, lr=0.05), out_dir=out, callbacks=[MetricsLogger(out / "m.jsonl")])
        t.epochs = epochs  # stop early as a crash would, with the same 3-epoch schedule
        t.fit(resume=resume)
        return d.student.state_dict(), t

    full, _ = run(tmp_path / "a", 3)
    run(tmp_path / "b", 2)
    resumed, t = run(tmp_path / "b", 3, resume=True)
    for k in full:
        assert torch.equal(full[k], resumed[k]), k
    lines = [json.loads(x) for x in (tmp_path / "b" / "m.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2, 3]
    assert t.state.step == 3 * dm.steps_per_epoch()


def test_nan_loss_stops_with_clear_message_and_keeps_checkpoint(tiny, dm, tmp_path):
    d = build_distiller("scratch", tiny(4), None, dm.input_shape)
    t = Trainer(d, dm, OptimSettings(epochs=2, lr=0.05), out_dir=tmp_path, check_every=1)
    t.fit()
    good = (tmp_path / "checkpoint.safetensors").read_bytes()
    t.epochs = 4
    with torch.no_grad():
        next(d.student.parameters()).fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match=r"loss became nan.*last good checkpoint"):
        t.fit()
    assert (tmp_path / "checkpoint.safetensors").read_bytes() == good


def test_lr_schedules():
    s = OptimSettings(epochs=10, schedule="cosine", warmup_epochs=1)
    assert lr_factor(0, 10, s) == pytest.approx(0.1)
    assert lr_factor(9, 10, s) == pytest.approx(1.0)
    assert lr_factor(10 + 45, 10, s) == pytest.approx(0.5)
    assert lr_factor(100, 10, s) == pytest.approx(0.0, abs=1e-12)
    m = OptimSettings(epochs=10, schedule="multistep", milestones=[5, 8], gamma=0.1)
    assert [lr_factor(e * 10, 10, m) for e in (0, 5, 8)] == pytest.approx([1.0, 0.1, 0.01])


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"epochs": 0}, "epochs"),
        ({"lr": -1.0}, "lr"),
        ({"optimizer": "adam"}, "adamw"),
        ({"schedule": "step"}, "cosine"),
    ],
)
def test_bad_optim_settings(kw, match):
    with pytest.raises(ConfigError, match=match):
        OptimSettings(**kw)


def test_checkpoint_round_trip_and_truncation(tmp_path):
    state = {"a": torch.arange(3), "nested": {"b": [1, 2.5, None, "x"], "c": (torch.ones(2), 3)}, 4: "int-key"}
    p = tmp_path / "ck.safetensors"
    save_checkpoint(p, state)
    back = load_checkpoint(p)
    assert torch.equal(back["a"], state["a"]) and back["nested"]["b"] == [1, 2.5, None, "x"]
    assert isinstance(back["nested"]["c"], tuple) and back[4] == "int-key"
    p.write_bytes(p.read_bytes()[:-7])
    with pytest.raises(CheckpointError, match="corrupted or truncated"):
        load_checkpoint(p)


def test_augmentation_crop_and_flip_are_exact():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.uint8).view(2, 1, 4, 4)
    spec = AugmentSpec(crop_padding=1, hflip=True)
    assert torch.equal(apply_views(x, identity_views(2, spec), spec), x)
    views = Views(dy=torch.tensor([0, 2]), dx=torch.tensor([2, 1]), flip=torch.tensor([False, True]))
    out = apply_views(x, views, spec)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    assert torch.equal(out[0], padded[0, :, 0:4, 2:6])
    assert torch.equal(out[1], padded[1, :, 2:6, 1:5].flip(-1))


def test_train_batches_are_deterministic_per_epoch_and_cover_the_split(dm):
    a = [b.index for b in dm.train_batches(3)]
    b = [b.index for b in dm.train_batches(3)]
    assert all(torch.equal(i, j) for i, j in zip(a, b, strict=True))
    assert sorted(torch.cat(a).tolist()) == list(range(len(dm.x_train)))
    assert not torch.equal(torch.cat(a), torch.cat([b.index for b in dm.train_batches(4)]))
    x = next(dm.train_batches(0)).x
    assert x.dtype == torch.float32 and math.isfinite(float(x.mean()))

"""Distilling with few labels: a labelled fraction of the training split, the rest a transfer set."""

import json
import math

import pytest
import torch

from distill import api
from distill import config as C
from distill.cli import main
from distill.data.module import DataModule, labelled_mask
from distill.distillers.base import labelled_cross_entropy
from distill.errors import ConfigError, DataError

TINY = [
    "data.name=synthetic",
    "data.options={n_train: 400, n_test: 64, num_classes: 4}",
    "data.val_size=40",
    "data.batch_size=32",
    "data.augment=false",
    "teacher.kwargs={width: 4, blocks: 1}",
    "teacher.train.epochs=1",
    "student.kwargs={width: 2, blocks: 1}",
    "train.epochs=1",
    "bench.latency=false",
]


def test_labelled_mask_keeps_the_fraction_of_every_class_and_depends_on_the_seed():
    y = torch.arange(10).repeat_interleave(100)  # 10 classes x 100
    keep = labelled_mask(y, 0.05, seed=3)
    assert [int(keep[y == c].sum()) for c in range(10)] == [5] * 10
    assert torch.equal(keep, labelled_mask(y, 0.05, seed=3))
    assert not torch.equal(keep, labelled_mask(y, 0.05, seed=4))
    # a class too small for the fraction still keeps one label
    y2 = torch.tensor([0] * 200 + [1] * 3)
    k2 = labelled_mask(y2, 0.01, seed=0)
    assert int(k2[:200].sum()) == 2 and int(k2[200:].sum()) == 1
    assert bool(labelled_mask(y, 1.0, seed=0).all())


@pytest.mark.parametrize("bad", [0.0, -0.5, 1.5])
def test_labelled_mask_refuses_a_fraction_outside_0_1(bad):
    with pytest.raises(DataError, match=r"labeled_fraction must be in \(0, 1\]"):
        labelled_mask(torch.zeros(4, dtype=torch.long), bad, seed=0)


def test_labelled_cross_entropy_ignores_minus_one_and_divides_by_the_batch():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0], [-1.0, 3.0, 1.0], [0.0, 0.0, 0.0]])
    y = torch.tensor([0, -1, 2, -1])

    def nll(row, c):  # -log softmax, written out
        return math.log(sum(math.exp(v) for v in row)) - row[c]

    rows = logits.tolist()
    want = (nll(rows[0], 0) + nll(rows[2], 2)) / 4
    assert float(labelled_cross_entropy(logits, y)) == pytest.approx(want, rel=1e-6)
    full = torch.tensor([0, 1, 2, 1])
    assert float(labelled_cross_entropy(logits, full)) == pytest.approx(
        float(torch.nn.functional.cross_entropy(logits, full)), rel=1e-6
    )
    assert float(labelled_cross_entropy(logits, torch.full((4,), -1))) == 0.0
    # the unlabelled rows get no gradient from it
    lg = logits.clone().requires_grad_(True)
    labelled_cross_entropy(lg, y).backward()
    assert lg.grad[1].abs().sum() == 0 and lg.grad[3].abs().sum() == 0 and lg.grad[0].abs().sum() > 0


def test_datamodule_hides_the_labels_of_the_rest_and_keeps_val_and_test(synth):
    full = DataModule(synth, batch_size=32, val_size=32, seed=0)
    dm = DataModule(synth, batch_size=32, val_size=32, seed=0, labeled_fraction=0.25)
    assert torch.equal(dm.x_train, full.x_train) and torch.equal(dm.y_val, full.y_val)
    kept = dm.y_train >= 0
    assert dm.num_labeled == int(kept.sum()) and 0.2 * len(kept) <= dm.num_labeled <= 0.3 * len(kept)
    assert torch.equal(dm.y_train[kept], full.y_train[kept])
    assert set(dm.y_train[~kept].tolist()) == {-1}
    sub = dm.labeled_only()
    assert len(sub.x_train) == dm.num_labeled and bool((sub.y_train >= 0).all())
    assert sub.steps_per_epoch() == math.ceil(dm.num_labeled / 32)
    assert full.labeled_only() is full


@pytest.mark.parametrize("bad", ["0", "1.5", "-0.1"])
def test_a_bad_labeled_fraction_is_one_line_and_exit_2(tmp_path, capsys, bad):
    out = tmp_path / "r"
    code = main(["run", "configs/smoke.yaml", "--out", str(out), "--set", f"data.labeled_fraction={bad}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "labeled_fraction" in err and "(0, 1]" in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_dkd_refuses_unlabelled_images_before_any_training(tmp_path):
    with pytest.raises(ConfigError, match="needs a label on every training image"):
        api.run(C.Config(), tmp_path / "r", [*TINY, "data.labeled_fraction=0.5", "methods=[{name: dkd}]"])
    assert not (tmp_path / "r").exists()


def test_scratch_trains_on_the_labelled_images_and_kd_on_all_of_them(tmp_path):
    report = api.run(
        C.Config(),
        tmp_path / "r",
        [*TINY, "data.labeled_fraction=0.25", "methods=[{name: scratch, train: {epochs: 2}}, {name: kd}]"],
    )
    n_train = 400 - 40
    n_lab = sum(max(1, round(0.25 * n)) for n in [n_train // 4] * 4)  # synthetic classes are balanced
    steps = {}
    for name in ("scratch", "kd"):
        lines = (tmp_path / "r/students" / name / "metrics.jsonl").read_text().splitlines()
        rows = [json.loads(line) for line in lines]
        epochs = [r for r in rows if "epoch" in r and "step" in r]
        steps[name] = (len(epochs), epochs[-1]["step"])
    assert steps["scratch"] == (2, 2 * math.ceil(n_lab / 32))  # its own epochs, over the labelled images only
    assert steps["kd"] == (1, math.ceil(n_train / 32))  # every image, the recipe's epochs
    assert {s["name"] for s in report["students"]} == {"scratch", "kd"}


def test_a_method_train_override_is_checked_with_the_recipe():
    with pytest.raises(ConfigError, match=r"methods\.0\.train.*epochs"):
        C.from_dict(C.Config, {"methods": [{"name": "scratch", "train": {"epochs": 0}}]})
    with pytest.raises(ConfigError, match=r"unknown key 'methods\.0\.train\.epoch'"):
        C.from_dict(C.Config, {"methods": [{"name": "scratch", "train": {"epoch": 3}}]})
    cfg = C.from_dict(C.Config, {"train": {"epochs": 4, "lr": 0.1}, "methods": [{"name": "s", "train": {"epochs": 9}}]})
    o = C.method_optim(cfg, cfg.methods[0])
    assert (o.epochs, o.lr) == (9, 0.1)


def test_split_seed_keeps_the_validation_split_while_the_seed_changes(synth):
    base = DataModule(synth, batch_size=32, val_size=32, seed=0)
    other = DataModule(synth, batch_size=32, val_size=32, seed=1)
    fixed = DataModule(synth, batch_size=32, val_size=32, seed=1, split_seed=0, labeled_fraction=0.5)
    assert not torch.equal(base.x_val, other.x_val)
    assert torch.equal(base.x_val, fixed.x_val) and torch.equal(base.x_train, fixed.x_train)
    # the labelled subset still follows the run's seed
    again = DataModule(synth, batch_size=32, val_size=32, seed=0, split_seed=0, labeled_fraction=0.5)
    assert not torch.equal(fixed.y_train, again.y_train)
    with pytest.raises(ConfigError, match="split_seed"):
        C.from_dict(C.Config, {"data": {"split_seed": -1}})

"""Report invariants against hand computations: gap recovered, speed-ups, the classification metrics, prediction
without autograd on the inputs as given, and latency that orders models by their real cost."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from torch import nn

from distill.api import build_report
from distill.config import Config
from distill.data.base import load_dataset
from distill.report.bench import count_params, latency_ms
from distill.report.metrics import classification_metrics, expected_calibration_error, predict


@pytest.fixture(scope="module")
def small_data():
    return load_dataset("synthetic", n_train=16, n_test=8, num_classes=3, size=8)


def report_for(small_data, teacher_acc, accs, latencies=None):
    """build_report on hand-made rows; ``accs`` maps method -> accuracy (``scratch`` is the baseline)."""
    cfg = Config()
    cfg.bench.batch_sizes = [1, 8]
    teacher = {"name": "teacher", "method": "teacher", "acc": teacher_acc}
    students = [{"name": m, "method": m, "acc": a} for m, a in accs.items()]
    if latencies:
        teacher.update({f"latency_ms_b{bs}": v for bs, v in latencies["teacher"].items()})
        for s in students:
            s.update({f"latency_ms_b{bs}": v for bs, v in latencies[s["method"]].items()})
    return build_report(cfg, small_data, teacher, students, seconds=1.0)


@pytest.mark.parametrize(
    ("teacher", "scratch", "student", "want"),
    [
        (0.9, 0.8, 0.85, 0.5),
        (0.9, 0.8, 0.9, 1.0),
        (0.9, 0.8, 0.95, 1.5),  # beyond the teacher
        (0.9, 0.8, 0.75, -0.5),  # worse than scratch
        (0.7, 0.4, 0.55, 0.5),
        (0.95, 0.6, 0.67, 0.2),
    ],
)
def test_gap_recovered_is_the_share_of_the_teacher_scratch_gap_closed(small_data, teacher, scratch, student, want):
    report = report_for(small_data, teacher, {"scratch": scratch, "kd": student})
    rows = {s["method"]: s for s in report["students"]}
    assert rows["kd"]["gap_recovered"] == pytest.approx(want, abs=1e-9)
    assert rows["kd"]["gap_recovered"] == pytest.approx((student - scratch) / (teacher - scratch), abs=1e-12)
    assert rows["scratch"]["gap_recovered"] == 0.0
    assert report["teacher"]["accuracy"] == teacher and rows["kd"]["accuracy"] == student


@pytest.mark.parametrize(("teacher", "scratch"), [(0.8, 0.8), (0.7, 0.8)])
def test_gap_recovered_is_undefined_without_a_positive_gap(small_data, teacher, scratch):
    report = report_for(small_data, teacher, {"scratch": scratch, "kd": 0.75})
    assert all(s["gap_recovered"] is None for s in report["students"])


def test_gap_recovered_is_undefined_without_a_scratch_baseline(small_data):
    report = report_for(small_data, 0.9, {"kd": 0.85, "fitnet": 0.8})
    assert all(s["gap_recovered"] is None for s in report["students"])


def test_speedup_is_teacher_latency_over_student_latency(small_data):
    lat = {"teacher": {1: 4.0, 8: 12.0}, "scratch": {1: 1.0, 8: 3.0}, "kd": {1: 2.0, 8: 8.0}}
    report = report_for(small_data, 0.9, {"scratch": 0.8, "kd": 0.85}, lat)
    rows = {s["method"]: s for s in report["students"]}
    assert rows["scratch"]["speedup_b1"] == pytest.approx(4.0) and rows["scratch"]["speedup_b8"] == pytest.approx(4.0)
    assert rows["kd"]["speedup_b1"] == pytest.approx(2.0) and rows["kd"]["speedup_b8"] == pytest.approx(1.5)
    assert report["dataset"] == {
        "name": small_data.name,
        "train": 16,
        "test": 8,
        "classes": 3,
        "fingerprint": small_data.fingerprint(),
    }


# --- classification metrics ------------------------------------------------------------------------------------


def hand_metrics(logits: np.ndarray, labels: np.ndarray, teacher: np.ndarray | None, bins: int = 15) -> dict:
    z = logits.astype(np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    n = len(labels)
    order = np.argsort(-z, axis=1, kind="stable")
    out = {
        "acc": sum(order[i, 0] == labels[i] for i in range(n)) / n,
        "top5": sum(labels[i] in order[i, :5] for i in range(n)) / n,
        "nll": -sum(math.log(p[i, labels[i]]) for i in range(n)) / n,
    }
    conf, pred = p.max(1), p.argmax(1)
    ece = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        members = [i for i in range(n) if lo < conf[i] <= hi]
        if members:
            gap = abs(np.mean([conf[i] for i in members]) - np.mean([pred[i] == labels[i] for i in members]))
            ece += len(members) / n * gap
    out["ece"] = ece
    if teacher is not None:
        out["agreement"] = float(np.mean(logits.argmax(1) == teacher.argmax(1)))
    return out


def test_classification_metrics_equal_hand_computations():
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(200, 7, generator=g) * 2
    labels = torch.randint(0, 7, (200,), generator=g)
    logits[torch.arange(0, 200, 3), labels[::3]] += 3.0  # better than chance, not perfect
    teacher = logits + torch.randn(200, 7, generator=g)
    got = classification_metrics(logits, labels, teacher)
    want = hand_metrics(logits.numpy(), labels.numpy(), teacher.numpy())
    assert set(got) == set(want)
    for k in want:
        assert got[k] == pytest.approx(want[k], abs=1e-5), k
    assert 0.0 < want["acc"] < want["top5"] < 1.0 and 0.0 < want["agreement"] < 1.0  # a non-degenerate example
    assert "agreement" not in classification_metrics(logits, labels)


def test_metrics_on_a_tiny_example_known_by_heart():
    logits = torch.tensor([[2.0, 1.0, 0.0], [0.0, 3.0, 1.0], [1.0, 0.0, 5.0], [0.0, 0.0, 1.0]])
    labels = torch.tensor([0, 2, 2, 1])
    teacher = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    m = classification_metrics(logits, labels, teacher)
    assert m["acc"] == pytest.approx(0.5)  # rows 0 and 2
    assert m["agreement"] == pytest.approx(0.5)  # rows 0 and 2 share the teacher's argmax
    assert m["top5"] == pytest.approx(1.0)  # K = 3: every label is in the top 3
    nll = -np.mean([math.log(np.exp(r[y]) / np.exp(r).sum()) for r, y in zip(logits.numpy(), labels, strict=True)])
    assert m["nll"] == pytest.approx(nll, rel=1e-6)


def test_ece_is_zero_when_confidence_matches_accuracy_and_large_when_it_does_not():
    # two samples at confidence 0.5 (one right, one wrong): perfectly calibrated
    half = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    assert expected_calibration_error(half, torch.tensor([0, 1])) == pytest.approx(0.0, abs=1e-7)
    # very confident and always wrong: ECE is the confidence
    wrong = torch.tensor([[10.0, 0.0], [10.0, 0.0]])
    conf = 1 / (1 + math.exp(-10))
    assert expected_calibration_error(wrong, torch.tensor([1, 1])) == pytest.approx(conf, rel=1e-6)


# --- prediction ------------------------------------------------------------------------------------------------


class Probe(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)
        self.seen: list[tuple[torch.Tensor, bool, bool]] = []

    def forward(self, x):
        self.seen.append((x.detach().clone(), torch.is_grad_enabled(), self.training))
        return self.fc(x)


class B:  # the two attributes predict reads from a batch
    def __init__(self, x, y):
        self.x, self.y = x, y


@pytest.mark.parametrize("training", [True, False])
def test_predict_runs_in_eval_mode_without_autograd_and_restores_the_mode(training):
    torch.manual_seed(0)
    model = Probe().train(training)
    batches = [B(torch.randn(5, 4), torch.randint(0, 3, (5,))) for _ in range(3)]
    with torch.enable_grad():  # even when the caller has autograd on
        logits, labels = predict(model, batches)
    assert [(grad, mode) for _, grad, mode in model.seen] == [(False, False)] * 3
    assert not logits.requires_grad and logits.grad_fn is None
    assert model.training is training
    x = torch.cat([b.x for b in batches])
    assert torch.equal(torch.cat([s for s, _, _ in model.seen]), x)  # the inputs as given, in order
    assert torch.equal(labels, torch.cat([b.y for b in batches]))
    with torch.no_grad():
        assert torch.allclose(logits, model.fc(x))
    assert logits.dtype == torch.float32 and logits.device.type == "cpu"


def test_predict_does_not_build_a_graph_through_the_parameters():
    model = Probe()
    logits, _ = predict(model, [B(torch.randn(4, 4), torch.zeros(4, dtype=torch.long))])
    with pytest.raises(RuntimeError):
        logits.sum().backward()  # nothing to backpropagate through
    assert all(p.grad is None for p in model.parameters())


# --- cost ------------------------------------------------------------------------------------------------------


class Sleeper(nn.Module):
    """Takes ``ms`` milliseconds per forward; records whether it ran in eval mode without autograd."""

    def __init__(self, ms: float) -> None:
        super().__init__()
        self.ms = ms
        self.w = nn.Parameter(torch.zeros(1))
        self.modes: set[tuple[bool, bool]] = set()

    def forward(self, x):
        self.modes.add((self.training, torch.is_grad_enabled()))
        time.sleep(self.ms / 1000)
        return x.flatten(1)[:, :2] + self.w


def test_latency_measures_the_forward_pass_and_orders_models_by_cost():
    fast, slow = Sleeper(1.0), Sleeper(8.0)
    t_fast = latency_ms(fast, (1, 4, 4), batch_size=2, repeats=5, warmup=1, min_seconds=0.0)
    t_slow = latency_ms(slow, (1, 4, 4), batch_size=2, repeats=5, warmup=1, min_seconds=0.0)
    assert t_fast >= 1.0 and t_slow >= 8.0  # a sleep is a lower bound on the wall clock
    assert t_slow > t_fast + 5.0
    assert fast.modes == {(False, False)} and slow.modes == {(False, False)}
    assert count_params(slow) == 1 and count_params(nn.Linear(3, 4)) == 16


def test_ece_bins_are_left_open_right_closed_on_0_1_by_hand():
    """ECE with 2 bins, (0, 0.5] and (0.5, 1]: a confidence exactly on the inner edge belongs to the lower bin only,
    a confidence of exactly 1 to the top bin, and bin widths are 1/bins of [0, 1] (hand computation)."""
    from distill.report.metrics import expected_calibration_error

    logits = torch.tensor([[0.0, 0.0], [0.0, -200.0], [3.0, 0.0]])  # confidences 0.5, 1.0 exactly, e^3 / (e^3 + 1)
    labels = torch.tensor([0, 1, 0])  # right (a tie resolves to class 0), wrong, right
    c = math.exp(3) / (math.exp(3) + 1)
    low = (1 / 3) * abs(0.5 - 1.0)  # bin (0, 0.5]: the 0.5 sample only
    high = (2 / 3) * abs((1.0 + c) / 2 - 0.5)  # bin (0.5, 1]: the sure-but-wrong sample and the right one
    assert expected_calibration_error(logits, labels, bins=2) == pytest.approx(low + high, abs=1e-6)

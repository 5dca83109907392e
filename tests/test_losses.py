"""Each loss against an independent NumPy computation (and one value by hand)."""

import math

import numpy as np
import pytest
import torch

from distill.losses import hint_loss, kd_loss, pseudo_label_loss, soft_cross_entropy


def np_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def np_kd(s: np.ndarray, t: np.ndarray, temp: float) -> float:
    """T² · mean over samples of Σ_k p_t log(p_t / p_s), written from Hinton et al.'s definition."""
    ps, pt = np_softmax(s / temp), np_softmax(t / temp)
    per_sample = (pt * (np.log(pt) - np.log(ps))).sum(axis=1)
    return float(temp**2 * per_sample.mean())


@pytest.mark.parametrize("temp", [1.0, 2.0, 4.0, 8.0])
def test_kd_loss_matches_numpy(temp):
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(16, 10)) * 3, rng.normal(size=(16, 10)) * 3
    got = kd_loss(torch.tensor(s, dtype=torch.float64), torch.tensor(t, dtype=torch.float64), temp)
    assert got.item() == pytest.approx(np_kd(s, t, temp), rel=1e-9)


def test_kd_loss_by_hand():
    # Two classes, T = 2: student logits (0, 0) -> p_s = (½, ½); teacher (2 ln 3, 0) -> softened (3/4, 1/4).
    # KL = ¾ ln(¾ / ½) + ¼ ln(¼ / ½) = ¾ ln 1.5 − ¼ ln 2; times T² = 4.
    s = torch.tensor([[0.0, 0.0]])
    t = torch.tensor([[2 * math.log(3.0), 0.0]])
    expected = 4 * (0.75 * math.log(1.5) - 0.25 * math.log(2.0))
    assert kd_loss(s, t, 2.0).item() == pytest.approx(expected, rel=1e-6)


def test_kd_loss_is_batchmean_not_elementwise_mean():
    rng = np.random.default_rng(1)
    s, t = rng.normal(size=(4, 100)), rng.normal(size=(4, 100))
    got = kd_loss(torch.tensor(s), torch.tensor(t), 1.0).item()
    assert got == pytest.approx(np_kd(s, t, 1.0), rel=1e-9)  # 'mean' would be 100x smaller
    assert kd_loss(torch.tensor(s), torch.tensor(s), 3.0).item() == pytest.approx(0.0, abs=1e-12)


def test_kd_gradient_flows_to_student_only_and_scales_with_t_squared():
    teacher = torch.nn.Linear(5, 3)
    student = torch.nn.Linear(5, 3)
    x = torch.randn(8, 5)
    with torch.no_grad():
        t = teacher(x)
    loss = kd_loss(student(x), t, 4.0)
    loss.backward()
    assert student.weight.grad is not None and student.weight.grad.abs().sum() > 0
    assert teacher.weight.grad is None
    # d/ds of T²·KL at temperature T is T·(p_s − p_t) per sample / B: check against NumPy
    s = student(x).detach().numpy().astype(np.float64)
    s_t = torch.tensor(s, requires_grad=True)
    kd_loss(s_t, t.double(), 4.0).backward()
    expected = 4.0 * (np_softmax(s / 4.0) - np_softmax(t.numpy().astype(np.float64) / 4.0)) / len(s)
    np.testing.assert_allclose(s_t.grad.numpy(), expected, rtol=1e-7, atol=1e-12)


def test_kd_rejects_non_positive_temperature():
    with pytest.raises(ValueError, match="temperature"):
        kd_loss(torch.zeros(1, 2), torch.zeros(1, 2), 0.0)


def test_soft_cross_entropy_matches_numpy():
    rng = np.random.default_rng(2)
    s = rng.normal(size=(6, 5))
    p = np_softmax(rng.normal(size=(6, 5)))
    expected = float(-(p * np.log(np_softmax(s))).sum(axis=1).mean())
    assert soft_cross_entropy(torch.tensor(s), torch.tensor(p)).item() == pytest.approx(expected, rel=1e-9)


def test_pseudo_label_loss_uses_teacher_argmax():
    rng = np.random.default_rng(3)
    s, t = rng.normal(size=(7, 4)), rng.normal(size=(7, 4))
    labels = t.argmax(axis=1)
    expected = float(-np.log(np_softmax(s)[np.arange(7), labels]).mean())
    assert pseudo_label_loss(torch.tensor(s), torch.tensor(t)).item() == pytest.approx(expected, rel=1e-9)


def test_hint_loss_matches_numpy_and_checks_shapes():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(2, 3, 4, 4)), rng.normal(size=(2, 3, 4, 4))
    assert hint_loss(torch.tensor(a), torch.tensor(b)).item() == pytest.approx(float(((a - b) ** 2).mean()), rel=1e-9)
    with pytest.raises(ValueError, match="shapes differ"):
        hint_loss(torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 4, 4))

"""Soft-target scikit-learn students at a temperature other than 1, against independent computations.

The documented target at temperature ``T`` is ``softmax(log p / T)`` (for a teacher's probabilities ``p``; =
``softmax(z / T)`` of its logits ``z``). Each student fitted at ``T`` must equal the same student fitted at ``T = 1``
on targets softened here by hand, and the logistic regression must also equal scikit-learn on weight-expanded rows
and a direct NumPy/SciPy minimisation of the soft cross-entropy.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import minimize
from sklearn.datasets import load_wine
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from distill.classical import (
    SoftTargetDecisionTree,
    SoftTargetGradientBoosting,
    SoftTargetLogisticRegression,
)


@pytest.fixture(scope="module")
def wine():
    x, y = load_wine(return_X_y=True)
    return StandardScaler().fit_transform(x), y


def teacher_logits(n: int, k: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(scale=2.5, size=(n, k))


def softmax_rows(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def direct_soft_logreg(x: np.ndarray, p: np.ndarray, C: float) -> tuple[np.ndarray, np.ndarray]:
    """argmin Σ_i CE(p_i, softmax(W x_i + b)) + ||W||² / (2C), by L-BFGS on a finite-difference-free gradient."""
    d, k = x.shape[1], p.shape[1]

    def f(theta):
        w, b = theta[: d * k].reshape(k, d), theta[d * k :]
        z = x @ w.T + b
        zmax = z.max(1, keepdims=True)
        lse = zmax[:, 0] + np.log(np.exp(z - zmax).sum(1))
        loss = (lse - (p * z).sum(1)).sum() + (w * w).sum() / (2 * C)
        g = softmax_rows(z) - p
        return loss, np.concatenate([(g.T @ x + w / C).ravel(), g.sum(0)])

    res = minimize(f, np.zeros(d * k + k), jac=True, method="L-BFGS-B", options={"maxiter": 5000, "gtol": 1e-10})
    return res.x[: d * k].reshape(k, d), res.x[d * k :]


@pytest.mark.parametrize("T", [0.5, 2.0, 4.0])
def test_logreg_at_temperature_fits_the_softened_targets(wine, T):
    x, _ = wine
    z = teacher_logits(len(x))
    p = softmax_rows(z)
    target = softmax_rows(z / T)  # closed form, from the logits
    ours = SoftTargetLogisticRegression(C=1.5, temperature=T, tol=1e-10).fit(x, soft_targets=p)
    # 1. scikit-learn on K weighted copies of each row, weights = softened probabilities
    rows, labels = np.repeat(np.arange(len(x)), 3), np.tile(np.arange(3), len(x))
    ref = LogisticRegression(C=1.5, tol=1e-10, max_iter=20_000).fit(x[rows], labels, sample_weight=target.ravel())
    np.testing.assert_allclose(ours.predict_proba(x), ref.predict_proba(x), atol=2e-4)
    # 2. a direct minimisation of the soft cross-entropy on the softened targets
    w, b = direct_soft_logreg(x, target, C=1.5)
    np.testing.assert_allclose(ours.coef_, w, atol=2e-4)
    np.testing.assert_allclose(ours.intercept_ - ours.intercept_.mean(), b - b.mean(), atol=2e-4)
    # 3. and it is not the T = 1 fit (the temperature matters on these targets)
    plain = SoftTargetLogisticRegression(C=1.5, tol=1e-10).fit(x, soft_targets=p)
    assert np.abs(plain.coef_ - ours.coef_).max() > 1e-2


@pytest.mark.parametrize("T", [2.0, 3.0])
def test_logreg_with_a_teacher_and_transfer_set_softens_every_target(wine, T):
    x, y = wine
    w_t = np.random.default_rng(2).normal(size=(x.shape[1], 3))

    def teacher(X):  # a callable teacher: probabilities from fixed logits X @ w_t
        return softmax_rows(X @ w_t)

    lab, unl = x[:60], x[60:]
    via_teacher = SoftTargetLogisticRegression(teacher=teacher, temperature=T, alpha=0.6, tol=1e-10)
    via_teacher.fit(lab, y[:60], X_unlabeled=unl)
    # by hand: labelled rows get 0.6 · softmax(z / T) + 0.4 · one-hot, transfer rows softmax(z / T)
    hand_lab = 0.6 * softmax_rows(lab @ w_t / T) + 0.4 * np.eye(3)[y[:60]]
    hand_unl = softmax_rows(unl @ w_t / T)
    stacked = np.vstack([hand_lab, hand_unl])
    direct = SoftTargetLogisticRegression(tol=1e-10).fit(np.vstack([lab, unl]), soft_targets=stacked)
    np.testing.assert_allclose(via_teacher.coef_, direct.coef_, atol=1e-5)


@pytest.mark.parametrize("T", [0.7, 3.0])
def test_tree_leaves_predict_the_mean_softened_target(wine, T):
    x, _ = wine
    z = teacher_logits(len(x), seed=3)
    tree = SoftTargetDecisionTree(max_depth=3, random_state=0, temperature=T).fit(x, soft_targets=softmax_rows(z))
    target = softmax_rows(z / T)
    leaves = tree.apply(x)
    expected = np.stack([target[leaves == leaf].mean(0) for leaf in leaves])
    np.testing.assert_allclose(tree.predict_proba(x), expected, atol=1e-6)


@pytest.mark.parametrize("T", [2.0, 5.0])
def test_boosting_at_temperature_equals_boosting_on_hand_softened_targets(wine, T):
    x, _ = wine
    z = teacher_logits(len(x), seed=4)
    kw = {"max_iter": 10, "random_state": 0}
    ours = SoftTargetGradientBoosting(temperature=T, **kw).fit(x, soft_targets=softmax_rows(z))
    hand = SoftTargetGradientBoosting(**kw).fit(x, soft_targets=softmax_rows(z / T))
    np.testing.assert_allclose(ours.predict_proba(x), hand.predict_proba(x), atol=1e-10)
    plain = SoftTargetGradientBoosting(**kw).fit(x, soft_targets=softmax_rows(z))
    assert np.abs(plain.predict_proba(x) - ours.predict_proba(x)).max() > 1e-2


def test_higher_temperature_gives_flatter_predictions(wine):
    """Monotone in T: the fitted model's mean entropy grows with the temperature of its targets."""
    x, _ = wine
    p = softmax_rows(x @ np.random.default_rng(5).normal(size=(x.shape[1], 3)))  # a teacher the student can follow

    def entropy(q):
        return float(-(q * np.log(np.clip(q, 1e-15, 1))).sum(1).mean())

    ents = [
        entropy(SoftTargetLogisticRegression(C=10.0, temperature=t).fit(x, soft_targets=p).predict_proba(x))
        for t in (0.5, 1.0, 2.0, 8.0)
    ]
    assert ents == sorted(ents) and ents[-1] - ents[0] > 0.3

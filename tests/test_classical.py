"""scikit-learn students: soft-target fitting pinned to independent computations, the estimator contract, and the
teacher-feature transformer against a direct forward pass with a hook."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_wine
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier
from sklearn.utils.estimator_checks import parametrize_with_checks
from torch import nn

from distill.classical import (
    SoftTargetDecisionTree,
    SoftTargetGradientBoosting,
    SoftTargetLogisticRegression,
    TeacherFeatures,
    soft_cross_entropy,
    soften,
)
from distill.models.zoo import create_model


@pytest.fixture(scope="module")
def wine():
    x, y = load_wine(return_X_y=True)
    return StandardScaler().fit_transform(x), y


def soft(n: int, k: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.full(k, 0.7), size=n)


# --- equivalences with independent fits ----------------------------------------------------------------------------


def test_logreg_on_one_hot_targets_equals_sklearn_on_hard_labels(wine):
    x, y = wine
    ours = SoftTargetLogisticRegression(C=0.5, tol=1e-9).fit(x, soft_targets=np.eye(3)[y])
    ref = LogisticRegression(C=0.5, tol=1e-10, max_iter=10_000).fit(x, y)
    np.testing.assert_allclose(ours.coef_, ref.coef_, atol=2e-4)
    np.testing.assert_allclose(ours.predict_proba(x), ref.predict_proba(x), atol=1e-4)
    # labels alone are the same fit
    hard = SoftTargetLogisticRegression(C=0.5, tol=1e-9).fit(x, y)
    np.testing.assert_allclose(hard.coef_, ours.coef_, atol=1e-6)


def test_logreg_on_soft_targets_equals_sklearn_on_weight_expanded_rows(wine):
    """Σ_k p_k · CE(k) is the soft cross-entropy: sklearn on K weighted copies per row reaches the same optimum."""
    x, _ = wine
    p = soft(len(x), 3)
    ours = SoftTargetLogisticRegression(C=2.0, tol=1e-9).fit(x, soft_targets=p)
    rows = np.repeat(np.arange(len(x)), 3)
    labels = np.tile(np.arange(3), len(x))
    ref = LogisticRegression(C=2.0, tol=1e-10, max_iter=10_000).fit(x[rows], labels, sample_weight=p.ravel())
    np.testing.assert_allclose(ours.coef_, ref.coef_, atol=2e-4)
    np.testing.assert_allclose(ours.predict_proba(x), ref.predict_proba(x), atol=1e-4)
    # and it beats the hard-label fit on the soft cross-entropy it minimises
    hard = SoftTargetLogisticRegression(C=2.0).fit(x, p.argmax(1))
    assert soft_cross_entropy(p, ours.predict_proba(x)) < soft_cross_entropy(p, hard.predict_proba(x))


def test_tree_on_one_hot_targets_equals_gini_tree(wine):
    x, y = wine
    ours = SoftTargetDecisionTree(random_state=0).fit(x, soft_targets=np.eye(3)[y])
    ref = DecisionTreeClassifier(random_state=0).fit(x, y)
    probe = np.random.default_rng(1).normal(size=(200, x.shape[1]))
    np.testing.assert_array_equal(ours.predict_proba(probe), ref.predict_proba(probe))


def test_tree_leaves_predict_the_mean_soft_target(wine):
    x, _ = wine
    p = soft(len(x), 3, seed=2)
    tree = SoftTargetDecisionTree(max_depth=3, random_state=0).fit(x, soft_targets=p)
    leaves = tree.apply(x)
    expected = np.stack([p[leaves == leaf].mean(0) for leaf in leaves])
    np.testing.assert_allclose(tree.predict_proba(x), expected, atol=1e-6)


def test_boosting_on_one_hot_targets_equals_hist_gradient_boosting(wine):
    x, y = wine
    ours = SoftTargetGradientBoosting(max_iter=15, random_state=0).fit(x, soft_targets=np.eye(3)[y])
    ref = HistGradientBoostingClassifier(max_iter=15, early_stopping=False, random_state=0).fit(x, y)
    probe = x + 0.05
    np.testing.assert_allclose(ours.predict_proba(probe), ref.predict_proba(probe), atol=1e-12)


def test_boosting_fits_soft_targets_better_than_their_argmax(wine):
    x, _ = wine
    p = soft(len(x), 3, seed=3)
    ours = SoftTargetGradientBoosting(max_iter=30, random_state=0).fit(x, soft_targets=p)
    hard = SoftTargetGradientBoosting(max_iter=30, random_state=0).fit(x, p.argmax(1))
    assert soft_cross_entropy(p, ours.predict_proba(x)) < soft_cross_entropy(p, hard.predict_proba(x))


def test_soften_is_softmax_of_log_probs_over_t():
    logits = np.array([[2.0, 0.5, -1.0]])
    p = np.exp(logits) / np.exp(logits).sum()
    t = 3.0
    expected = np.exp(logits / t) / np.exp(logits / t).sum()
    np.testing.assert_allclose(soften(p, t), expected, rtol=1e-12)


# --- teacher, transfer set, mixing ---------------------------------------------------------------------------------


def test_teacher_labels_an_unlabeled_transfer_set(wine):
    x, y = wine
    teacher = LogisticRegression(max_iter=1000).fit(x[::2], y[::2])
    unlabeled = x[1::2]
    direct = SoftTargetLogisticRegression(C=1.0).fit(unlabeled, soft_targets=teacher.predict_proba(unlabeled))
    via_teacher = SoftTargetLogisticRegression(C=1.0, teacher=teacher).fit(unlabeled)
    np.testing.assert_allclose(direct.coef_, via_teacher.coef_)
    np.testing.assert_array_equal(via_teacher.classes_, teacher.classes_)
    # labelled rows plus an unlabeled transfer set: targets are stacked
    both = SoftTargetDecisionTree(max_depth=2, random_state=0, teacher=teacher, alpha=0.0)
    both.fit(x[:20], y[:20], X_unlabeled=unlabeled)
    stacked = SoftTargetDecisionTree(max_depth=2, random_state=0).fit(
        np.vstack([x[:20], unlabeled]), soft_targets=np.vstack([np.eye(3)[y[:20]], teacher.predict_proba(unlabeled)])
    )
    np.testing.assert_array_equal(both.predict_proba(x), stacked.predict_proba(x))
    assert (via_teacher.predict(x) == y).mean() > 0.9


def test_alpha_mixes_soft_and_hard_targets(wine):
    x, y = wine
    p = soft(len(x), 3)
    mixed = SoftTargetLogisticRegression(alpha=0.3).fit(x, y, soft_targets=p)
    ref = SoftTargetLogisticRegression().fit(x, soft_targets=0.3 * p + 0.7 * np.eye(3)[y])
    np.testing.assert_allclose(mixed.coef_, ref.coef_, atol=1e-8)


def test_bad_soft_targets_are_refused(wine):
    x, _ = wine
    with pytest.raises(ValueError, match="sum to 1"):
        SoftTargetLogisticRegression().fit(x, soft_targets=np.full((len(x), 3), 0.5))
    with pytest.raises(ValueError, match=r"\(n_samples, n_classes\)"):
        SoftTargetLogisticRegression().fit(x, soft_targets=np.full((3, 3), 1 / 3))
    with pytest.raises(ValueError, match="requires y"):
        SoftTargetLogisticRegression().fit(x)


@parametrize_with_checks(
    [
        SoftTargetLogisticRegression(),
        SoftTargetDecisionTree(random_state=0),
        SoftTargetGradientBoosting(max_iter=5, random_state=0),
    ]
)
def test_sklearn_estimator_contract(estimator, check):
    check(estimator)


# --- TeacherFeatures -----------------------------------------------------------------------------------------------


class _Stats(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        return torch.stack([x.mean(1), x.std(1), x.amax(1)], 1)


class _AnyWidth(nn.Module):
    """Features independent of the input size, so scikit-learn's checks can feed any number of columns."""

    penultimate = "body"

    def __init__(self) -> None:
        super().__init__()
        self.body = _Stats()
        self.fc = nn.Linear(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


@parametrize_with_checks(
    [TeacherFeatures(_AnyWidth(), input_shape=(-1, 1, 1))],
    expected_failed_checks=lambda est: {
        "check_estimators_overwrite_params": "joblib.hash of a deep-copied torch module differs from the original "
        "even when nothing changed, so this check cannot tell a mutated module from a copied one"
    },
)
def test_teacher_features_estimator_contract(estimator, check):
    check(estimator)


@pytest.fixture(scope="module")
def cnn():
    torch.manual_seed(0)
    return create_model("cnn", num_classes=4, in_channels=1, width=4, blocks=1).eval()


def test_teacher_features_equal_a_hooked_forward_pass(cnn):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(37, 1, 12, 12), dtype=np.uint8)
    mean, std = 0.3, 0.2
    tf = TeacherFeatures(cnn, mean=[mean], std=[std], batch_size=8)
    got = tf.fit_transform(x)
    # layer2 output is a (B, 8, 6, 6) map: pooled to (B, 8)
    got_l2 = TeacherFeatures(cnn, layer="layer2", mean=[mean], std=[std], batch_size=10).fit_transform(x)
    seen = {}
    handles = [
        cnn.pool.register_forward_hook(lambda m, i, o: seen.__setitem__("pool", o)),
        cnn.layer2.register_forward_hook(lambda m, i, o: seen.__setitem__("layer2", o)),
    ]
    with torch.no_grad():
        cnn((torch.from_numpy(x).float() / 255 - mean) / std)
    for h in handles:
        h.remove()
    np.testing.assert_allclose(got, seen["pool"].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_l2, seen["layer2"].mean(dim=(2, 3)).numpy(), rtol=1e-5, atol=1e-6)
    assert got.dtype == np.float32 and got.shape == (37, 16)
    # flat rows reshaped with input_shape give the same; float inputs on [0, 1] too
    flat = TeacherFeatures(cnn, input_shape=(1, 12, 12), mean=[mean], std=[std]).fit_transform(x.reshape(37, -1))
    np.testing.assert_allclose(flat, got, rtol=1e-5, atol=1e-6)
    as_float = TeacherFeatures(cnn, mean=[mean], std=[std]).fit_transform(x.astype(np.float32) / 255)
    np.testing.assert_allclose(as_float, got, rtol=1e-4, atol=1e-5)
    assert not cnn.training and not cnn._forward_hooks  # no hook left behind


def test_teacher_features_cache_and_model_directory(cnn, tmp_path, monkeypatch):
    from distill.artifacts import save_model

    spec = {
        "model": "cnn",
        "kwargs": {"width": 4, "blocks": 1},
        "num_classes": 4,
        "in_channels": 1,
        "preprocessing": {"input_shape": [1, 12, 12], "scale": 1 / 255, "mean": [0.3], "std": [0.2]},
    }
    save_model(tmp_path / "t", cnn, spec)
    x = np.random.default_rng(1).integers(0, 256, size=(20, 144), dtype=np.uint8)
    tf = TeacherFeatures(str(tmp_path / "t")).fit(x)  # preprocessing and input shape from model.json
    first = tf.transform(x)
    ref = TeacherFeatures(cnn, input_shape=(1, 12, 12), mean=[0.3], std=[0.2]).fit_transform(x)
    np.testing.assert_allclose(first, ref, rtol=1e-5, atol=1e-6)
    calls = []
    monkeypatch.setattr(tf, "_features", lambda X: calls.append(1) or np.zeros((len(X), 16), np.float32))
    np.testing.assert_array_equal(tf.transform(x.copy()), first)  # same content: served from the cache
    assert calls == []
    tf.transform(x[:5])
    assert calls == [1]
    with pytest.raises(Exception, match="unknown layer"):
        TeacherFeatures(cnn, layer="nope").fit()


def test_teacher_features_in_a_pipeline(cnn):
    from distill.data.base import load_dataset

    data = load_dataset("synthetic", n_train=200, n_test=100, num_classes=4, size=12)
    pipe = make_pipeline(
        TeacherFeatures(cnn, mean=list(data.mean), std=list(data.std)),
        StandardScaler(),
        LogisticRegression(max_iter=500),
    )
    pipe.fit(data.x_train.numpy(), data.y_train.numpy())
    assert pipe.score(data.x_test.numpy(), data.y_test.numpy()) > 0.8  # random conv features separate prototypes


def test_teacher_features_public_key_checks_the_directory_signature(cnn, tmp_path):
    from sklearn.base import clone

    from distill.artifacts import save_model
    from distill.errors import CheckpointError, ConfigError
    from distill.trust import generate_keypair, sign_model

    spec = {"model": "cnn", "kwargs": {"width": 4, "blocks": 1}, "num_classes": 4, "in_channels": 1}
    save_model(tmp_path / "t", cnn, {**spec, "preprocessing": {"input_shape": [1, 12, 12]}})
    generate_keypair(tmp_path / "k.key", tmp_path / "k.pub")
    x = np.random.default_rng(2).integers(0, 256, size=(6, 144), dtype=np.uint8)
    tf = TeacherFeatures(str(tmp_path / "t"), public_key=str(tmp_path / "k.pub"))
    with pytest.raises(CheckpointError, match="is not signed"):
        clone(tf).fit(x)  # clone keeps public_key: a grid search checks every copy
    sign_model(tmp_path / "t", tmp_path / "k.key")
    np.testing.assert_array_equal(tf.fit_transform(x), TeacherFeatures(str(tmp_path / "t")).fit_transform(x))
    with pytest.raises(ConfigError, match=r"model is an nn\.Module"):
        TeacherFeatures(cnn, public_key=str(tmp_path / "k.pub")).fit(x)

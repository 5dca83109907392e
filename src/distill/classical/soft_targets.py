"""Classical (scikit-learn) students fitted to a teacher's soft targets.

Each estimator follows scikit-learn's contract and is a drop-in classifier: ``fit(X, y)`` alone trains on the hard
labels (one-hot targets), so it also works where no teacher exists. Soft targets come from

* ``fit(X, soft_targets=P)`` — an ``(N, K)`` array of class probabilities, or
* the ``teacher`` parameter — a fitted estimator with ``predict_proba`` or a callable ``X -> (N, K)``, queried on
  ``X`` (and on ``X_unlabeled``, an unlabeled transfer set that only the teacher labels).

With labels and soft targets both present the target is ``alpha · soft + (1 − alpha) · one_hot(y)``. A
``temperature`` above 1 softens the teacher's probabilities as ``p^(1/T)`` renormalised (= softmax(logits / T)).

How each is fitted, and why it is exact:

* :class:`SoftTargetLogisticRegression` minimises ``Σ_i w_i · CE(p_i, softmax(W x_i + b)) + ||W||² / (2C)`` with
  L-BFGS (scipy) on the analytic gradient. This is the objective of scikit-learn's multinomial
  ``LogisticRegression`` with the one-hot target replaced by ``p_i``; replicating each sample K times with weight
  ``p_ik`` would give the same optimum but K times the memory (60 000 × 10 rows on Fashion-MNIST).
* :class:`SoftTargetDecisionTree` grows a multi-output ``DecisionTreeRegressor`` on the probability vectors. For
  one-hot targets, the summed squared error of a node is ``Σ_k p_k (1 − p_k)``, the Gini impurity, so it grows the
  same tree as a Gini classification tree; each leaf predicts the mean soft target of its samples.
* :class:`SoftTargetGradientBoosting` is a ``HistGradientBoostingClassifier`` on the weight-expanded set (each
  sample once per class k with weight ``p_ik``, zero weights dropped). The multinomial gradient and Hessian summed
  over a sample's copies are ``q_ik − p_ik`` and ``q_ik (1 − q_ik)`` — exactly the soft-target ones — so every
  histogram, split and leaf value equals that of boosting on the soft cross-entropy directly.
"""

from __future__ import annotations

from numbers import Real
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import logsumexp, softmax
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.tree import DecisionTreeRegressor
from sklearn.utils.validation import check_is_fitted, validate_data

from distill.classical.soft_base import _SoftTargetBase, expand_soft_targets, soft_cross_entropy, soften

__all__ = [
    "SoftTargetDecisionTree",
    "SoftTargetGradientBoosting",
    "SoftTargetLogisticRegression",
    "soft_cross_entropy",
    "soften",
]


class SoftTargetLogisticRegression(_SoftTargetBase):
    """Multinomial logistic regression fitted by L-BFGS to soft targets (cross-entropy + L2 on the weights).

    Args:
        C: inverse L2 strength, as in scikit-learn (the intercept is not penalised).
        teacher: an estimator with ``predict_proba`` or a callable giving ``(N, K)`` probabilities.
        temperature: softening of the teacher's probabilities.
        alpha: weight of the soft targets when labels are given too.
        classes: class labels of the soft-target columns (default: the teacher's ``classes_`` or ``0..K-1``).
        max_iter, tol: L-BFGS limits.
        fit_intercept: learn a per-class bias.

    Unlike scikit-learn, two classes also get two weight vectors (the multinomial form), so ``coef_`` is always
    ``(n_classes, n_features)``.
    """

    def __init__(
        self,
        C: float = 1.0,
        teacher: Any = None,
        temperature: float = 1.0,
        alpha: float = 1.0,
        classes: Any = None,
        max_iter: int = 500,
        tol: float = 1e-6,
        fit_intercept: bool = True,
    ) -> None:
        self.C = C
        self.teacher = teacher
        self.temperature = temperature
        self.alpha = alpha
        self.classes = classes
        self.max_iter = max_iter
        self.tol = tol
        self.fit_intercept = fit_intercept

    def fit(
        self, X: Any, y: Any = None, soft_targets: Any = None, X_unlabeled: Any = None, sample_weight: Any = None
    ) -> SoftTargetLogisticRegression:
        if not isinstance(self.C, Real) or self.C <= 0:
            raise ValueError(f"C must be > 0, got {self.C!r}")
        X, P, w = self._targets(X, y, soft_targets, X_unlabeled, sample_weight)
        d, k = X.shape[1], P.shape[1]
        total = w.sum()
        # The objective divided by Σw (same minimiser, better-scaled for L-BFGS's tolerances).
        reg = 1.0 / (self.C * total)
        wn = w / total

        def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
            W = theta[: d * k].reshape(d, k)
            b = theta[d * k :] if self.fit_intercept else 0.0
            z = X @ W + b  # (N, K)
            lse = logsumexp(z, axis=1)
            loss = float(wn @ (lse - (P * z).sum(axis=1))) + 0.5 * reg * float((W * W).sum())
            g = (softmax(z, axis=1) - P) * wn[:, None]  # (N, K): d loss / d z
            grad_w = X.T @ g + reg * W
            grads = [grad_w.ravel()] + ([g.sum(axis=0)] if self.fit_intercept else [])
            return loss, np.concatenate(grads)

        theta0 = np.zeros(d * k + (k if self.fit_intercept else 0))
        res = minimize(
            objective,
            theta0,
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": self.max_iter, "gtol": self.tol, "ftol": 64 * np.finfo(float).eps},
        )
        self.coef_ = res.x[: d * k].reshape(d, k).T.copy()  # (K, D), as in scikit-learn
        self.intercept_ = res.x[d * k :].copy() if self.fit_intercept else np.zeros(k)
        self.n_iter_ = np.array([res.nit])
        self.loss_ = float(res.fun)
        return self

    def _logits(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return X @ self.coef_.T + self.intercept_  # (N, K)

    def decision_function(self, X: Any) -> np.ndarray:
        """Class scores ``(N, K)``; for two classes the log-odds of ``classes_[1]``, ``(N,)``, as scikit-learn does."""
        z = self._logits(X)
        return z[:, 1] - z[:, 0] if z.shape[1] == 2 else z

    def predict_proba(self, X: Any) -> np.ndarray:
        return softmax(self._logits(X), axis=1)


class SoftTargetDecisionTree(_SoftTargetBase):
    """A multi-output regression tree on the soft-target vectors; ``predict_proba`` is its clipped, renormalised
    output (the mean soft target of the leaf).

    Args:
        max_depth, min_samples_split, min_samples_leaf, max_features, max_leaf_nodes, ccp_alpha, random_state:
            as in scikit-learn's trees.
        teacher, temperature, alpha, classes: see :class:`SoftTargetLogisticRegression`.
    """

    def __init__(
        self,
        max_depth: int | None = None,
        min_samples_split: int | float = 2,
        min_samples_leaf: int | float = 1,
        max_features: Any = None,
        max_leaf_nodes: int | None = None,
        ccp_alpha: float = 0.0,
        random_state: Any = None,
        teacher: Any = None,
        temperature: float = 1.0,
        alpha: float = 1.0,
        classes: Any = None,
    ) -> None:
        self.max_depth = max_depth
        self.min_samples_split = min_samples_split
        self.min_samples_leaf = min_samples_leaf
        self.max_features = max_features
        self.max_leaf_nodes = max_leaf_nodes
        self.ccp_alpha = ccp_alpha
        self.random_state = random_state
        self.teacher = teacher
        self.temperature = temperature
        self.alpha = alpha
        self.classes = classes

    def fit(
        self, X: Any, y: Any = None, soft_targets: Any = None, X_unlabeled: Any = None, sample_weight: Any = None
    ) -> SoftTargetDecisionTree:
        X, P, w = self._targets(X, y, soft_targets, X_unlabeled, sample_weight)
        self.tree_model_ = DecisionTreeRegressor(
            criterion="squared_error",
            max_depth=self.max_depth,
            min_samples_split=self.min_samples_split,
            min_samples_leaf=self.min_samples_leaf,
            max_features=self.max_features,
            max_leaf_nodes=self.max_leaf_nodes,
            ccp_alpha=self.ccp_alpha,
            random_state=self.random_state,
        ).fit(X, P, sample_weight=w)
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        out = self.tree_model_.predict(X).reshape(len(X), -1).clip(0.0, None)
        s = out.sum(axis=1, keepdims=True)
        return np.where(s > 0, out / np.where(s > 0, s, 1.0), 1.0 / out.shape[1])

    def apply(self, X: Any) -> np.ndarray:
        """The leaf index of every sample."""
        check_is_fitted(self)
        return self.tree_model_.apply(validate_data(self, X, dtype=np.float32, reset=False))

    def get_depth(self) -> int:
        check_is_fitted(self)
        return self.tree_model_.get_depth()


class SoftTargetGradientBoosting(_SoftTargetBase):
    """Histogram gradient boosting on the soft cross-entropy, via exact sample-weight expansion (see the module).

    Args:
        learning_rate, max_iter, max_leaf_nodes, max_depth, min_samples_leaf, l2_regularization, max_bins,
        random_state: as in ``HistGradientBoostingClassifier`` (early stopping is off: a validation split of the
        expanded rows would separate a sample's copies).
        min_weight: copies whose target probability is at most this are dropped (0: exact; 1e-4 saves time on
            confident teachers).
        teacher, temperature, alpha, classes: see :class:`SoftTargetLogisticRegression`.

    ``min_samples_leaf`` counts expanded rows (a sample contributes one row per class it has weight on).
    """

    def __init__(
        self,
        learning_rate: float = 0.1,
        max_iter: int = 100,
        max_leaf_nodes: int | None = 31,
        max_depth: int | None = None,
        min_samples_leaf: int = 20,
        l2_regularization: float = 0.0,
        max_bins: int = 255,
        random_state: Any = None,
        min_weight: float = 0.0,
        teacher: Any = None,
        temperature: float = 1.0,
        alpha: float = 1.0,
        classes: Any = None,
    ) -> None:
        self.learning_rate = learning_rate
        self.max_iter = max_iter
        self.max_leaf_nodes = max_leaf_nodes
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.l2_regularization = l2_regularization
        self.max_bins = max_bins
        self.random_state = random_state
        self.min_weight = min_weight
        self.teacher = teacher
        self.temperature = temperature
        self.alpha = alpha
        self.classes = classes

    def fit(
        self, X: Any, y: Any = None, soft_targets: Any = None, X_unlabeled: Any = None, sample_weight: Any = None
    ) -> SoftTargetGradientBoosting:
        X, P, w = self._targets(X, y, soft_targets, X_unlabeled, sample_weight)
        Xe, ye, we = expand_soft_targets(X, P, w, self.min_weight)
        k = P.shape[1]
        if len(np.unique(ye)) < k:  # a class nobody has weight on: give it a token row so the model has K outputs
            missing = np.setdiff1d(np.arange(k), ye)
            Xe = np.vstack([Xe, np.repeat(X[:1], len(missing), axis=0)])
            ye = np.concatenate([ye, missing])
            we = np.concatenate([we, np.full(len(missing), 1e-12)])
        self.booster_ = HistGradientBoostingClassifier(
            loss="log_loss",
            learning_rate=self.learning_rate,
            max_iter=self.max_iter,
            max_leaf_nodes=self.max_leaf_nodes,
            max_depth=self.max_depth,
            min_samples_leaf=self.min_samples_leaf,
            l2_regularization=self.l2_regularization,
            max_bins=self.max_bins,
            early_stopping=False,
            random_state=self.random_state,
        ).fit(Xe, ye, sample_weight=we)
        self.n_iter_ = self.booster_.n_iter_
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        X = validate_data(self, X, dtype=np.float64, reset=False)
        return self.booster_.predict_proba(X)  # columns are the expanded labels 0..K-1, i.e. classes_ in order

"""What the soft-target students share: softening, the soft cross-entropy, the base class that turns a teacher's
probabilities into training targets, and the per-class expansion of samples (see
:mod:`distill.classical.soft_targets`)."""

from __future__ import annotations

from numbers import Real
from typing import Any

import numpy as np
from scipy.special import softmax
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data


def soften(p: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log p / T)``: the teacher's probabilities at temperature ``T`` (``T = 1`` returns ``p``)."""
    p = np.asarray(p, dtype=np.float64)
    if temperature == 1.0:
        return p / p.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore"):
        return softmax(np.log(p) / temperature, axis=1)


def soft_cross_entropy(p: np.ndarray, q: np.ndarray, sample_weight: np.ndarray | None = None) -> float:
    """Mean ``−Σ_k p_k log q_k`` over the rows (weighted by ``sample_weight``)."""
    ce = -(p * np.log(np.clip(q, 1e-15, 1.0))).sum(axis=1)
    return float(np.average(ce, weights=sample_weight))


class _SoftTargetBase(ClassifierMixin, BaseEstimator):
    """Target assembly shared by the soft-target students (labels, soft targets, teacher, transfer set)."""

    def _teacher_proba(self, X: np.ndarray) -> np.ndarray:
        t = self.teacher
        if hasattr(t, "predict_proba"):
            return np.asarray(t.predict_proba(X), dtype=np.float64)
        if callable(t):
            return np.asarray(t(X), dtype=np.float64)
        raise TypeError(f"teacher must have predict_proba or be callable, got {type(t).__name__}")

    def _targets(
        self,
        X: Any,
        y: Any,
        soft_targets: Any,
        X_unlabeled: Any,
        sample_weight: Any,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Validated ``(X, P, w)``: features, target probabilities ``(N, K)`` and sample weights; sets ``classes_``."""
        if not isinstance(self.alpha, Real) or not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {self.alpha!r}")
        if not isinstance(self.temperature, Real) or self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature!r}")
        has_soft = soft_targets is not None or self.teacher is not None
        if y is None and not has_soft:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None (give labels y, "
                "soft_targets, or a teacher)"
            )
        if y is not None:
            X, y = validate_data(self, X, y, dtype=np.float64)
            check_classification_targets(y)
        else:
            X = validate_data(self, X, dtype=np.float64)
        P = None
        if soft_targets is not None:
            P = np.asarray(soft_targets, dtype=np.float64)
        elif self.teacher is not None:
            P = self._teacher_proba(X)
        if P is not None:
            if P.ndim != 2 or len(P) != len(X):
                raise ValueError(f"soft targets must be (n_samples, n_classes) = ({len(X)}, K), got {P.shape}")
            if not np.isfinite(P).all() or (P < 0).any() or not np.allclose(P.sum(axis=1), 1.0, atol=1e-4):
                raise ValueError("soft targets must be finite, non-negative, and sum to 1 in every row")
            P = soften(P, self.temperature)
            self.classes_ = self._soft_classes(P.shape[1], y)
        else:
            self.classes_ = np.unique(y)
            if len(self.classes_) < 2:
                raise ValueError(f"needs samples of at least 2 classes; got 1 class: {self.classes_[0]!r}")
        K = len(self.classes_)
        if y is not None:
            pos = np.searchsorted(self.classes_, y)
            if (pos >= K).any() or (self.classes_[np.minimum(pos, K - 1)] != y).any():
                raise ValueError(
                    f"labels {sorted(set(np.asarray(y).tolist()) - set(self.classes_.tolist()))} are "
                    f"not among the teacher's classes {self.classes_.tolist()}"
                )
            onehot = np.eye(K)[pos]
            P = onehot if P is None else self.alpha * P + (1.0 - self.alpha) * onehot
        w = np.ones(len(X)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64).reshape(-1)
        if len(w) != len(X) or (w < 0).any() or not np.isfinite(w).all():
            raise ValueError("sample_weight must be (n_samples,), finite and non-negative")
        if w.sum() <= 0:
            raise ValueError("sample weights are all zero: nothing to fit")
        if X_unlabeled is not None:
            if self.teacher is None:
                raise ValueError("X_unlabeled needs a teacher to label it")
            Xu = validate_data(self, X_unlabeled, dtype=np.float64, reset=False)
            Pu = soften(self._teacher_proba(Xu), self.temperature)
            if Pu.shape != (len(Xu), K):
                raise ValueError(
                    f"the teacher gave {Pu.shape} probabilities for X_unlabeled; expected ({len(Xu)}, {K})"
                )
            X, P, w = np.vstack([X, Xu]), np.vstack([P, Pu]), np.concatenate([w, np.ones(len(Xu))])
        return X, P, w

    def _soft_classes(self, k: int, y: Any) -> np.ndarray:
        for cand in (self.classes, getattr(self.teacher, "classes_", None)):
            if cand is not None:
                if len(cand) != k:
                    raise ValueError(f"{len(cand)} class names for {k} soft-target columns")
                return np.asarray(cand)
        if y is not None and len(np.unique(y)) == k:
            return np.unique(y)
        return np.arange(k)

    def predict(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def predict_log_proba(self, X: Any) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))


def expand_soft_targets(
    X: np.ndarray, P: np.ndarray, w: np.ndarray, min_weight: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each sample once per class k with label k and weight ``w_i · p_ik``; copies with ``p_ik <= min_weight``
    (and all zero weights) are dropped. Returns ``(X_expanded, labels 0..K-1, weights)``."""
    rows, cols = np.nonzero((P > min_weight) & (w[:, None] > 0))
    return X[rows], cols, w[rows] * P[rows, cols]

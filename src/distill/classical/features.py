"""``TeacherFeatures``: a scikit-learn transformer that maps inputs to a trained network's features.

>>> from sklearn.pipeline import make_pipeline
>>> from sklearn.linear_model import LogisticRegression
>>> clf = make_pipeline(TeacherFeatures("runs/demo/teacher"), LogisticRegression(max_iter=1000))
>>> clf.fit(x_train, y_train).score(x_test, y_test)

Inputs are numpy arrays of images ``(N, C, H, W)`` (uint8 on 0..255, or float) or flat rows ``(N, D)`` reshaped to
``input_shape``. They are scaled and normalised as the model was trained (``model.json``'s ``preprocessing``),
run through the model in batches on ``device``, and the output of one layer (the penultimate by default) is taken;
spatial maps are global-average-pooled to ``(N, C)``. Outputs are cached in memory by a hash of the input array, so
a grid search that transforms the same training array again gets it back without a forward pass.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_array, check_is_fitted
from torch import nn

from distill.artifacts import load_model
from distill.errors import ConfigError
from distill.features import FeatureTap
from distill.models.adapters import tap_names


class TeacherFeatures(TransformerMixin, BaseEstimator):
    """The teacher's features of a layer, as a stateless scikit-learn transformer.

    Args:
        model: an ``nn.Module``, or a model directory (``model.json`` + ``model.safetensors``) loaded in ``fit``.
            A path is cheaper in cross-validation: ``clone`` deep-copies a module but not a string.
        layer: module name to read (default: the model's ``penultimate``); ``"logits"`` takes the output.
        input_shape: ``(C, H, W)`` for flat inputs (default: the model directory's ``preprocessing.input_shape``).
        scale: multiplier to the [0, 1] scale; ``"auto"``: ``1/255`` for uint8 inputs, ``1`` for floats.
        mean, std: per-channel normalisation on the [0, 1] scale (default: from ``model.json``; none for a module).
        batch_size: inputs per forward pass.
        device: ``"cpu"``, ``"cuda"``, ``"auto"`` ...
        cache: keep outputs in memory, keyed by a hash of the input array.
        public_key: an ed25519 public key (PEM); a model directory must then carry a valid signature by it
            (:mod:`distill.trust`), checked in ``fit`` before anything of the directory is read.
    """

    def __init__(
        self,
        model: nn.Module | str | Path,
        layer: str | None = None,
        input_shape: Sequence[int] | None = None,
        scale: float | str = "auto",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        batch_size: int = 512,
        device: str = "cpu",
        cache: bool = True,
        public_key: str | Path | None = None,
    ) -> None:
        self.model = model
        self.layer = layer
        self.input_shape = input_shape
        self.scale = scale
        self.mean = mean
        self.std = std
        self.batch_size = batch_size
        self.device = device
        self.cache = cache
        self.public_key = public_key

    def fit(self, X: Any = None, y: Any = None) -> TeacherFeatures:
        """Load the model and settle the preprocessing; the features depend on nothing learned from ``X``."""
        spec: dict[str, Any] = {}
        if isinstance(self.model, nn.Module):
            if self.public_key is not None:
                raise ConfigError(
                    "public_key checks the signature of a model directory, but model is an nn.Module; "
                    "pass the model's directory instead (or drop public_key)"
                )
            model = self.model
        elif isinstance(self.model, (str, Path)):
            model, spec = load_model(Path(self.model), public_key=self.public_key)  # signature checked first
        else:
            raise TypeError(f"model must be an nn.Module or a model directory, got {type(self.model).__name__}")
        pre = spec.get("preprocessing", {})
        self.device_ = _device(self.device)
        self.model_ = model.to(self.device_)  # put in eval mode only while transforming: the caller's flag is kept
        self.input_shape_ = tuple(self.input_shape or pre.get("input_shape") or ()) or None
        self.mean_ = np.asarray(self.mean if self.mean is not None else pre.get("mean", []), dtype=np.float32)
        self.std_ = np.asarray(self.std if self.std is not None else pre.get("std", []), dtype=np.float32)
        if (len(self.mean_) == 0) != (len(self.std_) == 0):
            raise ConfigError("give both mean and std, or neither")
        self.layer_ = self.layer or _penultimate(model)
        if self.layer_ != "logits":
            FeatureTap(model, [self.layer_]).close()  # validates the name, listing the real ones
        self.cache_: dict[str, np.ndarray] = {}
        if X is not None:
            X = _check(X)
            self.n_features_in_ = int(np.prod(X.shape[1:]))
        return self

    def transform(self, X: Any) -> np.ndarray:
        """``(N, ...)`` inputs -> ``(N, F)`` float32 features."""
        check_is_fitted(self, "model_")
        X = _check(X)
        n = int(np.prod(X.shape[1:]))
        if hasattr(self, "n_features_in_") and n != self.n_features_in_:
            raise ValueError(
                f"X has {n} features, but TeacherFeatures is expecting {self.n_features_in_} features as input"
            )
        key = _hash(X) if self.cache else None
        if key is not None and key in self.cache_:
            return self.cache_[key].copy()
        out = self._features(X)
        if key is not None:
            self.cache_[key] = out
        return out.copy() if key is not None else out

    def _prepare(self, xb: np.ndarray) -> torch.Tensor:
        scale = (1 / 255 if xb.dtype == np.uint8 else 1.0) if self.scale == "auto" else float(self.scale)
        x = torch.tensor(xb).to(self.device_).float() * scale  # a copy: the input may be read-only
        if x.dim() == 2:
            if self.input_shape_ is None:
                raise ConfigError("flat (N, D) inputs need input_shape=(C, H, W)")
            x = x.reshape(len(x), *self.input_shape_)
        if len(self.mean_):
            view = (1, -1, *([1] * (x.dim() - 2)))
            mean = torch.from_numpy(self.mean_).to(x.device).view(view)
            std = torch.from_numpy(self.std_).to(x.device).view(view)
            x = (x - mean) / std
        return x

    @torch.no_grad()
    def _features(self, X: np.ndarray) -> np.ndarray:
        if len(X) == 0:
            raise ValueError("TeacherFeatures got an empty array")
        chunks = []
        tap = FeatureTap(self.model_, [self.layer_]) if self.layer_ != "logits" else None
        was_training = self.model_.training
        self.model_.eval()
        try:
            for start in range(0, len(X), self.batch_size):
                logits = self.model_(self._prepare(X[start : start + self.batch_size]))
                f = tap[self.layer_] if tap is not None else logits
                if f.dim() == 4:
                    f = f.mean(dim=(2, 3))  # (B, C, H, W) -> (B, C)
                elif f.dim() == 3:
                    f = f.mean(dim=1)  # (B, T, D) -> (B, D)
                chunks.append(f.reshape(len(f), -1).float().cpu().numpy())
        finally:
            self.model_.train(was_training)
            if tap is not None:
                tap.close()
        return np.concatenate(chunks)

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        check_is_fitted(self, "model_")
        n = self._n_out()
        return np.asarray([f"{self.layer_}{i}" for i in range(n)], dtype=object)

    def _n_out(self) -> int:
        if not hasattr(self, "n_out_"):
            if self.input_shape_ is None:
                raise ConfigError("input_shape is unknown; transform some data first")
            self.n_out_ = self._features(np.zeros((1, *self.input_shape_), dtype=np.float32)).shape[1]
        return self.n_out_

    def clear_cache(self) -> None:
        self.cache_.clear()

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.requires_fit = True
        tags.input_tags.three_d_array = True
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags


def _check(X: Any) -> np.ndarray:
    """A numeric, finite, non-empty ``(N, ...)`` array with at least 2 dimensions (images may be 4-d)."""
    return check_array(X, dtype="numeric", allow_nd=True, ensure_min_samples=1, ensure_all_finite=True)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _penultimate(model: nn.Module) -> str:
    name = tap_names(model).penultimate
    if name is None:
        raise ConfigError(
            f"{type(model).__name__} names no penultimate layer; pass layer=<module name> (or layer='logits')"
        )
    return name


def _hash(X: np.ndarray) -> str:
    h = hashlib.sha256(f"{X.dtype}{X.shape}".encode())
    h.update(np.ascontiguousarray(X).view(np.uint8).reshape(-1).data)
    return h.hexdigest()

"""A few test inputs of a run, saved beside its report so that ``report.html`` can show what the models saw.

:func:`save_examples` (called by :func:`distill.api.run` where it saves the test-set logits) writes
``examples.safetensors`` — the uint8 inputs ``(n, C, H, W)`` of the first :data:`PER_CLASS` test samples of each
class (at most :data:`MAX_CLASSES` classes), their labels and their positions in the test split — and
``examples.json``, what they are: ``kind`` (``"image"``, or ``"log-mel"`` for spectrograms, with the axis facts a
plot needs: frame hop, mel bands, sample rate, fmin/fmax and the uint8 -> dBFS mapping) and the class names. A run
directory without them (an older run, tabular or text data) renders as before.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from distill.artifacts import atomic_write, write_json

EXAMPLES = "examples.safetensors"
EXAMPLES_INFO = "examples.json"
FORMAT = "distill-examples/1"
PER_CLASS = 2
MAX_CLASSES = 16


@dataclass
class Examples:
    inputs: np.ndarray  # uint8 (n, C, H, W), as the dataset holds them (before normalisation)
    labels: np.ndarray  # int64 (n,)
    index: np.ndarray  # int64 (n,): each input's position in the test split
    info: dict[str, Any]  # examples.json

    @property
    def kind(self) -> str:
        return str(self.info.get("kind", "image"))

    def class_name(self, label: int) -> str:
        classes = self.info.get("classes") or []
        return str(classes[label]) if 0 <= label < len(classes) else str(label)


def select_examples(
    labels: np.ndarray | torch.Tensor, per_class: int = PER_CLASS, max_classes: int = MAX_CLASSES
) -> np.ndarray:
    """Positions of the first ``per_class`` samples of each of the first ``max_classes`` classes present (in class
    order), grouped by class, each group in test order."""
    labels = np.asarray(labels)
    out = []
    for k in np.unique(labels)[:max_classes]:
        out.extend(np.flatnonzero(labels == k)[:per_class].tolist())
    return np.asarray(out, dtype=np.int64)


def describe(meta: dict[str, Any] | None, classes: list[str], shape: tuple[int, ...]) -> dict[str, Any]:
    """``examples.json``: the kind of input (``meta["input_kind"]``, default ``"image"``), its axes, the classes."""
    meta = meta or {}
    info: dict[str, Any] = {
        "format": FORMAT,
        "kind": str(meta.get("input_kind", "image")),
        "shape": [int(s) for s in shape],
        "per_class": PER_CLASS,
        "max_classes": MAX_CLASSES,
        "classes": [str(c) for c in classes],
    }
    if meta.get("input_axes"):
        info["axes"] = {k: v for k, v in dict(meta["input_axes"]).items() if isinstance(v, (int, float, str))}
    return info


def save_examples(
    run_dir: Path, x_test: torch.Tensor, y_test: torch.Tensor, classes: list[str], meta: dict[str, Any] | None
) -> Path | None:
    """Write ``examples.safetensors`` and ``examples.json`` into ``run_dir``; None (nothing written) for inputs that
    are not uint8 images ``(N, C, H, W)`` (tabular features) or an empty test split."""
    if not isinstance(x_test, torch.Tensor) or x_test.dtype != torch.uint8 or x_test.dim() != 4 or len(x_test) == 0:
        return None
    idx = torch.from_numpy(select_examples(y_test.cpu().numpy()))
    state = {
        "inputs": x_test.cpu()[idx].contiguous(),
        "labels": y_test.cpu()[idx].long().contiguous(),
        "index": idx.contiguous(),
    }
    path = Path(run_dir) / EXAMPLES
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata={"format": FORMAT}))
    write_json(Path(run_dir) / EXAMPLES_INFO, describe(meta, classes, tuple(x_test.shape[1:])))
    return path


def load_examples(run_dir: Path) -> Examples | None:
    """A run's saved examples; None when it has none or they cannot be read (the report then leaves them out)."""
    path, info_path = Path(run_dir) / EXAMPLES, Path(run_dir) / EXAMPLES_INFO
    if not path.is_file():
        return None
    try:
        t = load_file(str(path))
        info = json.loads(info_path.read_text()) if info_path.is_file() else {}
        ex = Examples(t["inputs"].numpy(), t["labels"].numpy(), t["index"].numpy(), info)
    except (SafetensorError, OSError, ValueError, KeyError):
        return None
    if ex.inputs.dtype != np.uint8 or ex.inputs.ndim != 4 or len(ex.labels) != len(ex.inputs):
        return None
    return ex


def uint8_to_db(q: np.ndarray, top_db: float = 80.0) -> np.ndarray:
    """dBFS of quantised log-mel values: ``dB = q · top_db / 255 − top_db`` (q = 255 is 0 dBFS, q = 0 is −top_db)."""
    return np.asarray(q, dtype=np.float64) * (top_db / 255.0) - top_db

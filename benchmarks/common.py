"""What every benchmark table records about where it ran, and the shipped demo teacher's test accuracy."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from distill.artifacts import load_model, versions
from distill.data.base import load_dataset
from distill.data.module import DataModule
from distill.report.metrics import classification_metrics, predict


def machine_info() -> dict[str, Any]:
    """``machine`` (CPU, cores, torch threads), ``versions`` and ``date`` for a results file."""
    v = versions()
    return {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "versions": f"torch {v['torch']}, distill {v['distill']}, python {v['python']}",
        },
        "versions": v,
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    }


def teacher_accuracy(model_dir: Path, dataset: str = "fashion_mnist") -> float:
    """Test accuracy of the model directory ``model_dir`` on ``dataset``'s whole test split."""
    model, _ = load_model(model_dir)
    dm = DataModule(load_dataset(dataset), val_size=0, augment=False)
    logits, labels = predict(model.eval(), dm.eval_batches("test"), "cpu")
    return float(classification_metrics(logits, labels)["acc"])

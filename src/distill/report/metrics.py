"""Classification metrics computed from logits: top-k accuracy, NLL, agreement with the teacher, calibration."""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@torch.no_grad()
def predict(model: nn.Module, batches: Iterable, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """Logits ``(N, K)`` (float32, on the CPU) and labels ``(N,)`` of ``model`` over ``batches``."""
    was_training = model.training
    model.eval()
    logits, labels = [], []
    for b in batches:
        logits.append(model(b.x.to(device)).float().cpu())
        labels.append(b.y.cpu())
    model.train(was_training)
    return torch.cat(logits), torch.cat(labels)


def expected_calibration_error(logits: Tensor, labels: Tensor, bins: int = 15) -> float:
    """ECE: the confidence–accuracy gap averaged over equal-width confidence bins, weighted by bin size."""
    conf, pred = F.softmax(logits.float(), dim=1).max(dim=1)
    correct = (pred == labels).float()
    edges = torch.linspace(0, 1, bins + 1)
    ece = torch.zeros(())
    for lo, hi in itertools.pairwise(edges):
        inside = (conf > lo) & (conf <= hi)
        if inside.any():
            ece += inside.float().mean() * (conf[inside].mean() - correct[inside].mean()).abs()
    return float(ece)


def classification_metrics(logits: Tensor, labels: Tensor, teacher_logits: Tensor | None = None) -> dict[str, float]:
    """``acc`` (top-1), ``top5``, ``nll``, ``ece`` and, with a teacher, ``agreement`` (same argmax)."""
    k = min(5, logits.shape[1])
    topk = logits.topk(k, dim=1).indices
    out = {
        "acc": float((topk[:, 0] == labels).float().mean()),
        "top5": float((topk == labels[:, None]).any(dim=1).float().mean()),
        "nll": float(F.cross_entropy(logits.float(), labels)),
        "ece": expected_calibration_error(logits, labels),
    }
    if teacher_logits is not None:
        out["agreement"] = float((logits.argmax(1) == teacher_logits.argmax(1)).float().mean())
    return out

"""Born-again networks (Furlanello, Lipton, Tschannen, Itti & Anandkumar, ICML 2018, "Born Again Neural
Networks", arXiv:1805.04770): a student with the teacher's own architecture is distilled from it, then the next
generation from that student, and so on; the generations' average prediction is often better still."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.artifacts import save_model, write_json
from distill.data.module import DataModule
from distill.distillers.base import build_distiller
from distill.engine.trainer import OptimSettings, Trainer
from distill.errors import ConfigError
from distill.report.metrics import classification_metrics, predict


def born_again(
    make_student: Callable[[], nn.Module],
    teacher: nn.Module,
    data_module: DataModule,
    optim_settings: OptimSettings,
    generations: int = 3,
    method: str = "kd",
    params: dict[str, Any] | None = None,
    device: str | torch.device = "cpu",
    out_dir: str | Path | None = None,
    ensemble: bool = True,
    spec: dict[str, Any] | None = None,
) -> list[tuple[nn.Module, dict[str, Any]]]:
    """Train ``generations`` students in sequence; generation 1 learns from ``teacher``, generation k from k − 1.

    Each generation is a fresh ``make_student()`` (the paper uses the teacher's architecture) trained with
    :class:`~distill.engine.trainer.Trainer` and method ``method`` (any registered one; the paper's objective is
    pure teacher matching, e.g. ``method="kd", params={"alpha": 1.0, "temperature": 1.0}``).

    Args:
        out_dir: when given, generation k's checkpoints and ``metrics.json`` go to ``out_dir/gen{k}``, and with
            ``spec`` (a :func:`~distill.artifacts.save_model` spec naming the architecture) a model directory too.
        ensemble: add ``metrics["ensemble"]`` from generation 2 on: the test metrics of the average of the
            softmax outputs of generations 1..k.

    Returns:
        ``[(model, metrics), ...]`` per generation; ``metrics`` holds ``test`` (test-split metrics, with the
        agreement with that generation's teacher), ``best_val_acc``, ``best_epoch`` and ``history``.
    """
    if generations < 1:
        raise ConfigError(f"generations must be >= 1, got {generations}")
    out = Path(out_dir) if out_dir is not None else None
    results: list[tuple[nn.Module, dict[str, Any]]] = []
    probs: list[Tensor] = []  # (N, K) test probabilities of each generation, for the ensemble
    labels: Tensor | None = None
    previous = teacher
    try:
        for k in range(1, generations + 1):
            gdir = out / f"gen{k}" if out is not None else None
            student = make_student()
            distiller = build_distiller(
                method,
                student,
                previous,
                data_module.input_shape,
                len(data_module.x_train),
                data_module.num_classes,
                **(params or {}),
            )
            trainer = Trainer(distiller, data_module, optim_settings, device=device, out_dir=gdir)
            state = trainer.fit()
            metrics: dict[str, Any] = {
                "generation": k,
                "test": trainer.evaluate("test"),
                "best_val_acc": state.best_acc,
                "best_epoch": state.best_epoch,
                "history": state.history,
            }
            distiller.close()
            model = distiller.export_student()
            if ensemble:
                logits, labels = predict(model, data_module.eval_batches("test", device), device)
                probs.append(F.softmax(logits, dim=1))
                if k >= 2:
                    metrics["ensemble"] = classification_metrics(torch.stack(probs).mean(0).log(), labels)
            if gdir is not None:
                write_json(gdir / "metrics.json", metrics)
                if spec is not None:
                    save_model(gdir, model, {**spec, "method": method, "generation": k})
            results.append((model, metrics))
            previous = model
    finally:
        for model, _ in results:  # the Teacher wrapper froze each generation that taught the next
            model.requires_grad_(True)
    return results

"""The text pipeline behind ``distill text RECIPE`` and ``benchmarks/text.py``: data → teacher (loaded, or an
encoder fine-tuned with a new head by the Trainer, cached as safetensors) → students per method → report rows.

A recipe is a plain mapping (see ``configs/text.yaml``); only this module reads it.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from distill.engine.trainer import OptimSettings, Trainer
from distill.errors import ConfigError
from distill.report.bench import count_params, torch_threads
from distill.report.metrics import classification_metrics, predict
from distill.text.data import TextData, TextDataModule, load_text_files, rotten_tomatoes
from distill.text.distillers import build_text_distiller
from distill.text.models import (
    BiLSTMClassifier,
    HFClassifier,
    TextCNN,
    init_from_teacher_embeddings,
    layer_student,
    load_hf_classifier,
    load_tokenizer,
    minilm_path,
)


@dataclass
class TextRecipe:
    """What ``configs/text.yaml`` holds (strict keys)."""

    seed: int = 0
    data: dict[str, Any] = field(default_factory=lambda: {"name": "rotten_tomatoes"})
    max_length: int = 64
    batch_size: int = 32
    teacher: dict[str, Any] = field(default_factory=lambda: {"model": "minilm"})
    teacher_train: dict[str, Any] = field(
        default_factory=lambda: {"epochs": 1, "optimizer": "adamw", "lr": 5e-5, "weight_decay": 0.01}
    )
    students: list[dict[str, Any]] = field(default_factory=list)
    train: dict[str, Any] = field(default_factory=lambda: {"epochs": 2, "optimizer": "adamw", "lr": 1e-4})
    cache_dir: str = "benchmarks/cache"
    threads: int | None = None

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TextRecipe:
        unknown = sorted(set(raw) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"unknown recipe key(s) {unknown}; expected {sorted(cls.__dataclass_fields__)}")
        return cls(**raw)


def load_data(spec: dict[str, Any], seed: int) -> TextData:
    spec = dict(spec)
    name = spec.pop("name", "rotten_tomatoes")
    if name == "rotten_tomatoes":
        return rotten_tomatoes(spec.pop("path", None), seed=seed, **spec)
    if name == "files":
        return load_text_files(seed=seed, **spec)
    raise ConfigError(f"unknown text data {name!r}; expected 'rotten_tomatoes' or 'files' (train=..., test=...)")


def teacher_dir(spec: dict[str, Any]) -> Path:
    model = spec.get("model", "minilm")
    return minilm_path() if model == "minilm" else Path(model)


def get_teacher(
    recipe: TextRecipe, dm: TextDataModule, data: TextData, log: Any = print
) -> tuple[HFClassifier, dict[str, Any]]:
    """The teacher: a fine-tuned classifier from the cache, or fine-tuned now (``teacher.finetune: true``)."""
    path = teacher_dir(recipe.teacher)
    teacher = load_hf_classifier(path, num_labels=data.num_classes)
    if not recipe.teacher.get("finetune", True):
        return teacher, {"source": str(path), "train_seconds": 0.0}
    key = hashlib.sha256(
        json.dumps(
            [str(path), data.fingerprint(), recipe.max_length, recipe.batch_size, recipe.teacher_train, recipe.seed]
        ).encode()
    ).hexdigest()[:12]
    cached = Path(recipe.cache_dir) / "text_teacher" / f"model-{key}.safetensors"
    if cached.is_file():
        teacher.load_state_dict(load_file(str(cached)))
        log(f"teacher: loaded fine-tuned weights from {cached}")
        return teacher, {"source": str(cached), "train_seconds": 0.0, "cached": True}
    torch.manual_seed(recipe.seed)
    t0 = time.perf_counter()
    state = fit(teacher, None, "text_ce", {}, dm, recipe.teacher_train)
    cached.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in teacher.state_dict().items()}, str(cached))
    info = {"source": str(cached), "train_seconds": time.perf_counter() - t0, "best_val_acc": state.best_acc}
    log(f"teacher: fine-tuned in {info['train_seconds']:.0f} s, saved to {cached}")
    return teacher, info


def fit(
    student: nn.Module,
    teacher: nn.Module | None,
    method: str,
    params: dict[str, Any],
    dm: TextDataModule,
    optim: dict[str, Any],
    teacher_logits: torch.Tensor | None = None,
) -> Any:
    d = build_text_distiller(method, student, teacher, **params)
    if teacher_logits is not None and not getattr(d, "teacher_features", False):
        d.set_teacher_logits(teacher_logits)
    state = Trainer(d, dm, OptimSettings(**optim)).fit()
    d.close()
    return state


def build_student(spec: dict[str, Any], teacher: HFClassifier, num_classes: int) -> nn.Module:
    """``{model: layers, layers: [0, 3]}`` · ``{model: cnn|bilstm, embed_dim: 128, init: pca}``."""
    spec = dict(spec)
    kind = spec.pop("model")
    if kind == "layers":
        return layer_student(teacher, spec["layers"])
    cls = {"cnn": TextCNN, "bilstm": BiLSTMClassifier}.get(kind)
    if cls is None:
        raise ConfigError(f"unknown text student {kind!r}; expected 'layers', 'cnn' or 'bilstm'")
    init = spec.pop("init", None)
    vocab = teacher.hf.get_input_embeddings().num_embeddings
    model = cls(vocab, num_classes, pad_id=teacher.pad_id, **spec)
    return init_from_teacher_embeddings(model, teacher) if init == "pca" else model


@torch.inference_mode()
def text_latency_ms(
    model: nn.Module, seq_len: int, batch_size: int, vocab: int, repeats: int = 20, warmup: int = 3, threads: int = 0
) -> float:
    """Median CPU milliseconds of one forward of a ``batch_size × seq_len`` batch of token ids."""
    model = model.eval().cpu()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, vocab, (batch_size, seq_len), generator=g)
    mask = torch.ones_like(ids)
    with torch_threads(threads or None):
        for _ in range(warmup):
            model(ids, mask)
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            model(ids, mask)
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def evaluate(model: nn.Module, dm: TextDataModule, split: str = "test", teacher_logits: Any = None) -> dict:
    logits, y = predict(model, dm.eval_batches(split))
    return classification_metrics(logits, y, teacher_logits)


def run(recipe: TextRecipe, out: Path | None = None, log: Any = print) -> dict[str, Any]:
    """Teacher, then every student of the recipe; returns (and writes to ``out/report.json``) the rows."""
    torch.manual_seed(recipe.seed)
    data = load_data(recipe.data, recipe.seed)
    tok = load_tokenizer(teacher_dir(recipe.teacher))
    dm = TextDataModule(
        data, tok, recipe.batch_size, recipe.max_length, seed=recipe.seed, cache_dir=Path(recipe.cache_dir) / "tokens"
    )
    teacher, t_info = get_teacher(recipe, dm, data, log)
    t_test, y_test = predict(teacher, dm.eval_batches("test"))
    seq = round(dm.mean_length("test"))
    vocab = teacher.hf.get_input_embeddings().num_embeddings
    bench = {bs: text_latency_ms(teacher, seq, bs, vocab, threads=recipe.threads or 0) for bs in (1, 32)}
    rows = [
        {
            "name": "teacher",
            **classification_metrics(t_test, y_test),
            "params": count_params(teacher),
            **{f"latency_ms_b{k}": v for k, v in bench.items()},
            **t_info,
        }
    ]
    train_logits = predict(teacher, dm.eval_batches("train"))[0]
    for s in recipe.students:
        torch.manual_seed(recipe.seed + 1)
        student = build_student(s["student"], teacher, data.num_classes)
        t0 = time.perf_counter()
        fit(student, teacher, s.get("method", "text_kd"), s.get("params", {}), dm, recipe.train, train_logits)
        row = {"name": s.get("name", s.get("method", "text_kd")), **evaluate(student, dm, "test", t_test)}
        row["params"] = count_params(student)
        for bs in (1, 32):
            row[f"latency_ms_b{bs}"] = text_latency_ms(student, seq, bs, vocab, threads=recipe.threads or 0)
            row[f"speedup_b{bs}"] = bench[bs] / row[f"latency_ms_b{bs}"]
        row["accuracy_ratio"] = row["acc"] / rows[0]["acc"]
        row["train_seconds"] = time.perf_counter() - t0
        log(f"{row['name']}: acc {row['acc']:.4f} ({row['accuracy_ratio']:.1%}), ×{row['speedup_b1']:.1f} at b1")
        rows.append(row)
    report = {"rows": rows, "sequence_length": seq, "date": time.strftime("%Y-%m-%d %H:%M:%S")}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    return report

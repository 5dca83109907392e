"""The text pipeline behind ``distill text RECIPE`` and ``benchmarks/text.py``: data → teacher (loaded, or an
encoder fine-tuned with a new head by the Trainer, cached as safetensors) → students per method → report rows.

A recipe is a :class:`~distill.text.recipe.TextRecipe` (see ``configs/text.yaml``): its optimiser sections are the
image recipes' :class:`~distill.settings.OptimSettings`; its other sections are mappings only the text package reads.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from distill import config as C
from distill.artifacts import atomic_write, load_model, versions, write_manifest
from distill.distillers.base import method_temperature
from distill.engine.cache import hash_tensors, model_hash
from distill.engine.callbacks import EarlyStopping, KeepBest, MetricsLogger
from distill.engine.trainer import OptimSettings, Trainer
from distill.errors import ConfigError
from distill.report.bench import count_params
from distill.report.html import save_predictions, write_html
from distill.report.markdown import write_reports
from distill.report.metrics import classification_metrics, predict
from distill.text.data import TextData, TextDataModule, load_text_files, rotten_tomatoes
from distill.text.distillers import build_text_distiller
from distill.text.latency import paired_latency, text_latency_ms, timed
from distill.text.models import (
    BiLSTMClassifier,
    HFClassifier,
    TextCNN,
    init_from_teacher_embeddings,
    layer_student,
    load_hf_classifier,
    load_tokenizer,
    outputs_in_place,
)
from distill.text.recipe import (
    TEACHER_KEYS,
    TextRecipe,
    check_students,
    optim_key,
    student_optim,
    teacher_dir,
    text_inputs,
    verify_teacher,
)
from distill.text.saving import save_text_model
from distill.workflow import rundir

# the recipe lives in distill.text.recipe, the latency timers in distill.text.latency; importable from here as before
__all__ = [
    "TEACHER_KEYS",
    "TextRecipe",
    "build_student",
    "check_students",
    "evaluate",
    "fit",
    "get_teacher",
    "load_data",
    "paired_latency",
    "predict_split",
    "run",
    "teacher_dir",
    "teacher_logits",
    "text_inputs",
    "text_latency_ms",
    "text_report",
    "timed",
    "verify_teacher",
]


def load_data(spec: dict[str, Any], seed: int) -> TextData:
    spec = dict(spec)
    name = spec.pop("name", "rotten_tomatoes")
    if name == "rotten_tomatoes":
        return rotten_tomatoes(spec.pop("path", None), seed=seed, **spec)
    if name == "files":
        return load_text_files(seed=seed, **spec)
    raise ConfigError(f"unknown text data {name!r}; expected 'rotten_tomatoes' or 'files' (train=..., test=...)")


def get_teacher(
    recipe: TextRecipe, dm: TextDataModule, data: TextData, log: Any = print, logger: Any = None
) -> tuple[HFClassifier, dict[str, Any]]:
    """The teacher: a saved distill teacher (``teacher.checkpoint``, sha256 and, with ``public_key``, signature
    checked), a fine-tuned classifier from the cache, or fine-tuned now (``teacher.finetune: true``)."""
    if recipe.teacher.get("checkpoint"):
        teacher, spec = load_model(Path(recipe.teacher["checkpoint"]), public_key=recipe.teacher.get("public_key"))
        if spec.get("task") != "text" or not isinstance(teacher, HFClassifier):
            raise ConfigError(f"{recipe.teacher['checkpoint']} is not a saved transformer text teacher")
        if spec["num_classes"] != data.num_classes:
            raise ConfigError(f"the teacher has {spec['num_classes']} classes, the data {data.num_classes}")
        return teacher, {"source": str(recipe.teacher["checkpoint"]), "train_seconds": 0.0}
    path = teacher_dir(recipe.teacher)
    teacher = load_hf_classifier(path, num_labels=data.num_classes)
    if not recipe.teacher.get("finetune", True):
        return teacher, {"source": str(path), "train_seconds": 0.0}
    start = [model_hash(teacher), data.fingerprint(), recipe.max_length, recipe.batch_size]
    start.append(optim_key(recipe.teacher_train))
    patience = recipe.teacher.get("patience")
    if patience:  # early stopping on validation, the best epoch's weights kept (absent: the old keys stay valid)
        start.append({"patience": patience})
    key = hashlib.sha256(json.dumps([*start, recipe.seed]).encode()).hexdigest()[:12]
    cached = Path(recipe.cache_dir) / "text_teacher" / f"model-{key}.safetensors"
    if cached.is_file():
        teacher.load_state_dict(load_file(str(cached)))
        log(f"teacher: loaded fine-tuned weights from {cached}")
        info = {"source": str(cached), "train_seconds": 0.0, "cached": True}
        try:  # how it was fine-tuned (epochs, validation curve), when that was recorded
            recorded = json.loads(cached.with_suffix(".json").read_text())
            info.update({k: v for k, v in recorded.items() if k not in ("source", "train_seconds")})
            info["finetune_seconds"] = recorded.get("train_seconds")
        except (OSError, ValueError):
            pass
        return teacher, info
    torch.manual_seed(recipe.seed)
    t0 = time.perf_counter()
    callbacks: list[Any] = [logger] if logger else []
    if patience:
        callbacks += [EarlyStopping(patience), KeepBest()]
    state = fit(teacher, None, "text_ce", {}, dm, recipe.teacher_train, callbacks=callbacks)
    cached.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in teacher.state_dict().items()}, str(cached))
    info = {"source": str(cached), "train_seconds": time.perf_counter() - t0, "best_val_acc": state.best_acc}
    info.update(best_epoch=state.best_epoch, epochs_trained=state.epoch)
    info["val_acc_per_epoch"] = [r["val"]["acc"] for r in state.history]
    atomic_write(cached.with_suffix(".json"), lambda tmp: Path(tmp).write_text(json.dumps(info)))
    log(f"teacher: fine-tuned in {info['train_seconds']:.0f} s, saved to {cached}")
    return teacher, info


def predict_split(model: nn.Module, dm: TextDataModule, split: str, device: torch.device | str = "cpu") -> Tensor:
    """Logits ``(N, K)`` (float32, CPU) of ``model`` on every text of ``split``, in the split's order.

    Batches are formed shortest-first (little padding, so a fraction of the work of batches in data order); the
    outputs are put back in place by each batch's ``index``.
    """
    return outputs_in_place(model, model, dm.eval_batches(split, device, by_length=True), device)


def teacher_logits(
    teacher: nn.Module, dm: TextDataModule, split: str = "train", cache_dir: str | Path | None = None
) -> Tensor:
    """The teacher's logits on ``split`` (a transfer set included), computed once.

    With ``cache_dir`` they are kept as safetensors under ``text_logits/``, keyed by the teacher's weights and the
    split's token ids: other weights, texts, tokenizer or ``max_length`` give another key, so a stale file is never
    read; an unreadable or mis-sized one is recomputed.
    """
    if cache_dir is None:
        return predict_split(teacher, dm, split)
    ids = dm.ids[split]
    lengths = torch.tensor([len(s) for s in ids])
    flat = torch.tensor([i for s in ids for i in s], dtype=torch.int64)
    key = hashlib.sha256(
        (model_hash(teacher) + hash_tensors([("ids", flat), ("lengths", lengths)])).encode()
    ).hexdigest()[:16]
    path = Path(cache_dir) / "text_logits" / f"logits-{key}.safetensors"
    if path.is_file():
        try:
            logits = load_file(str(path))["logits"]
            if logits.shape[0] == len(ids):
                return logits
        except Exception:  # a truncated or foreign file: compute again
            pass
    logits = predict_split(teacher, dm, split)
    atomic_write(path, lambda tmp: save_file({"logits": logits.contiguous()}, tmp))
    return logits


def fit(
    student: nn.Module,
    teacher: nn.Module | None,
    method: str,
    params: dict[str, Any],
    dm: TextDataModule,
    optim: OptimSettings | dict[str, Any],
    teacher_logits: torch.Tensor | None = None,
    callbacks: Sequence[Any] = (),
) -> Any:
    d = build_text_distiller(method, student, teacher, **params)
    if teacher_logits is not None and not getattr(d, "teacher_features", False):
        d.set_teacher_logits(teacher_logits)
    optim = optim if isinstance(optim, OptimSettings) else C.from_dict(OptimSettings, optim, "train")
    state = Trainer(d, dm, optim, callbacks=callbacks).fit()
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


def evaluate(model: nn.Module, dm: TextDataModule, split: str = "test", teacher_logits: Any = None) -> dict:
    logits, y = predict(model, dm.eval_batches(split))
    return classification_metrics(logits, y, teacher_logits)


def _prepare_out(out: Path, overwrite: bool, inputs: Sequence[tuple[str, str | Path | None]]) -> None:
    rundir.prepare(out, kind="text", overwrite=overwrite, inputs=inputs)


def run(
    recipe: TextRecipe,
    out: Path | None = None,
    log: Any = print,
    *,
    overwrite: bool = False,
    inputs: Sequence[tuple[str, str | Path | None]] = (),
) -> dict[str, Any]:
    """Teacher, then every student of the recipe; returns the report (the image runs' schema).

    With ``out``, writes a run directory like an image run's: ``teacher/`` and ``students/<name>/`` (each
    ``model.safetensors`` + ``model.json``, its ``tokenizer/``, ``test_logits.safetensors``, ``metrics.jsonl`` when
    trained here), ``report.json``, ``report.md``, ``report.html`` and ``manifest.json``. ``out`` is created once
    the recipe is checked (see :mod:`distill.workflow.rundir`): an existing non-empty one only with ``overwrite``,
    and only when distill made it and none of ``inputs`` (besides the recipe's own) lies in it. With
    ``teacher.public_key``, a saved teacher's signature is verified first, before anything of it is read.
    """
    t_start = time.perf_counter()
    # a saved teacher's signature is checked before its tokenizer (or anything else of it) is read and before out
    # is created: a tampered file anywhere in the teacher's directory leaves nothing behind
    verify_teacher(recipe.teacher)
    torch.manual_seed(recipe.seed)
    data = load_data(recipe.data, recipe.seed)
    tok = load_tokenizer(teacher_dir(recipe.teacher))
    dm = TextDataModule(
        data, tok, recipe.batch_size, recipe.max_length, seed=recipe.seed, cache_dir=Path(recipe.cache_dir) / "tokens"
    )
    names, augment = check_students(recipe)  # the whole recipe is checked before the first minute of training
    # out is made once the recipe is checked: before fine-tuning (its metrics go there), else after a saved teacher
    # passed its checks, so that a refused teacher leaves no directory behind
    loads_teacher = bool(recipe.teacher.get("checkpoint"))
    if out is not None and not loads_teacher:
        _prepare_out(out, overwrite, [*inputs, *text_inputs(recipe)])
    t_log = MetricsLogger(out / "teacher" / "metrics.jsonl") if out else None
    teacher, t_info = get_teacher(recipe, dm, data, log, t_log)
    if out is not None and loads_teacher:
        _prepare_out(out, overwrite, [*inputs, *text_inputs(recipe)])
    y_test = dm.split("test")[1]
    t_test = predict_split(teacher, dm, "test")
    seq = round(dm.mean_length("test"))
    vocab = teacher.hf.get_input_embeddings().num_embeddings
    t_timed = timed(teacher, seq, vocab, recipe.threads or 0)
    bench = {bs: t_timed(bs, 20) for bs in (1, 32)}
    fine_tuned = recipe.teacher.get("finetune", True) and not recipe.teacher.get("checkpoint")
    method = "fine-tuned" if fine_tuned else "loaded"
    t_row = {"name": "teacher", "method": method, **classification_metrics(t_test, y_test)}
    t_row.update(params=count_params(teacher), **{f"latency_ms_b{k}": v for k, v in bench.items()}, **t_info)
    if out is not None:
        save_text_model(out / "teacher", teacher, data.classes, {"method": method, "source": str(t_info["source"])})
        tok.save_pretrained(str(out / "teacher" / "tokenizer"))
        save_predictions(out / "teacher", t_test, y_test)
    train_logits = teacher_logits(teacher, dm, "train", recipe.cache_dir)
    dm_t, t_logits = None, None  # the data with a transfer set and the teacher's logits on it, made when needed
    rows = []
    for i, (s, name) in enumerate(zip(recipe.students, names, strict=True)):
        if s.get("transfer") and dm_t is None:
            dm_t = TextDataModule(
                data, tok, recipe.batch_size, recipe.max_length, seed=recipe.seed,
                cache_dir=Path(recipe.cache_dir) / "tokens", augment=augment,
            )  # fmt: skip
            t_logits = teacher_logits(teacher, dm_t, "train", recipe.cache_dir)
            n_new = len(dm_t.ids["train"]) - len(dm.ids["train"])
            log(f"transfer set: {n_new} augmented texts, labelled by the teacher")
        s_dm, s_logits = (dm_t, t_logits) if s.get("transfer") else (dm, train_logits)
        m_name, params = s.get("method", "text_kd"), s.get("params", {})
        torch.manual_seed(recipe.seed + 1)
        student = build_student(s["student"], teacher, data.num_classes)
        t0 = time.perf_counter()
        logger = [MetricsLogger(out / "students" / name / "metrics.jsonl")] if out else []
        optim = student_optim(recipe, i)  # a student may change its epochs, lr, ...
        state = fit(student, teacher, m_name, params, s_dm, optim, s_logits, callbacks=logger)
        logits = predict_split(student, dm, "test")
        row = {"name": name, "method": m_name + ("+transfer" if s.get("transfer") else "")}
        row.update(classification_metrics(logits, y_test, t_test), params=count_params(student))
        row.update(best_val_acc=state.best_acc, epochs=state.epoch, train_seconds=time.perf_counter() - t0)
        row.update(paired_latency(t_timed, timed(student, seq, vocab, recipe.threads or 0)))
        row["accuracy_ratio"] = row["acc"] / t_row["acc"]
        log(f"{name}: acc {row['acc']:.4f} ({row['accuracy_ratio']:.1%}), ×{row['speedup_b1']:.1f} at b1")
        if out is not None:
            extra = {"method": m_name, "params": params, "student": s["student"], "transfer": bool(s.get("transfer"))}
            save_text_model(out / "students" / name, student, data.classes, extra)
            tok.save_pretrained(str(out / "students" / name / "tokenizer"))  # each model directory is self-contained
            save_predictions(out / "students" / name, logits, y_test)
        rows.append(row)
    report = text_report(recipe, data, dm, t_row, rows, seq, time.perf_counter() - t_start, versions())
    if out is not None:
        write_reports(out, report)
        write_html([out], out / "report.html", temperature=method_temperature)
        write_manifest(out, {"kind": "text-run"})
    return report


def text_report(
    recipe: TextRecipe, data: TextData, dm: TextDataModule, teacher: dict, students: list[dict], seq: int,
    seconds: float, versions: dict[str, str],
) -> dict[str, Any]:  # fmt: skip
    """The image runs' report schema (``accuracy`` per row, gap recovered against the first ``text_ce`` student)."""
    from dataclasses import asdict

    for r in (teacher, *students):
        r["accuracy"] = r.pop("acc")
    scratch = next((s for s in students if s["method"] == "text_ce"), None)
    gap = teacher["accuracy"] - scratch["accuracy"] if scratch else 0.0
    for s in students:
        s["gap_recovered"] = (s["accuracy"] - scratch["accuracy"]) / gap if scratch and gap > 0 else None
    return {
        "dataset": {
            "name": data.name,
            "train": len(dm.split("train")[0]),
            "test": len(data.test_texts),
            "classes": data.num_classes,
            "fingerprint": data.fingerprint(),
        },
        "teacher": teacher,
        "students": students,
        "sequence_length": seq,
        "seconds": seconds,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "versions": versions,
        "recipe": asdict(recipe),
    }

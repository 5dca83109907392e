"""Recipes into library arguments: the config, its data and models, the run directory, and the check of a recipe
before anything trains (part of :mod:`distill.api`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from distill import config as C
from distill.api.teachers import load_ensemble, load_teacher
from distill.data.base import ImageData
from distill.data.module import DataModule, load_datamodule
from distill.distillers import DISTILLERS
from distill.distillers.base import build_distiller
from distill.engine.setup import resolve_device
from distill.errors import ConfigError, DistillError
from distill.models.transfer import init_from_teacher
from distill.models.zoo import create_model
from distill.settings import check_amp
from distill.workflow import rundir


def as_config(cfg: C.Config | str | Path | None, overrides: tuple[str, ...] | list[str] = ()) -> C.Config:
    if isinstance(cfg, C.Config):
        return _with_overrides(cfg, overrides)
    return C.load_config(cfg, overrides)


def _with_overrides(cfg: C.Config, overrides: tuple[str, ...] | list[str]) -> C.Config:
    if not overrides:
        return cfg
    raw = C.to_dict(cfg)
    for text in overrides:
        C.apply_override(raw, *C.parse_override(text))
    return C.from_dict(C.Config, raw)


def load_data(cfg: C.Config) -> tuple[ImageData, DataModule]:
    return load_datamodule(cfg.data, cfg.seed)


def model_spec(m: C.ModelConfig, data: ImageData, **extra: Any) -> dict[str, Any]:
    """What ``model.json`` records: enough to rebuild the model and feed it correctly."""
    return {
        "model": m.model,
        "kwargs": dict(m.kwargs),
        "num_classes": data.num_classes,
        "in_channels": data.in_channels,
        "classes": list(data.classes),
        "preprocessing": {
            "input_shape": [data.in_channels, *data.image_size],
            "scale": getattr(data, "scale", 1 / 255),
            "mean": list(data.mean),
            "std": list(data.std),
        },
        "dataset": {"name": data.name, "fingerprint": data.fingerprint()},
        **extra,
    }


def build_model(m: C.ModelConfig, data: ImageData) -> nn.Module:
    return create_model(m.model, num_classes=data.num_classes, in_channels=data.in_channels, **m.kwargs)


def check_outputs(model: nn.Module, data: ImageData, what: str) -> None:
    """Refuse a model whose output size differs from the dataset's class count."""
    with torch.no_grad():
        was = model.training
        model.eval()
        shape = (1, data.in_channels, *data.image_size)
        try:
            out = model(torch.zeros(shape, device=next(model.parameters()).device))
        except RuntimeError as e:  # e.g. a CNN whose pooling leaves nothing of a tiny image
            raise ConfigError(f"{what} cannot take {data.name}'s input of shape {list(shape[1:])}: {e}") from e
        finally:
            model.train(was)
    if out.shape[-1] != data.num_classes:
        raise ConfigError(f"{what} has {out.shape[-1]} outputs but {data.name} has {data.num_classes} classes")


def _recipe_identity(text: str) -> Any:
    """What must be equal to resume a run: the recipe without where its progress is reported (tracking)."""
    import yaml

    raw = yaml.safe_load(text) or {}
    raw.pop("tracking", None)
    return raw


def run_inputs(cfg: C.Config, recipe: str | Path | None = None) -> list[tuple[str, str | Path | None]]:
    """What a run reads (recipe, teacher, ensemble, key, data root): ``--overwrite`` must never delete them."""
    return [
        ("the recipe", recipe),
        ("the teacher", cfg.teacher.checkpoint),
        *(("the ensemble member", m) for m in cfg.teacher.ensemble),
        ("the public key", cfg.teacher.public_key),
        ("the data root", cfg.data.root),
    ]


def _has_recipe(out: Path) -> bool:
    """A run directory from before run-directory markers: it holds the recipe (legacy rule for ``--resume``)."""
    return (out / "config.yaml").is_file()


def prepare_out_dir(
    out: Path,
    overwrite: bool,
    resume: bool,
    cfg: C.Config,
    *,
    kind: str = "run",
    inputs: list[tuple[str, str | Path | None]] | None = None,
) -> None:
    """Create ``out`` with the recipe in it; an existing non-empty one is resumed (same recipe only), replaced
    (only a distill directory none of whose inputs lie in it) or refused: see :mod:`distill.workflow.rundir`."""
    inputs = run_inputs(cfg) if inputs is None else inputs
    action = rundir.prepare(out, kind=kind, overwrite=overwrite, resume=resume, inputs=inputs, resumable=_has_recipe)
    saved = out / "config.yaml"
    if action == "resume" and saved.exists():
        if _recipe_identity(saved.read_text()) != _recipe_identity(C.dump_yaml(cfg)):
            raise ConfigError(
                f"{out} was made with a different recipe; resume it with the same one, or choose another --out"
            )
        return
    try:
        saved.write_text(C.dump_yaml(cfg))
    except OSError as e:
        raise DistillError(f"cannot write {saved}: {e.strerror or e}") from e


def validate_recipe(cfg: C.Config, data: ImageData, dm: DataModule) -> None:
    """Instantiate every model and method on the real shapes; raises on any bad name, parameter or class count."""
    device = resolve_device(cfg.device)
    check_amp(cfg.amp, device.type)
    if cfg.teacher.ensemble:
        teacher = load_ensemble(cfg.teacher.ensemble, data, cfg.teacher.public_key)
    elif cfg.teacher.checkpoint:
        teacher = load_teacher(cfg.teacher.checkpoint, data, cfg.teacher.public_key)[0]
    else:
        teacher = build_model(cfg.teacher, data)
    check_outputs(teacher, data, f"teacher {cfg.teacher.model!r}")
    for m in cfg.methods:
        _check_black_box(m.name, teacher)
        student = build_model(cfg.student, data)
        check_outputs(student, data, f"student {cfg.student.model!r}")
        init_from_teacher(student, teacher, cfg.student.init_from_teacher, dm.input_shape)
        d = build_distiller(m.name, student, teacher, dm.input_shape, len(dm.x_train), dm.num_classes, **m.params)
        d.close()
        if dm.num_labeled < len(dm.x_train) and d.needs_every_label:
            raise ConfigError(
                f"method {m.name!r} needs a label on every training image, but data.labeled_fraction="
                f"{cfg.data.labeled_fraction} leaves {len(dm.x_train) - dm.num_labeled} without one; use a method "
                "that learns from the teacher alone on unlabelled images (kd, hard, dist, ...) or labeled_fraction=1"
            )


def _check_black_box(method: str, teacher: nn.Module) -> None:
    """Refuse a method that reads the teacher's features when the teacher is a black box (an ONNX graph)."""
    if getattr(teacher, "black_box", False) and getattr(DISTILLERS.get(method), "teacher_features", False):
        raise ConfigError(
            f"method {method!r} reads the teacher's intermediate features, but the teacher is an ONNX model (a black "
            "box: logits only); use a logit method such as kd, dkd, dist or hard"
        )

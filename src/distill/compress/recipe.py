"""The compress recipe: its stages' settings, loading it and the input model, and checking both before anything
runs (see :mod:`distill.compress.pipeline`)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from distill import config as C
from distill.compress import export as E
from distill.compress import prune as P
from distill.compress import quantize as Q
from distill.distillers.base import build_distiller
from distill.engine.trainer import OptimSettings
from distill.errors import CheckpointError, ConfigError
from distill.trust import verify_model


@dataclass
class PruneStage:
    enabled: bool = True
    kind: str = "structured"  # structured (channels; smaller, faster) | unstructured (zeroed weights)
    ratio: float = 0.5  # fraction of channels (structured) or weights (unstructured) to remove, in [0, 1)
    importance: str = "l1"  # structured: l1 | l2 | taylor | random
    scope: str = "layer"  # layer | global: rank channels/weights within each layer or across all of them
    steps: int = 1  # reach ratio in this many steps (with recovery epochs between them when recover is on)
    schedule: str = "linear"  # unstructured: linear | cubic
    ignore: list[str] = field(default_factory=list)  # extra layers to keep whole (the classifier always is)
    target_params: int | None = None  # structured: prune until at most this many parameters ...
    target_latency_ms: float | None = None  # ... or this CPU latency at latency_batch (instead of ratio)
    latency_batch: int = 1
    max_ratio: float = 0.9
    taylor_batches: int = 4


@dataclass
class RecoverStage:
    enabled: bool = True
    method: str = "kd"
    params: dict[str, Any] = field(default_factory=lambda: {"alpha": 0.9, "temperature": 4.0})
    teacher: str | None = None  # a model directory; default: the input (unpruned) model
    train: OptimSettings = field(default_factory=lambda: OptimSettings(epochs=5, lr=0.01))


@dataclass
class QuantizeStage:
    enabled: bool = True
    mode: str = "static"  # static (convnets) | dynamic (Linear layers) | qat (distillation with fake quantization)
    backend: str = "x86"
    calibration_images: int = 1024  # training images (un-augmented) that calibrate static quantization
    train: OptimSettings = field(default_factory=lambda: OptimSettings(epochs=1, lr=1e-3, weight_decay=0.0))


@dataclass
class ExportStage:
    enabled: bool = True
    exporter: str = "dynamo"  # dynamo | torchscript
    opset: int | None = None
    atol: float = 1e-4  # max |onnxruntime - PyTorch| on real test inputs
    int8: bool = True  # also write an onnxruntime-quantized int8 model


@dataclass
class CompressConfig:
    seed: int = 0
    device: str = "auto"
    data: C.DataConfig = field(default_factory=C.DataConfig)
    bench: C.BenchConfig = field(default_factory=C.BenchConfig)
    prune: PruneStage = field(default_factory=PruneStage)
    recover: RecoverStage = field(default_factory=RecoverStage)
    quantize: QuantizeStage = field(default_factory=QuantizeStage)
    export: ExportStage = field(default_factory=ExportStage)


def load_recipe(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> CompressConfig:
    """A compress recipe (strict keys, ``key.path=value`` overrides); the defaults when ``path`` is None."""
    raw = C.read_yaml(path) if path else {}
    for text in overrides:
        C.apply_override(raw, *C.parse_override(text))
    return C.from_dict(CompressConfig, raw)


def load_input(directory: str | Path, public_key: str | Path | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """A float image model directory (plain or pruned), checked before anything is built.

    Refuses a missing directory, a text model, an already quantized model and, with ``public_key``, a directory
    without a valid signature by that key (see :mod:`distill.trust`; checked before ``model.json`` is read).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"model directory {directory} does not exist")
    if public_key is not None:
        verify_model(directory, public_key)
    spec = P.read_spec(directory)
    task = spec.get("task", "image")
    if task != "image":
        raise CheckpointError(
            f"{directory} is a {task} model (model.json task: {task!r}); distill compress works on image models only"
        )
    if "quantization" in spec:
        raise CheckpointError(f"{directory} is already quantized; compress its float model instead")
    return P.load_pruned(directory)


def check_settings(cfg: CompressConfig) -> None:
    """Refuse bad settings before anything is loaded: ratios, kinds, modes, exporters, backends."""
    p = cfg.prune
    if p.enabled:
        if p.kind not in ("structured", "unstructured"):
            raise ConfigError(f"prune.kind must be 'structured' or 'unstructured', got {p.kind!r}")
        P.check_ratio("prune.ratio", p.ratio)
        P.check_ratio("prune.max_ratio", p.max_ratio)
        if p.scope not in ("layer", "global"):
            raise ConfigError(f"prune.scope must be 'layer' or 'global', got {p.scope!r}")
        if p.importance not in P.IMPORTANCES:
            raise ConfigError(f"unknown prune.importance {p.importance!r}; expected one of {list(P.IMPORTANCES)}")
        P.sparsity_schedule(p.ratio, p.steps, p.schedule)
        if p.kind == "structured":
            P.require_torch_pruning()
    Q.check_mode(cfg.quantize.mode)
    if cfg.quantize.enabled:
        Q.set_backend(cfg.quantize.backend)
        if cfg.quantize.calibration_images < 1:
            raise ConfigError(f"quantize.calibration_images must be >= 1, got {cfg.quantize.calibration_images}")
    if cfg.export.enabled:
        if cfg.export.exporter not in E.EXPORTERS:
            raise ConfigError(f"unknown export.exporter {cfg.export.exporter!r}; expected one of {list(E.EXPORTERS)}")
        E._require("onnxruntime")
        E._require("onnx")
    # data and bench are the image recipes' sections: their values were checked when the recipe was read


def check_model(cfg: CompressConfig, model: nn.Module, input_shape: tuple[int, ...], num_classes: int) -> None:
    """Refuse what only the model can tell: unknown layers to ignore, the recovery method's parameters."""
    if cfg.prune.enabled:
        P.resolve_layers(model, cfg.prune.ignore)
    if cfg.recover.enabled:
        probe = copy.deepcopy(model)
        build_distiller(
            cfg.recover.method, probe, copy.deepcopy(model), input_shape, 1, num_classes, **cfg.recover.params
        ).close()

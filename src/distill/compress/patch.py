"""Saving a pruned model without pickle: safetensors weights and an *architecture patch* in ``model.json`` (the
new shapes of the layers that changed), rebuilt on load from the base model (see :mod:`distill.compress.prune`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from distill.artifacts import load_weights, read_model_spec, register_format, save_model
from distill.errors import CheckpointError, DistillError
from distill.models.zoo import create_model

PATCH_FORMAT = "distill-patch/1"

# The layer types a patch may rebuild, with the constructor arguments read back from an instance.
_LAYERS: dict[str, tuple[type[nn.Module], Callable[[Any], dict[str, Any]]]] = {}


def _conv_args(m: Any) -> dict[str, Any]:
    return {
        "in_channels": m.in_channels,
        "out_channels": m.out_channels,
        "kernel_size": list(m.kernel_size),
        "stride": list(m.stride),
        "padding": m.padding if isinstance(m.padding, str) else list(m.padding),
        "dilation": list(m.dilation),
        "groups": m.groups,
        "bias": m.bias is not None,
        "padding_mode": m.padding_mode,
    }


def _bn_args(m: Any) -> dict[str, Any]:
    return {
        "num_features": m.num_features,
        "eps": m.eps,
        "momentum": m.momentum,
        "affine": m.affine,
        "track_running_stats": m.track_running_stats,
    }


for _cls in (nn.Conv1d, nn.Conv2d, nn.Conv3d):
    _LAYERS[_cls.__name__] = (_cls, _conv_args)
for _cls in (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d):
    _LAYERS[_cls.__name__] = (_cls, _bn_args)
_LAYERS["Linear"] = (
    nn.Linear,
    lambda m: {"in_features": m.in_features, "out_features": m.out_features, "bias": m.bias is not None},
)
_LAYERS["LayerNorm"] = (
    nn.LayerNorm,
    lambda m: {
        "normalized_shape": list(m.normalized_shape),
        "eps": m.eps,
        "elementwise_affine": m.elementwise_affine,
        "bias": getattr(m, "bias", None) is not None,
    },
)
_LAYERS["GroupNorm"] = (
    nn.GroupNorm,
    lambda m: {"num_groups": m.num_groups, "num_channels": m.num_channels, "eps": m.eps, "affine": m.affine},
)
_LAYERS["PReLU"] = (nn.PReLU, lambda m: {"num_parameters": m.num_parameters})


def folded_state(model: nn.Module) -> dict[str, Tensor]:
    """``model.state_dict()`` with any attached pruning masks folded in (``w_orig * w_mask`` stored as ``w``)."""
    state = dict(model.state_dict())
    for key in [k for k in state if k.endswith("_orig")]:
        base = key[: -len("_orig")]
        if base + "_mask" in state:
            state[base] = (state.pop(key) * state.pop(base + "_mask")).detach()
    return state


def architecture_patch(model: nn.Module, base: nn.Module) -> dict[str, Any]:
    """The layers of ``model`` whose weight shapes differ from ``base`` (same architecture before pruning)."""
    own, ref = folded_state(model), base.state_dict()
    if set(own) != set(ref):
        extra, missing = sorted(set(own) - set(ref)), sorted(set(ref) - set(own))
        raise DistillError(
            f"the model's layers differ from its base architecture beyond shapes (extra {extra[:3]}, missing "
            f"{missing[:3]}); only pruned models (same layers, fewer channels) can be saved this way"
        )
    changed = sorted({k.rpartition(".")[0] for k in own if own[k].shape != ref[k].shape})
    modules = dict(model.named_modules())
    layers = {}
    for name in changed:
        m = modules.get(name)
        kind = type(m).__name__
        if m is None or kind not in _LAYERS or type(m) is not _LAYERS[kind][0]:
            raise DistillError(
                f"layer {name!r} ({kind}) changed shape, but a patch can only rebuild {sorted(_LAYERS)} layers"
            )
        layers[name] = {"type": kind, "args": _LAYERS[kind][1](m)}
    return {"format": PATCH_FORMAT, "layers": layers}


def apply_patch(model: nn.Module, patch: dict[str, Any] | None) -> nn.Module:
    """Replace the layers named in ``patch`` by fresh ones of the recorded shapes (weights come from the file)."""
    if not patch:
        return model
    if patch.get("format") != PATCH_FORMAT:
        raise CheckpointError(f"unknown architecture patch format {patch.get('format')!r}; expected {PATCH_FORMAT}")
    for name, layer in patch["layers"].items():
        if layer.get("type") not in _LAYERS:
            raise CheckpointError(f"architecture patch: layer {name!r} has unsupported type {layer.get('type')!r}")
        cls = _LAYERS[layer["type"]][0]
        args = {k: tuple(v) if isinstance(v, list) else v for k, v in layer["args"].items()}
        parent, _, leaf = name.rpartition(".")
        try:
            owner = model.get_submodule(parent)
        except AttributeError as e:
            raise CheckpointError(f"architecture patch names layer {name!r}, which the base model lacks") from e
        if leaf not in owner._modules:
            raise CheckpointError(f"architecture patch names layer {name!r}, which the base model lacks")
        setattr(owner, leaf, cls(**args))
    return model


def build_from_spec(spec: dict[str, Any]) -> nn.Module:
    """The (untrained) model a ``model.json`` describes: ``create_model`` plus its architecture patch, if any."""
    model = create_model(
        spec["model"], num_classes=spec["num_classes"], in_channels=spec["in_channels"], **spec.get("kwargs", {})
    )
    return apply_patch(model, spec.get("architecture"))


def save_pruned(directory: str | Path, model: nn.Module, spec: dict[str, Any]) -> Path:
    """Save a (possibly pruned) model as ``model.safetensors`` + ``model.json`` with its architecture patch."""
    spec = {k: v for k, v in spec.items() if k not in ("architecture", "sha256")}
    patch = architecture_patch(model, build_from_spec(spec))
    if patch["layers"]:
        spec = {**spec, "architecture": patch}
    if any(n.endswith("_orig") for n, _ in model.named_parameters()):  # masks still attached: save folded weights
        clean = build_from_spec(spec)
        clean.load_state_dict(folded_state(model))
        model = clean
    return save_model(Path(directory), model, spec)


def read_spec(directory: str | Path) -> dict[str, Any]:
    """``model.json`` of a model directory, its weights checked against the recorded sha256."""
    return read_model_spec(directory)


def load_pruned(directory: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model saved by :func:`save_pruned` (or :func:`distill.artifacts.save_model`)."""
    spec = read_spec(directory)
    if "quantization" in spec:
        raise CheckpointError(f"{directory} holds a quantized model; load it with distill.compress.load_compressed")
    model = build_from_spec(spec)
    load_weights(model, Path(directory) / "model.safetensors", what=f"{spec['model']} ({directory})")
    return model.to(device), spec


def _load_format(directory: Path, spec: dict[str, Any], device: str | torch.device) -> nn.Module:
    model = build_from_spec(spec)
    load_weights(model, Path(directory) / "model.safetensors", what=f"{spec['model']} ({directory})")
    return model.to(device)


register_format("pruned", _load_format)  # load_model of a model.json with an architecture patch

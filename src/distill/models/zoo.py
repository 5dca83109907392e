"""``create_model`` — the single entry point for every architecture.

A factory is registered with ``@register_model("name")`` and has the signature
``factory(num_classes: int, in_channels: int, **kwargs) -> nn.Module``. Names with a ``torchvision:`` or
``timm:`` prefix are built by the adapters in :mod:`distill.models.adapters`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distill.artifacts import load_weights, register_format
from distill.errors import ConfigError
from distill.models import adapters, foreign
from distill.registry import Registry

ModelFactory = Callable[..., nn.Module]
MODELS: Registry[ModelFactory] = Registry("model")


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    return MODELS.register(name)


def create_model(name: str, num_classes: int = 10, in_channels: int = 3, **kwargs: Any) -> nn.Module:
    """Build ``name`` for ``num_classes`` outputs on ``in_channels``-channel images."""
    _load_builtin()
    if ":" in name:
        if name.partition(":")[0] in foreign.PREFIXES:  # a user's class, an ONNX graph, a Hugging Face model
            return foreign.create(name, num_classes, in_channels, kwargs)

        return adapters.create_external(name, num_classes=num_classes, in_channels=in_channels, **kwargs)
    factory = MODELS.get(name)
    params = inspect.signature(factory).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        unknown = sorted(set(kwargs) - set(params))
        if unknown:
            valid = sorted(set(params) - {"num_classes", "in_channels"})
            raise ConfigError(f"model {name!r} has no argument(s) {unknown}; it takes {valid or 'none'}")
    try:
        return factory(num_classes=num_classes, in_channels=in_channels, **kwargs)
    except TypeError as e:  # an argument of the wrong type (e.g. width: abc) reaching the constructor
        raise ConfigError(f"model {name!r} cannot be built with arguments {kwargs}: {e}") from e


def model_names() -> list[str]:
    _load_builtin()
    return MODELS.names()


def _load_builtin() -> None:
    # Importing the modules runs their @register_model decorators.
    from distill.models import cifar, kws, mlp, small  # noqa: F401


def _load_format(directory: Path, spec: dict[str, Any], device: str | torch.device) -> nn.Module:
    model = create_model(
        spec["model"], num_classes=spec["num_classes"], in_channels=spec["in_channels"], **spec.get("kwargs", {})
    )
    load_weights(model, Path(directory) / "model.safetensors", what=f"{spec['model']} ({directory})")
    return model.to(device)


register_format("plain", _load_format)  # load_model of a model.json naming a zoo, torchvision: or timm: model

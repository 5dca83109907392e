"""Models from other libraries: ``torchvision:<name>`` and ``timm:<name>`` (timm is optional).

The model is built with our ``num_classes``; for ``in_channels != 3`` its first conv is replaced by a fresh one of
the same shape that takes ``in_channels`` inputs. Nothing is ever downloaded: ``pretrained=True`` is refused, and
weights come from a local ``checkpoint`` (``.safetensors``, or ``.pt``/``.pth`` read with ``weights_only=True``).

The tap-point names the built-in models carry (``feature_layers``, ``penultimate``, ``classifier``) are inferred
where the structure allows and ``None``/``[]`` otherwise. Several torchvision and timm models own a submodule called
``classifier``; there the name of the final linear layer is stored as ``classifier_name`` instead, so read it with
:func:`tap_names`, which works for every model.
"""

from __future__ import annotations

import difflib
import os
import pickle
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from distill.errors import CheckpointError, ConfigError, DistillError, UnknownNameError
from distill.registry import suggest

PREFIXES = ("torchvision", "timm")
_SHOW = 5  # how many keys an error message names before "(+N more)"


class TapNames(NamedTuple):
    """Where to read a model's features: stage outputs, the pooled vector, and the final linear layer."""

    feature_layers: list[str]
    penultimate: str | None
    classifier: str | None


def tap_names(model: nn.Module) -> TapNames:
    """The tap-point names of any model built by :func:`distill.models.zoo.create_model`."""

    def name(attr: str) -> str | None:
        value = model.__dict__.get(attr, getattr(type(model), attr, None))
        return value if isinstance(value, str) else None

    layers = model.__dict__.get("feature_layers", getattr(type(model), "feature_layers", []))
    return TapNames(list(layers or []), name("penultimate"), name("classifier") or name("classifier_name"))


def create_external(
    name: str,
    num_classes: int = 10,
    in_channels: int = 3,
    checkpoint: str | os.PathLike[str] | None = None,
    pretrained: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """Build ``<library>:<architecture>`` from torchvision or timm, optionally loading a local checkpoint.

    Args:
        name: e.g. ``"torchvision:resnet18"`` or ``"timm:resnet18"``.
        num_classes: outputs of the new classifier.
        in_channels: input channels; the first conv is replaced when this is not 3.
        checkpoint: a local state dict for exactly this model (same classes and channels).
        pretrained: refused; download weights yourself and pass ``checkpoint``.
        **kwargs: passed to the library's model constructor.
    """
    prefix, _, arch = name.partition(":")
    if pretrained or kwargs.get("weights") is not None or kwargs.get("weights_backbone") is not None:
        raise DistillError(
            f"{name}: distill never downloads weights (pretrained=True / weights=...); download them yourself "
            "and pass checkpoint='path/to/weights.safetensors' (or a .pt/.pth state dict)"
        )
    kwargs.pop("weights", None)
    kwargs.pop("weights_backbone", None)
    if prefix == "torchvision":
        model, hint = _torchvision(arch, num_classes, in_channels, kwargs), None
    elif prefix == "timm":
        model, hint = _timm(arch, num_classes, in_channels, kwargs)
    else:
        known = [p + ":<name>" for p in PREFIXES] + ["class:<file.py or module>:<Class>", "onnx:model", "hf:<config>"]
        raise UnknownNameError(f"unknown model library {prefix!r} in {name!r}; use one of {', '.join(known)}")
    _annotate(model, num_classes, hint)
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, what=name)
    return model


def _torchvision(arch: str, num_classes: int, in_channels: int, kwargs: dict[str, Any]) -> nn.Module:
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models)  # classification models only
    if arch not in names:
        raise UnknownNameError(suggest(arch, names, "torchvision model"))
    try:
        model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes, **kwargs)
    except TypeError as e:
        raise ConfigError(f"torchvision model {arch!r} rejected its arguments {sorted(kwargs)}: {e}") from e
    if in_channels != 3:
        _replace_first_conv(model, in_channels, f"torchvision:{arch}")
    return model


def _timm(arch: str, num_classes: int, in_channels: int, kwargs: dict[str, Any]) -> tuple[nn.Module, str | None]:
    try:
        import timm
    except ImportError as e:
        raise DistillError("timm is not installed; pip install 'distill[timm]'") from e
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=5, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownNameError(f"unknown timm model {arch!r}.{hint} See timm.list_models() for all of them.")
    try:
        model = timm.create_model(arch, pretrained=False, num_classes=num_classes, in_chans=in_channels, **kwargs)
    except TypeError as e:
        raise ConfigError(f"timm model {arch!r} rejected its arguments {sorted(kwargs)}: {e}") from e
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    return model, cfg.get("classifier") if isinstance(cfg.get("classifier"), str) else None


def _replace_first_conv(model: nn.Module, in_channels: int, what: str) -> None:
    """Swap the first ``nn.Conv2d`` (in registration order) for a fresh one taking ``in_channels`` inputs."""
    path, conv = next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), ("", None))
    if conv is None or conv.groups != 1:
        raise ConfigError(f"cannot adapt {what} to in_channels={in_channels}: no ordinary first Conv2d found")
    new = nn.Conv2d(
        in_channels,
        conv.out_channels,
        conv.kernel_size,  # type: ignore[arg-type]
        conv.stride,  # type: ignore[arg-type]
        conv.padding,  # type: ignore[arg-type]
        conv.dilation,  # type: ignore[arg-type]
        bias=conv.bias is not None,
        padding_mode=conv.padding_mode,
    )
    parent, _, attr = path.rpartition(".")
    setattr(model.get_submodule(parent), attr, new)


# --- tap-point inference ---------------------------------------------------------------------------------------------

_SKIP = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.Identity)


def _annotate(model: nn.Module, num_classes: int, hint: str | None) -> None:
    """Set ``feature_layers``, ``penultimate`` and ``classifier`` (or ``classifier_name``) on ``model``."""
    modules = dict(model.named_modules())
    classifier = hint if hint and isinstance(modules.get(hint), nn.Linear) else None
    if classifier is None:
        linears = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
        if linears and modules[linears[-1]].out_features == num_classes:  # type: ignore[union-attr]
            classifier = linears[-1]
    penultimate = _penultimate(model, classifier) if classifier else None
    _set(model, "feature_layers", _stages(model, modules))
    _set(model, "penultimate", penultimate)
    _set(model, "classifier", classifier, fallback="classifier_name")


def _set(model: nn.Module, attr: str, value: object, fallback: str | None = None) -> None:
    taken = attr in model._modules or attr in model._parameters or attr in model._buffers
    if taken and fallback is None:
        return
    object.__setattr__(model, fallback if taken else attr, value)  # type: ignore[arg-type]


def _penultimate(model: nn.Module, classifier: str) -> str | None:
    """The module run just before ``classifier`` (by registration order), if its output is a pooled vector.

    A global average pool found this way (torchvision ResNet/RegNet/EfficientNet ``avgpool``) feeds a linear layer
    only because the model's forward flattens its output; it is made pool + flatten, so the named module yields
    ``(B, C)`` rather than ``(B, C, 1, 1)``. It has no weights, so state dicts are unchanged.
    """
    path = classifier
    while path:
        parent_path, _, leaf = path.rpartition(".")
        parent = model.get_submodule(parent_path)
        names = list(parent._modules)
        for sibling in reversed(names[: names.index(leaf)]):
            module = parent._modules[sibling]
            if module is None or isinstance(module, _SKIP):
                continue
            full = f"{parent_path}.{sibling}" if parent_path else sibling
            if isinstance(module, nn.AdaptiveAvgPool2d) and module.output_size in (1, (1, 1)):
                module = nn.Sequential(module, nn.Flatten(1))  # (B, C, 1, 1) -> (B, C)
                setattr(parent, sibling, module)
            return full if _pooled(module) else None
        path = parent_path
    return None


def _pooled(module: nn.Module) -> bool:
    """Whether ``module`` looks like it emits a flat feature vector: a flatten, or a head's hidden activation."""
    if isinstance(module, nn.Sequential) and len(module):
        # pool + flatten, or a head's hidden layer (Linear + activation); not a conv block ending in a ReLU
        last, has_linear = module[-1], any(isinstance(m, nn.Linear) for m in module)
        return isinstance(last, nn.Flatten) or (has_linear and _is_activation(last))
    if isinstance(module, (nn.Flatten, nn.BatchNorm1d)) or _is_activation(module):  # not Linear: maybe a 2nd head
        return True
    # Pooling wrappers that flatten, such as timm's SelectAdaptivePool2d(flatten=True).
    return "Pool" in type(module).__name__ and isinstance(getattr(module, "flatten", None), nn.Flatten)


def _is_activation(module: nn.Module) -> bool:
    return type(module).__module__ == "torch.nn.modules.activation"


def _stages(model: nn.Module, modules: dict[str, nn.Module]) -> list[str]:
    """Main stages: timm's ``feature_info``, else ``layer1..4``, else the container children of a body."""
    info = getattr(model, "feature_info", None)
    if isinstance(info, list) and info and all(isinstance(f, dict) and f.get("module") in modules for f in info):
        return [f["module"] for f in info]
    layers = [f"layer{i}" for i in range(1, 5) if f"layer{i}" in modules]
    if len(layers) >= 2:
        return layers
    for body in ("features", "trunk_output", "stages", "layers"):
        if isinstance(modules.get(body), nn.Sequential):
            kids = [f"{body}.{k}" for k, m in modules[body].named_children() if len(m._modules)]
            return kids if len(kids) >= 2 else [body]
    return []


# --- checkpoints -----------------------------------------------------------------------------------------------------


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Read a local state dict without running any code from the file.

    ``.safetensors`` is read directly; ``.pt``/``.pth``/``.bin``/``.ckpt`` only with ``torch.load(weights_only=True)``,
    which refuses pickles that would import or call anything beyond tensors and plain containers.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"checkpoint {str(p)!r} does not exist")
    suffix = p.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(p), device="cpu")
        except Exception as e:  # the library raises several kinds for a bad header
            raise CheckpointError(f"could not read {str(p)!r} as safetensors: {e}") from e
    if suffix not in (".pt", ".pth", ".bin", ".ckpt"):
        raise CheckpointError(f"checkpoint {str(p)!r}: unsupported format {suffix!r}; use .safetensors, .pt or .pth")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message is long; keep the line that names the offending global, e.g. "GLOBAL posix.system".
        lines = [ln.strip() for ln in str(e).splitlines() if "GLOBAL" in ln or "Unsupported" in ln]
        reason = lines[0].rstrip(".") if lines else "unsupported object"
        raise CheckpointError(
            f"refusing to unpickle {str(p)!r}: it holds objects beyond tensors and plain containers, and loading "
            f"them could run arbitrary code ({reason}). Re-save the weights as a state dict or .safetensors."
        ) from None
    except (RuntimeError, OSError, EOFError, ValueError) as e:
        raise CheckpointError(f"could not read {str(p)!r} as a PyTorch checkpoint: {e}") from e
    return _unwrap(obj, p)


def _unwrap(obj: object, p: Path) -> dict[str, Tensor]:
    """Accept a bare state dict or one nested under ``state_dict``/``model_state_dict``/``model``."""
    if isinstance(obj, dict) and not all(isinstance(v, Tensor) for v in obj.values()):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"checkpoint {str(p)!r} is not a state dict (a mapping of parameter names to tensors)")
    if all(k.startswith("module.") for k in obj):  # saved from DataParallel/DDP
        obj = {k.removeprefix("module."): v for k, v in obj.items()}
    return obj


def _first(keys: list[str]) -> str:
    more = f" (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else ""
    return ", ".join(keys[:_SHOW]) + more


def check_state_dict(model: nn.Module, state: dict[str, Tensor], what: str = "the model") -> None:
    """Raise :class:`CheckpointError` naming missing/unexpected keys and shape mismatches, if any."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} {tuple(state[k].shape)} in file vs {tuple(v.shape)} in model"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    found = {"missing keys": missing, "unexpected keys": unexpected, "shape mismatches": shapes}
    problems = [f"{label}: {_first(keys)}" for label, keys in found.items() if keys]
    if problems:
        raise CheckpointError(f"checkpoint does not fit {what}; " + "; ".join(problems))


def load_checkpoint(model: nn.Module, path: str | os.PathLike[str], what: str | None = None) -> nn.Module:
    """Load a local state dict into ``model`` strictly (every key and shape must match).

    torch's weights-only unpickler warns (two lines on stderr) about a pickle protocol it was not written for
    before it refuses the file; the refusal is our one line, so that warning is silenced here.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"(?s).*pickle protocol", category=UserWarning)
        state = read_state_dict(path)
    state = fit_prefixes(model, state)
    check_state_dict(model, state, what or type(model).__name__)
    model.load_state_dict(state)
    return model


COMMON_PREFIXES = ("module.", "model.", "_orig_mod.", "net.", "backbone.", "module.model.", "model.module.")


def fit_prefixes(model: nn.Module, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """``state`` with a common wrapper prefix (``module.``, ``model.`` ...) removed or added where that makes more
    of its keys those of ``model`` (DataParallel, Lightning, ``torch.compile``, a wrapper class)."""
    want = set(model.state_dict())
    if set(state) == want:
        return state
    variants = []
    for p in COMMON_PREFIXES:
        if all(k.startswith(p) for k in state):
            variants.append({k.removeprefix(p): v for k, v in state.items()})
        if all(k.startswith(p) for k in want):
            variants.append({p + k: v for k, v in state.items()})
    return max([state, *variants], key=lambda v: len(want & set(v)))  # the closest, for a readable diff

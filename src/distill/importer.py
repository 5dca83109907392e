"""``distill import``: a teacher trained elsewhere becomes a model directory (``model.json`` + safetensors + hashes).

Sources (exactly one):

* ``arch`` + ``weights``: the user's own ``nn.Module`` (``path/to/file.py:Class`` or ``package.module:Class``) built
  with ``arch_args``, then a state dict or a full checkpoint (``state_dict``/``model`` inside) loaded strictly from
  ``.safetensors`` or ``.pt``/``.pth``/``.bin``/``.ckpt`` read with ``torch.load(weights_only=True)``; wrapper prefixes
  (``module.``, ``model.`` ...) are matched, and whatever still differs is named as missing / unexpected / shape.
* ``torchvision`` / ``timm`` + ``weights``: a library architecture by name (nothing is downloaded).
* ``onnx``: an ONNX classifier, run by onnxruntime as a black box (logits only).
* ``hf``: a local Hugging Face image-classification folder (``config.json`` + weights); needs ``transformers``.

The model's preprocessing (input shape, mean, std, channel order) is recorded, so that it is applied to whatever
data the model is later fed (:mod:`distill.models.preprocess`). Defaults come from ``dataset``; explicit values
win, since a teacher trained elsewhere often used another normalisation.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distill.artifacts import read_model_spec, save_model, sha256_file
from distill.data.base import load_dataset
from distill.errors import CheckpointError, ConfigError, DistillError
from distill.models import foreign
from distill.models.adapters import load_checkpoint
from distill.models.zoo import create_model
from distill.workflow import rundir


def import_teacher(
    out: str | Path,
    *,
    weights: str | Path | None = None,
    arch: str | None = None,
    arch_args: dict[str, Any] | None = None,
    torchvision: str | None = None,
    timm: str | None = None,
    onnx: str | Path | None = None,
    hf: str | Path | None = None,
    dataset: str | None = None,
    data_root: str | None = None,
    data_options: dict[str, Any] | None = None,
    num_classes: int | None = None,
    input_shape: Sequence[int] | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    classes: Sequence[str] | None = None,
    channel_order: str = "rgb",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write the model directory ``out`` and return its ``model.json`` (see the module doc)."""
    chosen = [n for n, v in (("arch", arch), ("torchvision", torchvision), ("timm", timm), ("onnx", onnx), ("hf", hf))
              if v]  # fmt: skip
    if len(chosen) != 1:
        raise ConfigError(
            "give exactly one source of the model (--arch, --torchvision, --timm, --onnx or --hf), got "
            f"{chosen or 'none'}"
        )
    if (arch or torchvision or timm) and not weights:
        raise ConfigError(f"--{chosen[0]} needs --weights: a state dict (.pt/.pth/.safetensors) of that architecture")
    if (onnx or hf) and weights:
        raise ConfigError(f"--{chosen[0]} carries its own weights; drop --weights")
    if channel_order not in ("rgb", "bgr"):
        raise ConfigError(f"channel order must be 'rgb' or 'bgr', got {channel_order!r}")
    inputs = [("the weights", weights), ("the ONNX model", onnx), ("the Hugging Face folder", hf)]
    if arch and foreign.is_file_ref(foreign.split_ref(arch)[0]):
        inputs.append(("the architecture file", foreign.split_ref(arch)[0]))
    rundir.check(out, kind="model", overwrite=overwrite, inputs=inputs)

    base, given = _describe(dataset, data_root, data_options or {}, num_classes, input_shape, mean, std, classes)
    info = {**base, **given}
    kwargs = dict(arch_args or {})
    source: dict[str, Any] = {"kind": chosen[0]}
    if onnx:
        data = Path(onnx).read_bytes() if Path(onnx).is_file() else None
        if data is None:
            raise CheckpointError(f"ONNX model {onnx} does not exist")
        graph = foreign.inspect_onnx(data)
        info = _merge_known(info, graph["input_shape"], graph["num_classes"], "the ONNX model")
        model: nn.Module = foreign.OnnxTeacher.from_bytes(data)
        name, kwargs = "onnx:model", {"nbytes": len(data), "batch": graph["batch"]}
        source.update(file=str(Path(onnx).resolve()), sha256=foreign.sha256_bytes(data))
    elif hf:
        model, name, kwargs, info = _hugging_face(Path(hf), base, given)
        source.update(folder=str(Path(hf).resolve()))
    else:
        if arch:
            where = foreign.split_ref(arch)[0]
            code = foreign.code_source(arch) if not foreign.is_file_ref(where) or Path(where).is_file() else None
            name = f"class:{code['class'] if code else arch}"
            source["code"] = code
        else:
            name = f"torchvision:{torchvision}" if torchvision else f"timm:{timm}"
        info = _need_shape(info)
        channels = info["input_shape"][0]
        model = create_model(name, num_classes=info.get("num_classes") or 1000, in_channels=channels, **kwargs)
        load_checkpoint(model, weights, what=f"{name.split(':', 1)[0]} {arch or torchvision or timm}")  # type: ignore[arg-type]
        source.update(weights=str(Path(weights).resolve()), weights_sha256=sha256_file(Path(weights)))  # type: ignore[arg-type]
    info = _need_shape(info)
    info["num_classes"] = _check_outputs(model, info)
    spec = _spec(name, kwargs, info, channel_order, source)
    _write(Path(out), model, spec)
    return read_model_spec(out)


def _describe(
    dataset: str | None,
    root: str | None,
    options: dict[str, Any],
    num_classes: int | None,
    input_shape: Sequence[int] | None,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
    classes: Sequence[str] | None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(from the dataset, given explicitly)``: what the teacher was trained on; the given values win later."""
    info: dict[str, Any] = {}
    if dataset:
        data = load_dataset(dataset, root=root, **options)
        info = {
            "num_classes": data.num_classes,
            "classes": list(data.classes),
            "input_shape": [data.in_channels, *data.image_size],
            "mean": list(data.mean),
            "std": list(data.std),
            "dataset": {"name": data.name, "fingerprint": data.fingerprint()},
        }
    raw = {"num_classes": num_classes, "classes": classes, "input_shape": input_shape, "mean": mean, "std": std}
    given = {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in raw.items() if v is not None}
    if classes is not None and num_classes is None:
        given["num_classes"] = len(classes)
    shape = given.get("input_shape")
    if shape is not None and (len(shape) != 3 or any(int(d) < 1 for d in shape)):
        raise ConfigError(f"input shape must be C,H,W with positive sizes, e.g. 1,28,28; got {shape}")
    return info, given


def _merge_known(info: dict[str, Any], shape: list[int], k: int, what: str) -> dict[str, Any]:
    """The graph's own input shape and class count win over the dataset's; a clash with explicit ones is refused."""
    if info.get("num_classes") not in (None, k):
        raise ConfigError(f"{what} has {k} classes but {info['num_classes']} were given (--num-classes/--dataset)")
    info = {**info, "num_classes": k, "input_shape": list(shape)}
    if len(info.get("classes") or []) not in (0, k):
        info.pop("classes")
    return info


def _need_shape(info: dict[str, Any]) -> dict[str, Any]:
    missing = [f"--{k.replace('_', '-')}" for k in ("input_shape", "mean", "std") if info.get(k) is None]
    if missing:
        raise ConfigError(
            f"say what the teacher was trained on: --dataset NAME, or {', '.join(missing)} (its input C,H,W and the "
            "per-channel mean and std of its normalisation on the [0, 1] scale; 0 and 1 for none)"
        )
    c = int(info["input_shape"][0])
    for key in ("mean", "std"):
        if len(info[key]) == 1 and c > 1:
            info[key] = info[key] * c
        if len(info[key]) != c:
            raise ConfigError(f"--{key} needs {c} value(s), one per input channel, got {info[key]}")
    if any(float(s) <= 0 for s in info["std"]):
        raise ConfigError(f"--std values must be > 0, got {info['std']}")
    info["input_shape"] = [int(d) for d in info["input_shape"]]
    return info


def _check_outputs(model: nn.Module, info: dict[str, Any]) -> int:
    """Run the model on a zero batch of its input shape; its output must be ``(B, num_classes)``."""
    model.eval()
    shape = info["input_shape"]
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, *shape))
    except Exception as e:
        raise ConfigError(f"the model cannot take input of shape {shape}: {type(e).__name__}: {e}") from e
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(f"the model's forward returns {got}; a teacher must return logits of shape (batch, classes)")
    k = int(out.shape[1])
    if info.get("num_classes") not in (None, k):
        raise ConfigError(f"the model outputs {k} values per image but {info['num_classes']} classes were given")
    return k


def _spec(name: str, kwargs: dict, info: dict[str, Any], order: str, source: dict[str, Any]) -> dict[str, Any]:
    k = info["num_classes"]
    classes = info.get("classes") or [str(i) for i in range(k)]
    if len(classes) != k:
        raise ConfigError(f"{len(classes)} class names given for {k} classes")
    try:
        json.dumps(kwargs)
    except TypeError as e:
        raise ConfigError(f"architecture arguments must be JSON values (numbers, strings, lists, objects): {e}") from e
    spec = {
        "model": name,
        "kwargs": kwargs,
        "num_classes": k,
        "in_channels": info["input_shape"][0],
        "classes": list(classes),
        "preprocessing": {
            "input_shape": info["input_shape"],
            "scale": 1 / 255,
            "mean": [float(v) for v in info["mean"]],
            "std": [float(v) for v in info["std"]],
            "channel_order": order,
        },
        "source": {k: v for k, v in source.items() if v is not None},
        "method": "imported",
    }
    if "dataset" in info:
        spec["dataset"] = info["dataset"]
    return spec


def _write(out: Path, model: nn.Module, spec: dict[str, Any]) -> None:
    """Write into a hidden sibling, then move it into place: a failure leaves ``out`` as it was."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=".distill-import-", dir=out.parent))
    try:
        save_model(staged, model, spec)
        rundir.replace_with(out, staged)
    finally:
        if staged.exists():
            shutil.rmtree(staged, ignore_errors=True)


def _hugging_face(folder: Path, base: dict, given: dict) -> tuple[nn.Module, str, dict, dict[str, Any]]:
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{folder} is not a Hugging Face model folder (no config.json)")
    try:
        import transformers
    except ImportError as e:
        raise DistillError("importing a Hugging Face model needs transformers: pip install transformers") from e
    try:
        cfg = transformers.AutoConfig.from_pretrained(folder, local_files_only=True)
        model = foreign.HFClassifier(cfg.to_dict())
        model.model = transformers.AutoModelForImageClassification.from_pretrained(folder, local_files_only=True)
    except (ValueError, OSError, KeyError) as e:  # no model_type, no weights, not an image classifier
        raise CheckpointError(f"{folder}: transformers cannot load it as an image classifier ({e})") from e
    pre_file = folder / "preprocessor_config.json"
    pre = json.loads(pre_file.read_text()) if pre_file.is_file() else {}
    size = pre.get("size", {})
    side = size.get("height") or size.get("shortest_edge") if isinstance(size, dict) else size
    labels = getattr(cfg, "id2label", None) or {}
    defaults = {
        "input_shape": [int(getattr(cfg, "num_channels", 3)), int(side), int(side)] if side else None,
        "mean": pre.get("image_mean"),
        "std": pre.get("image_std"),
        "num_classes": int(cfg.num_labels),
        "classes": [labels[i] for i in sorted(labels)] if labels else None,
    }
    merged = {**base, **{k: v for k, v in defaults.items() if v is not None}, **given}
    return model, f"hf:{type(cfg).__name__}", {"config": cfg.to_dict()}, merged

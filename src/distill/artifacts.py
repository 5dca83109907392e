"""Model directories and run manifests, one layer above :mod:`distill.io` (which holds the bytes-on-disk helpers,
re-exported here).

* A **model directory** holds ``model.safetensors`` and ``model.json`` (architecture, arguments, class names,
  preprocessing) — enough to rebuild and run the model without the recipe.
* **Model formats**: :func:`model_format` tells from ``model.json`` which format a directory is (``plain``,
  ``foreign``, ``pruned``, ``int8``, ``text``); each format's package registers its loader with
  :func:`register_format`, and :func:`load_model` dispatches to it without knowing any feature package. The one
  place that says which module registers a built-in format is :data:`FORMAT_PROVIDERS` (imported on first use).
* ``manifest.json`` lists the sha256 of every file of a run, the versions and the metrics; :func:`verify_manifest`
  refuses a run whose files no longer match.
"""

from __future__ import annotations

import importlib
import json
import platform
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy
import safetensors
import torch
import torchvision
from torch import nn

import distill
from distill.errors import CheckpointError
from distill.io import (  # noqa: F401  (re-exported: the names every caller used from here)
    atomic_write,
    flatten_state,
    load_checkpoint,
    load_weights,
    save_checkpoint,
    save_weights,
    sha256_file,
    unflatten_state,
    write_json,
)
from distill.trust import verify_model

# -- model formats ------------------------------------------------------------------------------------------------

ModelLoader = Callable[[Path, dict[str, Any], "str | torch.device"], nn.Module]
SpecCheck = Callable[[dict[str, Any], str], None]

FOREIGN_PREFIXES = ("class", "onnx", "hf")  # model names of foreign models: a user's class, an ONNX graph, HF

# Which module registers each built-in format (it calls register_format when imported). The only list of them:
# load_model imports the module the first time it meets that format, so reading a plain model never imports the
# compression or text packages, and this module imports none of them.
FORMAT_PROVIDERS = {
    "plain": "distill.models.zoo",
    "foreign": "distill.models.foreign",
    "pruned": "distill.compress.prune",
    "int8": "distill.compress.quantize",
    "text": "distill.text.saving",
}


@dataclass(frozen=True)
class ModelFormat:
    name: str
    load: ModelLoader  # (directory, spec, device) -> the model with its weights, on device
    check: SpecCheck | None = None  # (spec, directory): a base format's refusal of a spec, run by read_model_spec


_FORMATS: dict[str, ModelFormat] = {}


def register_format(name: str, load: ModelLoader, check: SpecCheck | None = None) -> None:
    """Make ``load`` the loader of model directories of format ``name`` (see :func:`model_format`)."""
    _FORMATS[name] = ModelFormat(name, load, check)


def base_format(spec: dict[str, Any]) -> str:
    """``foreign`` (``class:``, ``onnx:``, ``hf:`` names) or ``plain``: what builds the architecture ``model.json``
    names; the wrapping formats (int8, text, pruned) build on it. Its ``check`` runs on every read of the spec."""
    prefix, colon, _ = str(spec.get("model", "")).partition(":")
    return "foreign" if colon and prefix in FOREIGN_PREFIXES else "plain"


def model_format(spec: dict[str, Any]) -> str:
    """The format of a ``model.json``: int8 (quantized), text, pruned, else the base format (foreign or plain)."""
    if "quantization" in spec:  # int8: re-created from the stored float weights and calibration statistics
        return "int8"
    if spec.get("task") == "text":  # transformers / TextCNN / BiLSTM, rebuilt from the recorded configuration
        return "text"
    if spec.get("architecture"):  # a pruned model: layers of the recorded shapes replace the base ones
        return "pruned"
    return base_format(spec)


def _format(name: str) -> ModelFormat:
    if name not in _FORMATS and name in FORMAT_PROVIDERS:
        importlib.import_module(FORMAT_PROVIDERS[name])  # registers it
    if name not in _FORMATS:
        raise CheckpointError(f"no loader is registered for model format {name!r}; known: {sorted(_FORMATS)}")
    return _FORMATS[name]


MODEL_FORMAT = 1  # the version of model.json's layout that save_model writes (absent in files written before it)


def save_model(directory: Path, model: nn.Module, spec: dict[str, Any]) -> Path:
    """Write ``model.safetensors`` + ``model.json`` into ``directory``. ``spec`` must name the architecture.

    ``model.json`` gets ``format`` (:data:`MODEL_FORMAT`) and the weights' ``sha256``, overriding any in ``spec``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    weights = directory / "model.safetensors"
    save_weights(weights, state, metadata={"distill_model": json.dumps(spec)})
    write_json(directory / "model.json", {**spec, "format": MODEL_FORMAT, "sha256": sha256_file(weights)})
    return weights


def read_model_spec(directory: str | Path) -> dict[str, Any]:
    """``model.json`` of a model directory, after checking the weights against the sha256 it records.

    Every ``model.json`` distill ever wrote records ``sha256`` (files from before the ``format`` field included),
    so a missing hash is refused for every format rather than silently skipping the weights check.
    """
    directory = Path(directory)
    spec_path, weights = directory / "model.json", directory / "model.safetensors"
    if not spec_path.is_file() or not weights.is_file():
        raise CheckpointError(f"{directory} is not a model directory (expected model.json and model.safetensors)")
    try:
        spec = json.loads(spec_path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{spec_path} is not UTF-8 text ({e}); expected the JSON that distill writes") from e
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{spec_path} is not valid JSON ({e})") from e
    if not isinstance(spec, dict):
        raise CheckpointError(f"{spec_path} holds a JSON {type(spec).__name__}; expected an object with 'model'")
    if not isinstance(spec.get("model"), str) or not spec["model"]:
        raise CheckpointError(f"{spec_path} does not name the architecture ('model' is missing or not a string)")
    version = spec.get("format", MODEL_FORMAT)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(f"{spec_path}: 'format' must be a positive integer, got {version!r}")
    if version > MODEL_FORMAT:
        raise CheckpointError(
            f"{spec_path} is model format {version}, newer than this distill reads ({MODEL_FORMAT}); upgrade distill"
        )
    digest = spec.get("sha256")
    if not isinstance(digest, str) or not digest:
        raise CheckpointError(
            f"{spec_path} records no sha256 of model.safetensors, so the weights cannot be checked; "
            "distill always writes one: the file was edited or not made by distill (save the model again)"
        )
    if digest != sha256_file(weights):
        raise CheckpointError(f"{weights} does not match the sha256 in {spec_path}: the file was changed or corrupted")
    check = _format(base_format(spec)).check  # e.g. a user's class: its file must be the one imported
    if check is not None:
        check(spec, str(directory))
    return spec


def load_model(
    directory: Path,
    device: str | torch.device = "cpu",
    public_key: str | Path | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model saved by :func:`save_model`; its weights must match the recorded sha256 and architecture.

    With ``public_key``, the directory must carry a valid signature by that key (see :mod:`distill.trust`), checked
    before anything is read.
    """
    directory = Path(directory)
    if public_key is not None:
        verify_model(directory, public_key)
    spec = read_model_spec(directory)
    return _format(model_format(spec)).load(directory, spec, device), spec


def versions() -> dict[str, str]:
    return {
        "distill": distill.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": numpy.__version__,
        "safetensors": safetensors.__version__,
        "platform": platform.platform(),
    }


def write_manifest(run_dir: Path, extra: dict[str, Any], skip: Iterable[str] = ("manifest.json",)) -> Path:
    """sha256 of every file under ``run_dir`` (checkpoints and logs included), versions and ``extra``."""
    run_dir = Path(run_dir)
    skip = set(skip)
    files = {
        str(p.relative_to(run_dir)): sha256_file(p)
        for p in sorted(run_dir.rglob("*"))
        if p.is_file() and p.name not in skip and not p.name.startswith(".")
    }
    path = run_dir / "manifest.json"
    write_json(path, {"format": "distill-manifest/1", "versions": versions(), **extra, "files": files})
    return path


def verify_manifest(run_dir: Path) -> None:
    """Raise :class:`CheckpointError` if any file listed in the manifest is missing or changed."""
    run_dir = Path(run_dir)
    path = run_dir / "manifest.json"
    if not path.is_file():
        raise CheckpointError(f"{run_dir} has no manifest.json")
    files = json.loads(path.read_text())["files"]
    for rel, digest in files.items():
        p = run_dir / rel
        if not p.is_file():
            raise CheckpointError(f"{p} is listed in the manifest but missing")
        if sha256_file(p) != digest:
            raise CheckpointError(f"{p} does not match its sha256 in the manifest: changed or corrupted")

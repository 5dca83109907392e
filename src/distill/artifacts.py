"""Everything that reads or writes weights: safetensors only, written atomically, described by a manifest.

* A **model directory** holds ``model.safetensors`` and ``model.json`` (architecture, arguments, class names,
  preprocessing) — enough to rebuild and run the model without the recipe.
* A **checkpoint** (for resuming) is one safetensors file: every tensor of a nested state (model, optimizer,
  scheduler, RNG states ...) stored by its path, and the non-tensor rest as JSON in the header. Nothing is pickled,
  so loading a checkpoint can never run code.
* ``manifest.json`` lists the sha256 of every file of a run, the versions and the metrics; :func:`verify_manifest`
  refuses a run whose files no longer match.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from distill.errors import CheckpointError, DistillError

_TENSOR = "__tensor__"


def atomic_write(path: Path, write: Any) -> None:
    """Write via a temporary file in the same directory and ``os.replace``: a crash leaves the old file intact."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) or "No space left" in str(e) or "os error 28" in str(e):
            reason = getattr(e, "strerror", None) or str(e)
            kept = "the previous version is intact" if path.exists() else "nothing was written"
            raise DistillError(f"could not write {path} ({reason}); {kept}") from e
        raise


def write_json(path: Path, obj: Any) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n"))


def flatten_state(obj: Any, prefix: str = "") -> tuple[dict[str, Tensor], Any]:
    """Split a nested state into ``{path: tensor}`` and a JSON tree with ``{"__tensor__": path}`` placeholders."""
    tensors: dict[str, Tensor] = {}

    def walk(o: Any, path: str) -> Any:
        if isinstance(o, Tensor):
            key = path or "root"
            tensors[key] = o.detach().cpu().contiguous()
            return {_TENSOR: key}
        if isinstance(o, dict):
            return {"__dict__": [[_key(k), walk(v, f"{path}.{k}" if path else str(k))] for k, v in o.items()]}
        if isinstance(o, (list, tuple)):
            items = [walk(v, f"{path}.{i}" if path else str(i)) for i, v in enumerate(o)]
            return {"__tuple__": items} if isinstance(o, tuple) else items
        if o is None or isinstance(o, (bool, int, float, str)):
            return o
        raise TypeError(f"cannot store a {type(o).__name__} at {path!r} in a checkpoint")

    return tensors, walk(obj, prefix)


def _key(k: Any) -> Any:
    if isinstance(k, (str, int)):
        return k
    raise TypeError(f"checkpoint dict keys must be str or int, got {type(k).__name__}")


def unflatten_state(tensors: dict[str, Tensor], tree: Any) -> Any:
    if isinstance(tree, dict):
        if _TENSOR in tree:
            return tensors[tree[_TENSOR]]
        if "__dict__" in tree:
            return {k: unflatten_state(tensors, v) for k, v in tree["__dict__"]}
        if "__tuple__" in tree:
            return tuple(unflatten_state(tensors, v) for v in tree["__tuple__"])
    if isinstance(tree, list):
        return [unflatten_state(tensors, v) for v in tree]
    return tree


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Store a nested training state in one safetensors file, atomically."""
    tensors, tree = flatten_state(state)
    atomic_write(Path(path), lambda tmp: save_file(tensors, tmp, metadata={"distill_state": json.dumps(tree)}))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`; a truncated or foreign file is refused."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path} is corrupted or truncated ({e}); delete it or restore a copy") from e
    if "distill_state" not in meta:
        raise CheckpointError(f"{path} is a safetensors file but not a distill checkpoint (no distill_state header)")
    return unflatten_state(tensors, json.loads(meta["distill_state"]))


MODEL_FORMAT = 1  # the version of model.json's layout that save_model writes (absent in files written before it)


def save_model(directory: Path, model: nn.Module, spec: dict[str, Any]) -> Path:
    """Write ``model.safetensors`` + ``model.json`` into ``directory``. ``spec`` must name the architecture.

    ``model.json`` gets ``format`` (:data:`MODEL_FORMAT`) and the weights' ``sha256``, overriding any in ``spec``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    weights = directory / "model.safetensors"
    atomic_write(weights, lambda tmp: save_file(state, tmp, metadata={"distill_model": json.dumps(spec)}))
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
    if spec["model"].startswith("class:"):  # a user's class in a file: the file must be the one imported
        from distill.models.foreign import check_code

        check_code(spec, str(directory))
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
    from distill.models.zoo import create_model

    directory = Path(directory)
    if public_key is not None:
        from distill.trust import verify_model

        verify_model(directory, public_key)
    spec = read_model_spec(directory)
    weights = directory / "model.safetensors"
    if "quantization" in spec:  # int8: re-created from the stored float weights and calibration statistics
        from distill.compress.quantize import load_quantized

        return load_quantized(directory)[0], spec
    if spec.get("task") == "text":  # transformers / TextCNN / BiLSTM, rebuilt from the recorded configuration
        from distill.text.saving import text_model_from_spec

        model = text_model_from_spec(spec)
        load_weights(model, weights, what=f"text model {spec.get('model')} ({directory})")
        return model.to(device), spec
    model = create_model(
        spec["model"], num_classes=spec["num_classes"], in_channels=spec["in_channels"], **spec.get("kwargs", {})
    )
    if spec.get("architecture"):  # a pruned model: layers of the recorded shapes replace the base ones
        from distill.compress.prune import apply_patch

        apply_patch(model, spec["architecture"])
    load_weights(model, weights, what=f"{spec['model']} ({directory})")
    return model.to(device), spec


def load_weights(model: nn.Module, path: Path, what: str = "the model") -> None:
    """Load a safetensors state dict, refusing one that does not fit ``model`` with a message naming both sides."""
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({e})") from e
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {missing[:3]}{' ...' if len(missing) > 3 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:3]}{' ...' if len(unexpected) > 3 else ''}")
        if wrong:
            parts.append(f"shape mismatch {wrong[:2]}{' ...' if len(wrong) > 2 else ''}")
        raise CheckpointError(f"weights in {path} do not fit {what}: {'; '.join(parts)}")
    model.load_state_dict(state)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def versions() -> dict[str, str]:
    import numpy
    import safetensors
    import torchvision

    import distill

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

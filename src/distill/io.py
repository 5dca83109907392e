"""The bottom layer: bytes on disk. Atomic writes, JSON, sha256, safetensors weights and checkpoints.

Imports nothing of distill but :mod:`distill.errors`, so every other module may use it (the layering is checked by
``tests/test_layers.py``). Model directories (``model.json``) and run manifests are one layer up, in
:mod:`distill.artifacts`.

A **checkpoint** (for resuming) is one safetensors file: every tensor of a nested state (model, optimizer,
scheduler, RNG states ...) stored by its path, and the non-tensor rest as JSON in the header. Nothing is pickled,
so loading a checkpoint can never run code.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from safetensors import SafetensorError, safe_open
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


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save_weights(path: Path, state: dict[str, Tensor], metadata: dict[str, str] | None = None) -> None:
    """A flat ``{name: tensor}`` state as one safetensors file, atomically."""
    atomic_write(Path(path), lambda tmp: save_file(state, tmp, metadata=metadata))


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
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path} is corrupted or truncated ({e}); delete it or restore a copy") from e
    if "distill_state" not in meta:
        raise CheckpointError(f"{path} is a safetensors file but not a distill checkpoint (no distill_state header)")
    return unflatten_state(tensors, json.loads(meta["distill_state"]))


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

"""Models defined outside distill: a user's own ``nn.Module`` class, an ONNX file, a Hugging Face image classifier.

Their ``model.json`` names them like the library models of :mod:`distill.models.adapters`, so that
:func:`distill.models.zoo.create_model` rebuilds them wherever a model directory is loaded:

* ``class:<module.path>:<ClassName>`` or ``class:</abs/path/file.py>:<ClassName>`` with the constructor's keyword
  arguments as ``kwargs``: the class is imported (the file is executed: it is the user's own code) and called with
  exactly those arguments. A file's sha256 is recorded in ``model.json`` (``source.code``) and checked before the
  file is run (:func:`check_code`), so a changed file is named instead of silently building something else.
* ``onnx:model``: an ONNX graph run by onnxruntime as a black box (logits only). Its bytes are stored as a uint8
  tensor in ``model.safetensors``, so the usual sha256 and signatures cover it.
* ``hf:<ConfigClass>``: a ``transformers`` image classifier rebuilt from the recorded config (``kwargs.config``);
  its forward returns the logits tensor.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from distill.artifacts import FOREIGN_PREFIXES, load_weights, register_format
from distill.errors import CheckpointError, ConfigError, DistillError
from distill.models.adapters import _stages

PREFIXES = FOREIGN_PREFIXES  # ("class", "onnx", "hf"): model.json names these in distill.artifacts


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def split_ref(ref: str) -> tuple[str, str]:
    """``"pkg.mod:Net"`` / ``"path/net.py:Net"`` -> (where, class name); refused without exactly one class name."""
    where, sep, cls = ref.rpartition(":")
    if not sep or not where or not cls.isidentifier():
        raise ConfigError(f"architecture {ref!r} must be 'path/to/file.py:ClassName' or 'package.module:ClassName'")
    return where, cls


def is_file_ref(where: str) -> bool:
    return where.endswith(".py") or "/" in where or "\\" in where


def _import_file(path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(f"architecture file {path} does not exist")
    digest = sha256_bytes(path.read_bytes())
    name = f"distill_user_{path.stem}_{digest[:12]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"architecture file {path} cannot be imported as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # classes pickle and deep-copy by their module's name
    sys.path.insert(0, str(path.parent))  # the file may import its neighbours
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[name]
        raise ConfigError(f"architecture file {path} failed to import: {type(e).__name__}: {e}") from e
    finally:
        sys.path.remove(str(path.parent))
    return module


def resolve_class(ref: str) -> type[nn.Module]:
    """The ``nn.Module`` subclass ``ref`` names (a file is executed, a module imported); one-line errors."""
    where, cls_name = split_ref(ref)
    if is_file_ref(where):
        module = _import_file(Path(where).expanduser().resolve())
    else:
        try:
            module = importlib.import_module(where)
        except ImportError as e:
            raise ConfigError(
                f"architecture {ref!r}: module {where!r} does not import ({e}); give an installed module or a "
                "path to a .py file"
            ) from e
        except Exception as e:  # the user's module raised while being imported
            raise ConfigError(f"architecture {ref!r}: importing {where!r} failed: {type(e).__name__}: {e}") from e
    cls = getattr(module, cls_name, None)
    if cls is None:
        found = sorted(n for n, v in vars(module).items() if isinstance(v, type) and issubclass(v, nn.Module))
        raise ConfigError(f"architecture {ref!r}: {where} has no {cls_name!r}; its nn.Module classes: {found}")
    if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
        raise ConfigError(f"architecture {ref!r}: {cls_name} is a {type(cls).__name__}, not an nn.Module class")
    return cls


def build_class(ref: str, kwargs: dict[str, Any]) -> nn.Module:
    """Instantiate ``ref`` with ``kwargs``; arguments that do not fit its signature are named in one line."""
    cls = resolve_class(ref)
    try:
        sig = inspect.signature(cls)
        sig.bind(**kwargs)
    except TypeError as e:
        params = [p for p in sig.parameters.values() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        takes = ", ".join(p.name + ("" if p.default is p.empty else "=…") for p in params) or "nothing"
        raise ConfigError(
            f"{cls.__name__}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())}) does not fit its signature "
            f"({e}); it takes: {takes}"
        ) from e
    except ValueError:  # no signature (a C extension): let the call decide
        pass
    try:
        return cls(**kwargs)
    except Exception as e:
        raise ConfigError(f"{cls.__name__}(**{kwargs}) failed: {type(e).__name__}: {e}") from e


def code_source(ref: str) -> dict[str, Any]:
    """What ``model.json`` records about the class: ``{"class": ref, "file", "sha256"}`` or ``{"class", "module"}``."""
    where, cls = split_ref(ref)
    if is_file_ref(where):
        path = Path(where).expanduser().resolve()
        return {"class": f"{path}:{cls}", "file": str(path), "sha256": sha256_bytes(path.read_bytes())}
    return {"class": ref, "module": where}


def check_code(spec: dict[str, Any], where: str) -> None:
    """Refuse a model whose class file is gone or changed since it was imported (before the file is run)."""
    code = (spec.get("source") or {}).get("code") if isinstance(spec.get("source"), dict) else None
    if not isinstance(code, dict) or "file" not in code:
        return
    path = Path(code["file"])
    if not path.is_file():
        raise CheckpointError(f"{where}: its class is defined in {path}, which no longer exists; restore that file")
    if sha256_bytes(path.read_bytes()) != code.get("sha256"):
        raise CheckpointError(
            f"{where}: {path} changed since the model was imported (sha256 differs from model.json); restore it, "
            "or import the weights again with `distill import`"
        )


# --- ONNX ------------------------------------------------------------------------------------------------------------


def _ort() -> Any:
    try:
        import onnxruntime
    except ImportError as e:
        raise DistillError("ONNX teachers need onnxruntime: pip install 'distill[compress]'") from e
    return onnxruntime


class OnnxTeacher(nn.Module):
    """An ONNX classifier run by onnxruntime on the CPU: ``(B, C, H, W)`` float -> ``(B, K)`` logits, no gradients.

    A black box: no parameters, no layers, so methods that read the teacher's features cannot use it.
    """

    black_box = True
    feature_layers: list[str] = []  # noqa: RUF012
    penultimate = None
    classifier = None

    def __init__(self, nbytes: int, batch: int | None = None) -> None:
        super().__init__()
        self.register_buffer("onnx", torch.zeros(int(nbytes), dtype=torch.uint8))
        self.batch = batch  # a fixed batch size of the graph (None: dynamic)
        self._session: Any = None
        # one empty parameter, so that code asking a model for its device still gets an answer
        self.anchor = nn.Parameter(torch.zeros(0), requires_grad=False)

    @classmethod
    def from_bytes(cls, data: bytes) -> OnnxTeacher:
        info = inspect_onnx(data)
        model = cls(len(data), info["batch"])
        model.onnx.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
        return model

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._session = None

    def __deepcopy__(self, memo: dict) -> OnnxTeacher:
        new = OnnxTeacher(self.onnx.numel(), self.batch)
        new.load_state_dict(self.state_dict())
        return new

    def session(self) -> Any:
        if self._session is None:
            ort = _ort()
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = max(1, torch.get_num_threads())
            self._session = ort.InferenceSession(
                self.onnx.cpu().numpy().tobytes(), opts, providers=["CPUExecutionProvider"]
            )
        return self._session

    def forward(self, x: Tensor) -> Tensor:
        sess = self.session()
        name = sess.get_inputs()[0].name
        arr = x.detach().float().cpu().numpy()
        step = self.batch or len(arr)
        outs = []
        for start in range(0, len(arr), max(1, step)):
            chunk = arr[start : start + step]
            pad = step - len(chunk)
            if self.batch and pad:
                chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), dtype=chunk.dtype)])
            out = sess.run(None, {name: np.ascontiguousarray(chunk)})[0]
            outs.append(out[: len(chunk) - pad] if pad else out)
        return torch.from_numpy(np.concatenate(outs)).float().to(x.device)


def inspect_onnx(data: bytes) -> dict[str, Any]:
    """Input shape, class count and fixed batch size of an ONNX classifier; refuses graphs distill cannot feed."""
    ort = _ort()
    try:
        sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise CheckpointError(f"onnxruntime cannot load the ONNX model: {' '.join(str(e).split())}") from e
    inputs, outputs = sess.get_inputs(), sess.get_outputs()
    if len(inputs) != 1:
        raise CheckpointError(f"the ONNX model takes {len(inputs)} inputs; a teacher takes one image batch")
    shape, out = list(inputs[0].shape), list(outputs[0].shape)
    if len(shape) != 4 or not all(isinstance(d, int) for d in shape[1:]):
        raise CheckpointError(f"the ONNX model's input has shape {shape}; expected (batch, C, H, W) with fixed C, H, W")
    if len(out) != 2 or not isinstance(out[1], int):
        raise CheckpointError(
            f"the ONNX model's output has shape {out}: its class count is dynamic or it is not (batch, classes); "
            "export it with a fixed number of classes"
        )
    batch = shape[0] if isinstance(shape[0], int) else None
    return {"input_shape": shape[1:], "num_classes": out[1], "batch": batch}


# --- Hugging Face ----------------------------------------------------------------------------------------------------


class HFClassifier(nn.Module):
    """A ``transformers`` image classifier whose forward returns the logits tensor."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        try:
            import transformers
        except ImportError as e:
            raise DistillError("Hugging Face teachers need transformers: pip install transformers") from e
        transformers.utils.logging.disable_progress_bar()  # no "Loading weights" bars on stderr
        cfg = transformers.AutoConfig.for_model(**config)
        self.model = transformers.AutoModelForImageClassification.from_config(cfg)
        self.classifier_name = None

    def forward(self, x: Tensor) -> Tensor:
        return self.model(pixel_values=x).logits


def annotate_user(model: nn.Module, num_classes: int) -> nn.Module:
    """Infer ``feature_layers`` and ``classifier`` for a user's model without changing it or what its class sets."""
    modules = dict(model.named_modules())
    linears = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
    last = linears[-1] if linears and modules[linears[-1]].out_features == num_classes else None  # type: ignore[union-attr]
    guesses = {"feature_layers": _stages(model, modules), "penultimate": None, "classifier": last}
    for attr, value in guesses.items():
        if hasattr(model, attr):  # the class's own answer (or a submodule of that name) wins
            if attr == "classifier" and isinstance(getattr(model, attr), nn.Module):
                object.__setattr__(model, "classifier_name", last)
            continue
        object.__setattr__(model, attr, value)
    return model


def create(name: str, num_classes: int, in_channels: int, kwargs: dict[str, Any]) -> nn.Module:
    """Build a ``class:``, ``onnx:`` or ``hf:`` model (see the module doc); the data's sizes are not passed on."""
    prefix, _, rest = name.partition(":")
    if prefix == "class":
        return annotate_user(build_class(rest, kwargs), num_classes)
    if prefix == "onnx":
        return OnnxTeacher(**kwargs)
    return HFClassifier(**kwargs)


def _check_format(spec: dict[str, Any], where: str) -> None:
    if spec["model"].startswith("class:"):  # a user's class in a file: the file must be the one imported
        check_code(spec, where)


def _load_format(directory: Path, spec: dict[str, Any], device: str | torch.device) -> nn.Module:
    model = create(spec["model"], spec["num_classes"], spec["in_channels"], spec.get("kwargs", {}))
    load_weights(model, Path(directory) / "model.safetensors", what=f"{spec['model']} ({directory})")
    return model.to(device)


register_format("foreign", _load_format, check=_check_format)  # load_model of a class:/onnx:/hf: model.json

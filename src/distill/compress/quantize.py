"""int8 quantization for the CPU with ``torch.ao.quantization``.

* ``static``: post-training static quantization in FX graph mode (``prepare_fx`` → calibration → ``convert_fx``)
  with the backend's default qconfig mapping (``x86``: per-channel int8 weights, histogram-calibrated uint8
  activations) — for convnets.
* ``dynamic``: int8 weights, activations quantized on the fly (``quantize_dynamic`` on ``nn.Linear``) — for
  Linear-heavy models (MLPs, transformers); no calibration data.
* ``qat``: quantization-aware training (``prepare_qat_fx``, a few epochs of distillation from a float teacher with
  fake quantization in the loop, then ``convert_fx``).

``torch.ao.quantization`` is marked deprecated in favour of torchao (its pt2e flow); in torch 2.14 it still works
and is the only CPU int8 path without an extra dependency, so it is used here with its warning silenced.

**Saving without pickle.** A converted model holds packed int8 weights (``torch.ScriptObject``), which safetensors
cannot store and ``torch.save`` would pickle. What is stored instead is the state of the *prepared* model: the float
weights (conv-BN already fused) plus every observer's statistics (min/max, histograms; for QAT also the learned
scales) — all plain tensors. :func:`load_quantized` prepares the float architecture again, loads that state and
converts: the same int8 model, bit for bit, with no calibration data needed. For deployment, export to ONNX
(:mod:`distill.compress.export`, which also writes an int8 ONNX file).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from distill.artifacts import MODEL_FORMAT, atomic_write, register_format, sha256_file, write_json
from distill.compress.patch import build_from_spec, read_spec
from distill.errors import CheckpointError, ConfigError, DistillError

MODES = ("static", "dynamic", "qat")
QUANT_FORMAT = "distill-quant/1"


@dataclass
class Quantized:
    """An int8 model and what is needed to rebuild it from its float architecture."""

    model: nn.Module  # the converted int8 model (CPU)
    mode: str
    backend: str
    state: dict[str, Tensor] = field(repr=False)  # prepared-model state: float weights + observer statistics
    info: dict[str, Any] = field(default_factory=dict)


@contextmanager
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization is deprecated.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.ao.*")
        warnings.filterwarnings("ignore", message=r".*(reduce_range will be deprecated|quantized tensor creation).*")
        yield


def set_backend(backend: str) -> None:
    """Select the int8 kernels (``x86``, ``fbgemm``, ``qnnpack``, ``onednn``) used to build and run int8 models."""
    engines = [e for e in torch.backends.quantized.supported_engines if e != "none"]
    if backend not in engines:
        raise ConfigError(f"quantization backend {backend!r} is not available here; this torch has {engines}")
    torch.backends.quantized.engine = backend


def check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ConfigError(f"unknown quantization mode {mode!r}; expected one of {list(MODES)}")


def prepare(model: nn.Module, mode: str, backend: str, example_inputs: Tensor) -> nn.Module:
    """Insert observers (static) or fake quantization (qat) into a copy of ``model``, traced by torch.fx."""
    from torch.ao.quantization import get_default_qat_qconfig_mapping, get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_fx, prepare_qat_fx

    check_mode(mode)
    set_backend(backend)
    model = copy.deepcopy(model).cpu()
    example = (example_inputs.cpu(),)
    try:
        with _quiet():
            if mode == "qat":
                return prepare_qat_fx(model.train(), get_default_qat_qconfig_mapping(backend), example)
            return prepare_fx(model.eval(), get_default_qconfig_mapping(backend), example)
    except Exception as e:  # torch.fx raises many kinds for untraceable code
        raise DistillError(
            f"{type(model).__name__} cannot be traced by torch.fx for {mode} quantization "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); use mode=dynamic for its Linear layers"
        ) from e


def convert(prepared: nn.Module) -> nn.Module:
    from torch.ao.quantization.quantize_fx import convert_fx

    with _quiet():
        return convert_fx(prepared.cpu().eval())


def tensor_state(model: nn.Module) -> dict[str, Tensor]:
    """A prepared model's state as plain, unshared CPU tensors (what safetensors can store)."""
    state = {}
    for k, v in model.state_dict().items():
        if not isinstance(v, Tensor):
            raise DistillError(f"cannot store quantization state {k!r} of type {type(v).__name__}")
        state[k] = v.detach().cpu().clone().contiguous()
    return state


@torch.no_grad()
def quantize_static(
    model: nn.Module, calibration: Iterable[Tensor], backend: str = "x86", max_batches: int | None = None
) -> Quantized:
    """Post-training static int8: observe activations on ``calibration`` batches (normalised inputs), convert."""
    batches = iter(calibration)
    first = next(batches, None)
    if first is None:
        raise DistillError("static quantization needs calibration data; got no batches")
    prepared = prepare(model, "static", backend, first[:1])
    n_seen, n_batches = 0, 0
    for x in [first, *batches][:max_batches]:
        prepared(x.cpu())
        n_seen, n_batches = n_seen + len(x), n_batches + 1
    state = tensor_state(prepared)
    return Quantized(convert(prepared), "static", backend, state, {"calibration_images": n_seen})


def quantize_dynamic(model: nn.Module, backend: str = "x86") -> Quantized:
    """Dynamic int8 of every ``nn.Linear`` (weights int8, activations quantized per batch)."""
    from torch.ao.quantization import quantize_dynamic as qd

    set_backend(backend)
    model = copy.deepcopy(model).cpu().eval()
    if not any(isinstance(m, nn.Linear) for m in model.modules()):
        raise DistillError(f"{type(model).__name__} has no Linear layer for dynamic quantization; use mode=static")
    state = tensor_state(model)
    with _quiet():
        q = qd(model, {nn.Linear}, dtype=torch.qint8)
    return Quantized(q, "dynamic", backend, state)


def prepare_qat(model: nn.Module, example_inputs: Tensor, backend: str = "x86") -> nn.Module:
    """A copy of ``model`` with fake quantization, to be trained (e.g. distilled) and then :func:`finish_qat`."""
    return prepare(model, "qat", backend, example_inputs[:1])


def finish_qat(prepared: nn.Module, backend: str = "x86", info: dict[str, Any] | None = None) -> Quantized:
    """Convert a trained QAT model to int8."""
    set_backend(backend)
    prepared = prepared.cpu().eval()
    state = tensor_state(prepared)
    return Quantized(convert(copy.deepcopy(prepared)), "qat", backend, state, dict(info or {}))


def rebuild(
    float_model: nn.Module, mode: str, backend: str, state: dict[str, Tensor], input_shape: list[int]
) -> nn.Module:
    """The int8 model from its float architecture and a stored :attr:`Quantized.state`."""
    check_mode(mode)
    if mode == "dynamic":
        from torch.ao.quantization import quantize_dynamic as qd

        set_backend(backend)
        float_model.load_state_dict(state)
        with _quiet():
            return qd(float_model.cpu().eval(), {nn.Linear}, dtype=torch.qint8)
    prepared = prepare(float_model, mode, backend, torch.zeros(1, *input_shape))
    try:
        prepared.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"stored quantization state does not fit the model: {str(e).splitlines()[0]}") from e
    return convert(prepared)


def save_quantized(directory: str | Path, q: Quantized, spec: dict[str, Any]) -> Path:
    """``model.safetensors`` (prepared state) + ``model.json`` (``spec`` of the float model + ``quantization``).

    Like :func:`distill.artifacts.save_model`, ``model.json`` always gets ``format``
    (:data:`~distill.artifacts.MODEL_FORMAT`) and the weights' ``sha256``, overriding any in ``spec``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    spec = {k: v for k, v in spec.items() if k not in ("format", "sha256")}
    spec["quantization"] = {"format": QUANT_FORMAT, "mode": q.mode, "backend": q.backend, **q.info}
    weights = directory / "model.safetensors"
    atomic_write(weights, lambda tmp: save_file(q.state, tmp, metadata={"distill_quantization": q.mode}))
    write_json(directory / "model.json", {**spec, "format": MODEL_FORMAT, "sha256": sha256_file(weights)})
    return weights


def load_quantized(directory: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild an int8 model saved by :func:`save_quantized` (CPU only)."""
    spec = read_spec(directory)
    qspec = spec.get("quantization")
    if not qspec or qspec.get("format") != QUANT_FORMAT:
        raise CheckpointError(f"{directory} is not a quantized model directory (no {QUANT_FORMAT} in model.json)")
    state = load_file(str(Path(directory) / "model.safetensors"))
    shape = spec.get("preprocessing", {}).get("input_shape") or [spec["in_channels"], 28, 28]
    return rebuild(build_from_spec(spec), qspec["mode"], qspec["backend"], state, shape), spec


def int8_bytes(model: nn.Module) -> int:
    """Bytes of an int8 model's weights as deployed: int8 tensors at 1 byte, scales and the rest at their size."""

    def size(v: Any) -> int:
        if isinstance(v, Tensor):
            if v.is_quantized:
                n = v.int_repr().numel() * v.int_repr().element_size()
                if v.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
                    n += v.q_per_channel_scales().numel() * 8 + v.q_per_channel_zero_points().numel() * 8
                return n
            return v.numel() * v.element_size()
        if isinstance(v, (tuple, list)):
            return sum(size(x) for x in v)
        return 0

    return sum(size(v) for v in model.state_dict().values())


register_format("int8", lambda directory, spec, device: load_quantized(directory)[0])  # CPU only, like before

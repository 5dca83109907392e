"""ONNX export, checked against PyTorch in onnxruntime, with onnxruntime latency; int8 ONNX via onnxruntime.

``torch.onnx`` cannot export ``torch.ao`` int8 models (neither the torch.export-based exporter nor the legacy
TorchScript one handles packed int8 weights in torch 2.14), so an int8 ONNX file is made the way onnxruntime
recommends: export the float model, then quantize the ONNX graph statically (QDQ, per-channel int8 weights) on the
same calibration images (:func:`quantize_onnx`).

Needs ``onnx`` and ``onnxruntime`` (and ``onnxscript`` for the default exporter): ``pip install 'distill[onnx]'``.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from distill.errors import ConfigError, DistillError
from distill.report.bench import time_ms

EXPORTERS = ("dynamo", "torchscript")
FLOAT_ATOL = 1e-4  # max |onnxruntime - PyTorch| on real inputs for a float model


def _require(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise DistillError(
            f"{module} is not installed; pip install 'distill[onnx]' (onnx, onnxruntime, onnxscript)"
        ) from e


def _is_torch_int8(model: nn.Module) -> bool:
    return any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in model.modules())


def export_onnx(
    model: nn.Module,
    path: str | Path,
    example_inputs: Tensor,
    *,
    exporter: str = "dynamo",
    opset: int | None = None,
    dynamic_batch: bool = True,
) -> Path:
    """Write ``model`` (float, eval mode, CPU) to ``path`` with input ``input`` and output ``logits``.

    Args:
        example_inputs: a real batch of the model's input shape.
        exporter: ``dynamo`` (``torch.export``-based, the default of torch >= 2.9) or ``torchscript`` (legacy,
            faster to run, deprecated by PyTorch).
        dynamic_batch: a symbolic batch dimension, so one file serves batch 1 and 256.
    """
    if exporter not in EXPORTERS:
        raise ConfigError(f"unknown exporter {exporter!r}; expected one of {list(EXPORTERS)}")
    if _is_torch_int8(model):
        raise DistillError(
            "torch.onnx cannot export torch.ao int8 models (packed int8 weights); export the float model and "
            "make the int8 ONNX with distill.compress.export.quantize_onnx (the compress recipe's export.int8)"
        )
    if exporter == "dynamo":
        _require("onnxscript")
    _require("onnx")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    x = example_inputs.cpu()
    kw: dict[str, Any] = {"input_names": ["input"], "output_names": ["logits"]}
    if opset is not None:
        kw["opset_version"] = opset
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if exporter == "dynamo":
                shapes = ({0: torch.export.Dim("batch", min=1, max=65536)},) if dynamic_batch else None
                torch.onnx.export(
                    model, (x,), str(path), dynamo=True, dynamic_shapes=shapes, external_data=False, verbose=False, **kw
                )
            else:
                axes = {"input": {0: "batch"}, "logits": {0: "batch"}} if dynamic_batch else None
                torch.onnx.export(model, (x,), str(path), dynamo=False, dynamic_axes=axes, **kw)
    except Exception as e:  # each exporter raises its own kinds
        first = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
        raise DistillError(
            f"the ONNX exporter ({exporter}) cannot handle {type(model).__name__}: {first[:300]}"
            + ("; try exporter=torchscript" if exporter == "dynamo" else "")
        ) from e
    return path


def session(path: str | Path, threads: int | None = None) -> Any:
    ort = _require("onnxruntime")
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def ort_run(sess: Any, x: Tensor | np.ndarray) -> np.ndarray:
    arr = x.detach().cpu().numpy() if isinstance(x, Tensor) else x
    return sess.run(None, {sess.get_inputs()[0].name: arr.astype(np.float32)})[0]


def ort_predict(path: str | Path, batches: Iterable[Any], threads: int | None = None) -> tuple[Tensor, Tensor]:
    """Logits and labels of the ONNX model over ``batches`` (objects with ``x`` and ``y``)."""
    sess = session(path, threads)
    logits, labels = [], []
    for b in batches:
        logits.append(torch.from_numpy(ort_run(sess, b.x)))
        labels.append(b.y.cpu())
    return torch.cat(logits), torch.cat(labels)


@torch.no_grad()
def check_onnx(path: str | Path, model: nn.Module, x: Tensor, atol: float = FLOAT_ATOL) -> dict[str, Any]:
    """Run ``x`` through onnxruntime and PyTorch; raise when they differ by more than ``atol``."""
    expected = model.cpu().eval()(x.cpu()).float().numpy()
    got = ort_run(session(path), x)
    if got.shape != expected.shape:
        raise DistillError(f"{path}: onnxruntime output shape {got.shape} differs from PyTorch's {expected.shape}")
    diff = float(np.abs(got - expected).max())
    if not diff <= atol:
        raise DistillError(f"{path}: onnxruntime output differs from PyTorch by {diff:.3g} > tolerance {atol:g}")
    return {"max_abs_diff": diff, "atol": atol, "checked_inputs": len(x)}


def ort_latency_ms(
    path: str | Path,
    input_shape: Sequence[int],
    batch_size: int = 1,
    repeats: int = 20,
    warmup: int = 3,
    threads: int | None = None,
) -> float:
    """Median onnxruntime CPU milliseconds for one ``batch_size`` batch (:func:`~distill.report.bench.time_ms`:
    ``warmup`` runs, then at least ``repeats`` timed blocks; ``threads`` are the session's, torch's are left as set)."""
    sess = session(path, threads)
    x = np.random.default_rng(0).standard_normal((batch_size, *input_shape), dtype=np.float32)
    return time_ms(lambda: ort_run(sess, x), repeats, warmup, min_seconds=0.0)


def quantize_onnx(float_path: str | Path, out_path: str | Path, calibration: Iterable[Tensor]) -> Path:
    """Static int8 ONNX (QDQ, per-channel int8 weights, uint8 activations) calibrated on ``calibration`` batches.

    Weights use 7 of their 8 bits (``reduce_range``), as torch's x86 backend does: without it onnxruntime's u8 x s8
    kernels saturate on x86 CPUs lacking VNNI, which cost 14 points on a small test model here.
    """
    _require("onnxruntime")
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    name = session(float_path).get_inputs()[0].name
    feeds = [{name: x.detach().cpu().numpy().astype(np.float32)} for x in calibration]
    if not feeds:
        raise DistillError("int8 ONNX needs calibration data; got no batches")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(feeds)

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.it, None)

    out_path = Path(out_path)
    logging.disable(logging.WARNING)  # onnxruntime logs a pre-processing hint on the root logger every time
    try:
        quantize_static(
            str(float_path),
            str(out_path),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            reduce_range=True,  # 7-bit weights: u8 x s8 products saturate on AVX2/AVX-512 CPUs without VNNI
        )
    except Exception as e:
        raise DistillError(f"onnxruntime could not quantize {float_path}: {str(e).splitlines()[0][:300]}") from e
    finally:
        logging.disable(logging.NOTSET)
    return out_path

"""Compression beyond distillation: pruning (with distillation to recover), int8 quantization, ONNX export.

The pieces work on any ``nn.Module``; :func:`compress` runs them on a saved model (``distill compress``) as the
stages registered with :func:`register_stage`, in their declared order.
torch-pruning is imported only by structural pruning, and onnx/onnxruntime only by export, so a saved pruned or
quantized model loads with neither installed.
"""

from pathlib import Path
from typing import Any

from torch import nn

from distill.compress.pipeline import CompressConfig, compress, load_recipe
from distill.compress.prune import (
    build_from_spec,
    load_pruned,
    make_permanent,
    read_spec,
    save_pruned,
    sparsity_report,
    structured_prune,
    unstructured_prune,
)
from distill.compress.quantize import (
    Quantized,
    finish_qat,
    load_quantized,
    prepare_qat,
    quantize_dynamic,
    quantize_static,
    save_quantized,
)
from distill.compress.stages import COMPRESS_STAGES, register_stage
from distill.trust import verify_model


def load_compressed(directory: str | Path, public_key: str | Path | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Load any model directory: plain, pruned (architecture patch) or quantized (rebuilt from its stored state).

    With ``public_key``, the directory must carry a valid signature by that key (see :mod:`distill.trust`), checked
    before anything of it is read.
    """
    if public_key is not None:
        verify_model(directory, public_key)
    if "quantization" in read_spec(directory):
        return load_quantized(directory)
    return load_pruned(directory)


__all__ = [
    "COMPRESS_STAGES",
    "CompressConfig",
    "Quantized",
    "build_from_spec",
    "compress",
    "finish_qat",
    "load_compressed",
    "load_pruned",
    "load_quantized",
    "load_recipe",
    "make_permanent",
    "prepare_qat",
    "quantize_dynamic",
    "quantize_static",
    "register_stage",
    "save_pruned",
    "save_quantized",
    "sparsity_report",
    "structured_prune",
    "unstructured_prune",
]

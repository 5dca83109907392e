"""ONNX export of text students: inputs ``input_ids`` and ``attention_mask`` (int64, dynamic batch and length),
output ``logits``."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path

import torch
from torch import Tensor, nn


class _IdsAndMask(nn.Module):
    """Presents ``model(x, attention_mask)`` as ``forward(input_ids, attention_mask)`` for the exporter."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        return self.model(input_ids, attention_mask)


def export_onnx(
    model: nn.Module, path: str | Path, max_length: int = 64, opset: int = 18, exporter: str = "dynamo"
) -> Path:
    """Write ``model`` (a text student taking ids + mask) to ``path``; batch and sequence axes stay dynamic.

    ``exporter``: ``dynamo`` (``torch.export``-based, torch's default) or ``torchscript`` (legacy, much faster).
    """
    if exporter not in ("dynamo", "torchscript"):
        raise ValueError(f"exporter must be 'dynamo' or 'torchscript', got {exporter!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if hasattr(model, "use_eager_attention"):
        # a transformer is exported with eager attention: the SDPA path decides from the example's mask (all ones)
        # to drop the mask, and the traced graph then ignores padding for every input (logits off by ~0.03 on a
        # padded batch); eager attention keeps the mask in the graph. A copy, so the caller's model is unchanged.
        model = copy.deepcopy(model)
        model.use_eager_attention()
    wrapped = _IdsAndMask(model).eval()
    ids = torch.ones(2, min(8, max_length), dtype=torch.int64)
    mask = torch.ones_like(ids)
    names = {"input_names": ["input_ids", "attention_mask"], "output_names": ["logits"], "opset_version": opset}
    if exporter == "dynamo":
        batch, seq = torch.export.Dim("batch", min=1, max=4096), torch.export.Dim("seq", min=2, max=max_length)
        shapes = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}}
        torch.onnx.export(wrapped, (ids, mask), str(path), dynamic_shapes=shapes, dynamo=True, **names)
    else:
        axes = {k: {0: "batch", 1: "seq"} for k in ("input_ids", "attention_mask")}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(wrapped, (ids, mask), str(path), dynamic_axes=axes, dynamo=False, **names)
    return path

"""Each model gets the inputs it was made for: normalisation, input size and channel order travel in ``model.json``.

Batches are normalised with the *data's* mean and std (:class:`~distill.data.module.DataModule`). A loaded model whose
``model.json`` records another normalisation, input size or channel order (a teacher trained elsewhere, imported with
``distill import``) gets a forward pre-hook, :class:`InputAdapter`, that turns those batches back into pixels on the
[0, 1] scale and then into exactly what the model expects: grey repeated to three channels, RGB swapped to BGR,
resized (bilinear), normalised with the model's own mean and std. The hook leaves the weights and the layer names
alone, so saving the model and reading its features work as before. What was adapted is returned as one line, for
the caller to show; what cannot be adapted (colour data for a grey model, other channel counts) is refused.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.errors import CheckpointError

_TOL = 5e-4  # mean/std recorded with 4 decimals


class InputAdapter:
    """Forward pre-hook: data-normalised ``(B, C, H, W)`` -> the model's own input (see the module doc)."""

    def __init__(
        self,
        data_mean: Sequence[float],
        data_std: Sequence[float],
        mean: Sequence[float],
        std: Sequence[float],
        input_shape: Sequence[int],
        bgr: bool = False,
    ) -> None:
        self.data_mean, self.data_std = torch.tensor(data_mean), torch.tensor(data_std)
        self.mean, self.std = torch.tensor(mean), torch.tensor(std)
        self.channels, self.size = int(input_shape[0]), (int(input_shape[1]), int(input_shape[2]))
        self.bgr = bgr

    def convert(self, x: Tensor) -> Tensor:
        def v(t: Tensor) -> Tensor:
            return t.to(x.device, x.dtype).view(1, -1, 1, 1)

        x = x * v(self.data_std) + v(self.data_mean)  # back to pixels on the [0, 1] scale
        if x.shape[1] == 1 and self.channels == 3:
            x = x.expand(-1, 3, -1, -1)
        if self.bgr:
            x = x.flip(1)
        if tuple(x.shape[-2:]) != self.size:
            down = x.shape[-2] > self.size[0] or x.shape[-1] > self.size[1]
            x = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=down)
        return (x - v(self.mean)) / v(self.std)

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        return (self.convert(args[0]), *args[1:])


def _close(a: Sequence[float], b: Sequence[float]) -> bool:
    return len(a) == len(b) and all(abs(float(x) - float(y)) <= _TOL for x, y in zip(a, b, strict=True))


def _fmt(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{float(v):g}" for v in values) + "]"


def adapt_input(model: nn.Module, spec: dict[str, Any], data: Any, what: str) -> str | None:
    """Hook ``model`` so that batches of ``data`` reach it as ``spec`` says it expects; returns what differs.

    ``None`` when nothing differs (no hook), when ``spec`` records no preprocessing, or for non-image data.
    """
    pre = spec.get("preprocessing")
    if not isinstance(pre, dict) or "mean" not in pre or "std" not in pre or not hasattr(data, "mean"):
        return None
    if abs(float(pre.get("scale", 1 / 255)) - 1 / 255) > 1e-9 or abs(getattr(data, "scale", 1 / 255) - 1 / 255) > 1e-9:
        return None  # tables: features, not pixels
    shape = list(pre.get("input_shape") or [spec.get("in_channels", data.in_channels), *data.image_size])
    data_shape = [data.in_channels, *data.image_size]
    bgr = str(pre.get("channel_order", "rgb")).lower() == "bgr"
    channels_ok = shape[0] == data_shape[0] or (data_shape[0] == 1 and shape[0] == 3)
    if not channels_ok:
        raise CheckpointError(
            f"{what} takes {shape[0]}-channel input but {data.name} has {data_shape[0]} channel(s); distill adapts "
            "grey data to a 3-channel model only"
        )
    same_norm = _close(pre["mean"], data.mean) and _close(pre["std"], data.std)
    if same_norm and shape == data_shape and not bgr:
        return None
    changes = []
    if not same_norm:
        changes.append(
            f"renormalised from {data.name}'s mean {_fmt(data.mean)} std {_fmt(data.std)} to its own mean "
            f"{_fmt(pre['mean'])} std {_fmt(pre['std'])}"
        )
    if shape[0] != data_shape[0]:
        changes.append("grey repeated to 3 channels")
    if bgr:
        changes.append("RGB swapped to BGR")
    if shape[1:] != data_shape[1:]:
        changes.append(f"resized from {data_shape[1]}x{data_shape[2]} to {shape[1]}x{shape[2]}")
    adapter = InputAdapter(data.mean, data.std, pre["mean"], pre["std"], shape, bgr)
    model.register_forward_pre_hook(adapter)
    model.__dict__["input_adapter"] = adapter  # for inspection; not a module, not saved
    return f"{what}: its input is " + "; ".join(changes) + " (from its model.json preprocessing)"


def differs(spec: dict[str, Any], data: Any) -> str | None:
    """A one-line description of how ``spec``'s preprocessing differs from ``data``'s, without hooking anything."""
    probe = nn.Identity()
    try:
        return adapt_input(probe, spec, data, "the model")
    except CheckpointError as e:
        return str(e)

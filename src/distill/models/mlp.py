"""A multi-layer perceptron over images of any size.

The input is first average-pooled to a fixed ``pool_to x pool_to`` grid and flattened, so the first linear layer's
size is known when the model is built (no lazy layers: shapes can be probed and weights loaded before any forward)
and the same model runs on 28x28 and 32x32 images. The default ``pool_to=8`` keeps the model small
(``in_channels * 64`` inputs); raise it (e.g. to 28) to give the MLP the full resolution.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from distill.errors import ConfigError
from distill.models.search_space import register_search_space
from distill.models.zoo import register_model


class MLP(nn.Module):
    """``input_pool`` -> hidden Linear-ReLU blocks (dropout between them) -> ``fc``."""

    classifier = "fc"

    def __init__(self, num_classes: int, in_channels: int, hidden: Sequence[int], dropout: float, pool_to: int) -> None:
        super().__init__()
        hidden = list(hidden)
        if any(int(h) != h or h < 1 for h in hidden):
            raise ConfigError(f"mlp hidden sizes must be positive integers, got {hidden}")
        if pool_to < 1:
            raise ConfigError(f"mlp pool_to must be >= 1, got {pool_to}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        # (B, C, H, W) -> (B, C * pool_to * pool_to)
        self.input_pool = nn.Sequential(nn.AdaptiveAvgPool2d(pool_to), nn.Flatten(1))
        dim, blocks = in_channels * pool_to * pool_to, []
        for width in hidden:
            blocks.append(nn.Sequential(nn.Linear(dim, int(width)), nn.ReLU()))
            dim = int(width)
        self.hidden = nn.Sequential(*blocks)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(dim, num_classes)
        self.feature_layers = [f"hidden.{i}" for i in range(len(blocks))]
        # Dropout is applied to a block's input, not inside it, so hooks on the blocks see clean activations.
        self.penultimate = self.feature_layers[-1] if blocks else "input_pool"

    def forward(self, x: Tensor) -> Tensor:
        x = self.input_pool(x)
        for i, block in enumerate(self.hidden):
            x = block(self.drop(x) if i else x)  # no dropout on the raw pixels
        return self.fc(self.drop(x) if len(self.hidden) else x)


@register_model("mlp")
def mlp(
    num_classes: int = 10,
    in_channels: int = 3,
    hidden: Sequence[int] = (256, 128),
    dropout: float = 0.0,
    pool_to: int = 8,
) -> nn.Module:
    """MLP on the image average-pooled to ``pool_to x pool_to`` (see the module docstring)."""
    return MLP(num_classes, in_channels, hidden, dropout, pool_to)


@register_search_space("mlp", "mlp hidden width 16–512, 1–3 layers")
def mlp_space(trial: Any, kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``distill sweep``: one hidden width for 1–3 layers."""
    width, layers = trial.suggest_int("hidden", 16, 512, log=True), trial.suggest_int("layers", 1, 3)
    return "mlp", {**kwargs, "hidden": [width] * layers}

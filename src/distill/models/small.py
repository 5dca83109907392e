"""Small CNNs for MNIST-sized images and quick experiments: ``lenet5`` and ``cnn`` (with a width knob).

Like every built-in model they accept any input size (adaptive pooling before the classifier) and name their tap
points in ``feature_layers``, ``penultimate`` and ``classifier``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from distill.errors import ConfigError
from distill.models.cifar import conv_bn_act, kaiming_init, pool_flatten
from distill.models.search_space import register_search_space
from distill.models.zoo import register_model


class LeNet5(nn.Module):
    """LeNet-5 with ReLU and max-pooling: conv 6 -> pool -> conv 16 -> pool -> fc 120 -> fc 84 -> fc.

    The first conv pads by 2, so 28x28 inputs give the classic 16x5x5 map; other sizes are average-pooled to 5x5.
    """

    penultimate = "fc2"
    classifier = "fc"

    def __init__(self, num_classes: int = 10, in_channels: int = 3) -> None:
        super().__init__()
        self.feature_layers = ["conv1", "conv2"]
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2))
        self.conv2 = nn.Sequential(nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2))
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(5), nn.Flatten(1))  # (B, 16, h, w) -> (B, 400)
        self.fc1 = nn.Sequential(nn.Linear(16 * 5 * 5, 120), nn.ReLU())
        self.fc2 = nn.Sequential(nn.Linear(120, 84), nn.ReLU())
        self.fc = nn.Linear(84, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.conv2(self.conv1(x)))
        return self.fc(self.fc2(self.fc1(x)))


class SimpleCNN(nn.Module):
    """Three stages of ``blocks`` conv-BN-ReLU layers at widths w, 2w, 4w, max-pooling between stages."""

    penultimate = "pool"
    classifier = "fc"

    def __init__(self, num_classes: int, in_channels: int, width: int, blocks: int, dropout: float) -> None:
        super().__init__()
        if width < 1 or blocks < 1:
            raise ConfigError(f"cnn needs width >= 1 and blocks >= 1, got width={width}, blocks={blocks}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        self.feature_layers = ["layer1", "layer2", "layer3"]
        cin = in_channels
        for i, cout in enumerate((width, 2 * width, 4 * width)):
            layers: list[nn.Module] = [nn.MaxPool2d(2)] if i else []
            for _ in range(blocks):
                layers.append(conv_bn_act(cin, cout))
                cin = cout
            self.add_module(self.feature_layers[i], nn.Sequential(*layers))
        self.pool = pool_flatten()  # (B, 4w, H/4, W/4) -> (B, 4w)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(cin, num_classes)
        kaiming_init(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.drop(self.pool(x)))


@register_model("lenet5")
def lenet5(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """LeNet-5 (about 62k parameters on MNIST)."""
    return LeNet5(num_classes, in_channels)


@register_model("cnn")
def cnn(
    num_classes: int = 10, in_channels: int = 3, width: int = 32, blocks: int = 2, dropout: float = 0.0
) -> nn.Module:
    """A small VGG-like CNN; ``width`` sets the first stage's channels, ``blocks`` the convs per stage."""
    return SimpleCNN(num_classes, in_channels, width, blocks, dropout)


@register_search_space("cnn", "cnn width 2–32, blocks 1–3")
def cnn_space(trial: Any, kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``distill sweep``: the first stage's width and the convs per stage."""
    return "cnn", {
        **kwargs,
        "width": trial.suggest_int("width", 2, 32, log=True),
        "blocks": trial.suggest_int("blocks", 1, 3),
    }

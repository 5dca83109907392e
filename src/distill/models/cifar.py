"""Networks for small images (CIFAR- and MNIST-sized), after the family used by the CRD/RepDistiller benchmarks.

Every network here takes ``in_channels`` at its first conv, ends in ``pool`` (adaptive average pool + flatten, so
28x28, 32x32 or any other size works) and a linear ``fc``, and names its tap points for distillation methods:

- ``feature_layers``: the main stages in order (``layer1``, ``layer2``, ...);
- ``penultimate``: the module whose output is the pooled ``(B, D)`` vector the final linear layer reads;
- ``classifier``: the final ``nn.Linear`` (left alone by pruning).

ReLUs are never in-place, so a feature captured by a forward hook is not overwritten by the next layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from distill.errors import ConfigError
from distill.models.search_space import register_family_space, register_search_space
from distill.models.zoo import register_model


def conv_bn_act(
    cin: int,
    cout: int,
    k: int = 3,
    stride: int = 1,
    groups: int = 1,
    act: type[nn.Module] | None = nn.ReLU,
    dilation: int = 1,
) -> nn.Sequential:
    """Conv (no bias, 'same' padding) -> BatchNorm -> optional activation."""
    conv = nn.Conv2d(cin, cout, k, stride, dilation * (k // 2), dilation=dilation, groups=groups, bias=False)
    layers: list[nn.Module] = [conv, nn.BatchNorm2d(cout)]
    if act is not None:
        layers.append(act())
    return nn.Sequential(*layers)


def pool_flatten() -> nn.Sequential:
    """``(B, C, H, W) -> (B, C)``: global average pool as one module, so a hook on it yields the feature vector."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))


def kaiming_init(model: nn.Module) -> None:
    """He-normal convs (fan-out), unit/zero norms, zero biases; linear layers keep PyTorch's default."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d, nn.GroupNorm)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class _Net(nn.Module):
    """Base for the small-image networks: stages, then ``pool`` -> ``fc``."""

    penultimate = "pool"
    classifier = "fc"

    def __init__(
        self, stem: nn.Module, stages: Sequence[nn.Module], head: nn.Module | None, dim: int, num_classes: int
    ) -> None:
        super().__init__()
        self.stem = stem
        self._stages = tuple(f"layer{i}" for i in range(1, len(stages) + 1))
        for name, stage in zip(self._stages, stages, strict=True):
            self.add_module(name, stage)
        # e.g. a final 1x1 conv, or BN + ReLU, between the last stage and the pooling
        self.head = head if head is not None else nn.Identity()
        self.pool = pool_flatten()
        self.fc = nn.Linear(dim, num_classes)
        self.feature_layers = list(self._stages)  # metadata only: users may edit it, forward does not read it
        kaiming_init(self)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for name in self._stages:
            x = getattr(self, name)(x)
        return self.fc(self.pool(self.head(x)))  # (B, C, H, W) -> (B, C) -> (B, num_classes)


# --- ResNet (CIFAR): 3 stages of BasicBlocks, depth = 6n + 2 -------------------------------------------------------


class BasicBlock(nn.Module):
    """Two 3x3 convs with an identity (or 1x1 conv + BN, when the shape changes) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = conv_bn_act(cin, cout, 3, stride, dilation=dilation)
        self.conv2 = conv_bn_act(cout, cout, 3, act=None, dilation=dilation)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class CifarResNet(_Net):
    """ResNet for 32x32 images: a 3x3 stem of ``widths[0]`` channels, then 3 stages at strides 1, 2, 2."""

    def __init__(self, depth: int, widths: Sequence[int], num_classes: int, in_channels: int) -> None:
        if depth < 8 or (depth - 2) % 6:
            raise ConfigError(f"CIFAR ResNet depth must be 6n + 2 with n >= 1 (8, 14, 20, 32 ...), got {depth}")
        n, cin, stages = (depth - 2) // 6, widths[0], []
        for width, stride in zip(widths[1:], (1, 2, 2), strict=True):
            blocks = [BasicBlock(cin if i == 0 else width, width, stride if i == 0 else 1) for i in range(n)]
            stages.append(nn.Sequential(*blocks))
            cin = width
        super().__init__(conv_bn_act(in_channels, widths[0]), stages, None, cin, num_classes)


def _resnet(depth: int, x4: bool = False) -> None:
    widths = (32, 64, 128, 256) if x4 else (16, 16, 32, 64)
    name = f"resnet{depth}" + ("x4" if x4 else "")

    def factory(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
        return CifarResNet(depth, widths, num_classes, in_channels)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = f"CIFAR ResNet-{depth}, stage widths {widths[1:]} after a {widths[0]}-channel stem."
    register_model(name)(factory)


for _depth in (8, 14, 20, 32, 44, 56, 110):
    _resnet(_depth)
_resnet(8, x4=True)
_resnet(32, x4=True)
register_family_space(r"resnet\d+", exclude=("resnet110",))  # distill sweep: another depth of the family
register_family_space(r"resnet\d+x4")


# --- Wide ResNet (Zagoruyko & Komodakis 2016): pre-activation blocks, depth = 6n + 4 -------------------------------


class WideBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv3x3, BN-ReLU-(dropout)-conv3x3, plus a shortcut."""

    def __init__(self, cin: int, cout: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm2d(cin), nn.BatchNorm2d(cout)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.relu, self.drop = nn.ReLU(), nn.Dropout(dropout)
        # When the shape changes the shortcut is a 1x1 conv on the pre-activated input, as in the paper's code.
        self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False) if stride != 1 or cin != cout else None

    def forward(self, x: Tensor) -> Tensor:
        act = self.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(act)
        out = self.conv1(act)
        out = self.conv2(self.drop(self.relu(self.bn2(out))))
        return out + skip


class WideResNet(_Net):
    """WRN-depth-k: stem 16 channels, stages 16k, 32k, 64k at strides 1, 2, 2, then BN-ReLU (``head``)."""

    def __init__(self, depth: int, widen_factor: int, dropout: float, num_classes: int, in_channels: int) -> None:
        if depth < 10 or (depth - 4) % 6:
            raise ConfigError(f"WRN depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, 40 ...), got {depth}")
        if widen_factor < 1:
            raise ConfigError(f"WRN widen_factor must be >= 1, got {widen_factor}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")
        n, cin, stages = (depth - 4) // 6, 16, []
        for width, stride in zip((16 * widen_factor, 32 * widen_factor, 64 * widen_factor), (1, 2, 2), strict=True):
            blocks = [WideBlock(cin if i == 0 else width, width, stride if i == 0 else 1, dropout) for i in range(n)]
            stages.append(nn.Sequential(*blocks))
            cin = width
        stem = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        super().__init__(stem, stages, nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU()), cin, num_classes)


@register_model("wrn")
def wrn(
    num_classes: int = 10, in_channels: int = 3, depth: int = 16, widen_factor: int = 1, dropout: float = 0.0
) -> nn.Module:
    """Wide ResNet WRN-``depth``-``widen_factor``."""
    return WideResNet(depth, widen_factor, dropout, num_classes, in_channels)


@register_search_space("wrn", "wrn depth 10–28, widen factor 1–4")
def wrn_space(trial: Any, kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``distill sweep``: the depth and the widen factor."""
    depth = trial.suggest_categorical("depth", [10, 16, 22, 28])
    return "wrn", {**kwargs, "depth": depth, "widen_factor": trial.suggest_int("widen_factor", 1, 4)}


def _wrn(depth: int, k: int) -> None:
    def factory(num_classes: int = 10, in_channels: int = 3, dropout: float = 0.0) -> nn.Module:
        return WideResNet(depth, k, dropout, num_classes, in_channels)

    factory.__name__ = factory.__qualname__ = f"wrn_{depth}_{k}"
    factory.__doc__ = f"Wide ResNet WRN-{depth}-{k}."
    register_model(factory.__name__)(factory)


for _depth, _k in ((16, 1), (16, 2), (40, 1), (40, 2)):
    _wrn(_depth, _k)
register_family_space(r"wrn_\d+_\d+")


# --- VGG with BatchNorm (CIFAR variant: 5 stages, max-pool before stages 2-4, one linear layer) --------------------

_VGG_CFGS: dict[int, tuple[tuple[int, ...], ...]] = {
    8: ((64,), (128,), (256,), (512,), (512,)),
    11: ((64,), (128,), (256, 256), (512, 512), (512, 512)),
    13: ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512)),
}


class VGG(_Net):
    """VGG-BN: stages of 3x3 conv-BN-ReLU; stage 5 runs at stage 4's resolution (as in the CRD benchmark code)."""

    def __init__(self, cfg: Sequence[Sequence[int]], num_classes: int, in_channels: int) -> None:
        cin, stages = in_channels, []
        for i, widths in enumerate(cfg):
            layers: list[nn.Module] = [nn.MaxPool2d(2)] if i in (1, 2, 3) else []
            for width in widths:
                layers.append(conv_bn_act(cin, width))
                cin = width
            stages.append(nn.Sequential(*layers))
        super().__init__(nn.Identity(), stages, None, cin, num_classes)


def _vgg(depth: int) -> None:
    def factory(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
        return VGG(_VGG_CFGS[depth], num_classes, in_channels)

    factory.__name__ = factory.__qualname__ = f"vgg{depth}"
    factory.__doc__ = f"VGG-{depth} with BatchNorm for small images."
    register_model(factory.__name__)(factory)


for _depth in _VGG_CFGS:
    _vgg(_depth)
register_family_space(r"vgg\d+")


# --- MobileNetV2 (Sandler et al. 2018), CIFAR variant: stride-1 stem and stride-1 second row ----------------------


def _make_divisible(v: float, divisor: int = 8) -> int:
    """Round a channel count to a multiple of ``divisor`` without losing more than 10%."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


class InvertedResidual(nn.Module):
    """1x1 expand -> 3x3 depthwise -> 1x1 linear projection, residual when the shape is kept."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers = [conv_bn_act(cin, hidden, 1, act=nn.ReLU6)] if expand != 1 else []
        layers += [
            conv_bn_act(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
            conv_bn_act(hidden, cout, 1, act=None),
        ]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


# (expansion, channels, repeats, stride) per row; rows grouped into 4 stages of falling resolution.
_MBV2_ROWS = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
_MBV2_STAGES = ((0, 1), (2,), (3, 4), (5, 6))


class MobileNetV2(_Net):
    """MobileNetV2; ``layer1..4`` end at 1x, 1/2, 1/4 and 1/8 of the input resolution."""

    def __init__(self, width_mult: float, num_classes: int, in_channels: int) -> None:
        if width_mult <= 0:
            raise ConfigError(f"width_mult must be > 0, got {width_mult}")
        cin = stem = _make_divisible(32 * width_mult)
        stages = []
        for rows in _MBV2_STAGES:
            blocks = []
            for t, c, n, s in (_MBV2_ROWS[r] for r in rows):
                cout = _make_divisible(c * width_mult)
                for i in range(n):
                    blocks.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                    cin = cout
            stages.append(nn.Sequential(*blocks))
        last = _make_divisible(1280 * max(1.0, width_mult))
        stem_conv = conv_bn_act(in_channels, stem, 3, 1, act=nn.ReLU6)
        super().__init__(stem_conv, stages, conv_bn_act(cin, last, 1, act=nn.ReLU6), last, num_classes)


@register_model("mobilenetv2")
def mobilenetv2(num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0) -> nn.Module:
    """MobileNetV2 for small images (total stride 8); ``width_mult`` scales every layer's channels."""
    return MobileNetV2(width_mult, num_classes, in_channels)


# --- ShuffleNetV2 (Ma et al. 2018), CIFAR variant: 3x3 stride-1 stem, no max-pool ---------------------------------

_SHUFFLE_CHANNELS = {
    0.5: (48, 96, 192, 1024),
    1.0: (116, 232, 464, 1024),
    1.5: (176, 352, 704, 1024),
    2.0: (244, 488, 976, 2048),
}
_SHUFFLE_REPEATS = (4, 8, 4)


def channel_shuffle(x: Tensor, groups: int = 2) -> Tensor:
    b, c, h, w = x.shape  # (B, C, H, W) -> (B, g, C/g, H, W) -> swap -> (B, C, H, W)
    return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class ShuffleUnit(nn.Module):
    """Stride 1: split channels, transform one half. Stride 2: both branches see all channels and downsample."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        half = cout // 2
        self.stride = stride
        if stride == 1 and cin != cout:
            raise ValueError("a stride-1 shuffle unit keeps the channel count")
        self.proj = None
        if stride != 1:
            self.proj = nn.Sequential(conv_bn_act(cin, cin, 3, stride, groups=cin, act=None), conv_bn_act(cin, half, 1))
        branch_in = cin if stride != 1 else half
        self.branch = nn.Sequential(
            conv_bn_act(branch_in, half, 1),
            conv_bn_act(half, half, 3, stride, groups=half, act=None),
            conv_bn_act(half, half, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.proj is None:
            keep, x = x.chunk(2, dim=1)
            out = torch.cat((keep, self.branch(x)), dim=1)
        else:
            out = torch.cat((self.proj(x), self.branch(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(_Net):
    """ShuffleNetV2 with the paper's stage widths for ``width_mult`` 0.5/1/1.5/2; three stride-2 stages."""

    def __init__(self, width_mult: float, num_classes: int, in_channels: int) -> None:
        if width_mult not in _SHUFFLE_CHANNELS:
            raise ConfigError(f"shufflenetv2 width_mult must be one of {sorted(_SHUFFLE_CHANNELS)}, got {width_mult}")
        *widths, last = _SHUFFLE_CHANNELS[width_mult]
        cin, stages = 24, []
        for width, repeats in zip(widths, _SHUFFLE_REPEATS, strict=True):
            units = [ShuffleUnit(cin if i == 0 else width, width, 2 if i == 0 else 1) for i in range(repeats)]
            stages.append(nn.Sequential(*units))
            cin = width
        super().__init__(conv_bn_act(in_channels, 24, 3, 1), stages, conv_bn_act(cin, last, 1), last, num_classes)


@register_model("shufflenetv2")
def shufflenetv2(num_classes: int = 10, in_channels: int = 3, width_mult: float = 1.0) -> nn.Module:
    """ShuffleNetV2 for small images; ``width_mult`` picks the paper's 0.5x/1x/1.5x/2x channel table."""
    return ShuffleNetV2(width_mult, num_classes, in_channels)

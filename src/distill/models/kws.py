"""Keyword-spotting networks for log-mel spectrograms: a ResNet teacher and two microcontroller-size students.

The input is a ``(B, 1, 40, 101)`` log-mel spectrogram (40 mel bands as the height, 101 frames of 10 ms as the
width: one second at 16 kHz), as the ``audio_folder`` dataset yields it. Like every zoo model these accept any input
size (global average pooling before the classifier) and name their tap points for the feature-distillation
methods: ``feature_layers`` (the stages, in order), ``penultimate`` (``pool``, the pooled ``(B, D)`` vector) and
``classifier`` (``fc``).

- ``kws_resnet``: a ResNet in the spirit of Tang & Lin (2018, "Deep Residual Learning for Small-Footprint Keyword
  Spotting", arXiv:1710.10361): 3x3 convs in residual blocks after a 3x3 stem that halves the resolution (their
  res8 and res26 average-pool after the first conv), here in three stages of widths w, 2w, 4w that run at 1/4, 1/8
  and 1/8 of the input's resolution so that training stays cheap on a CPU (37 M multiply-adds per clip at the
  defaults; their res15 takes 894 M); optional dilation in the last stage (res15 widens its receptive field by
  dilation instead of pooling).
- ``ds_cnn``: the depthwise-separable CNN of Zhang et al. (2017, "Hello Edge: Keyword Spotting on
  Microcontrollers", arXiv:1711.07128): a regular conv, N depthwise-separable blocks (3x3 depthwise + BN + ReLU,
  1x1 pointwise + BN + ReLU), global average pooling, one linear layer; sizes ``s`` (64 channels) and ``m``
  (172 channels), 4 blocks each, as in the paper's small and medium models.
- ``kws_tiny``: four plain 3x3 conv-BN-ReLU layers (widths w, 2w, 3w, 4w), about 12 K parameters.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from distill.errors import ConfigError
from distill.models.cifar import BasicBlock, _Net, conv_bn_act
from distill.models.zoo import register_model

# Hello Edge's DS-CNN sizes: channels x depthwise-separable blocks (the paper's small and medium models; its large,
# 276 x 5 and ~0.5 M parameters, is teacher-sized and left out).
DS_CNN_SIZES: dict[str, tuple[int, int]] = {"s": (64, 4), "m": (172, 4)}


def _check_width(model: str, **values: int) -> None:
    for key, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"{model} needs {key} >= 1 (an integer), got {v!r}")


# --- kws_resnet ---------------------------------------------------------------------------------------------------


class KWSResNet(_Net):
    """Stem (3x3 conv-BN-ReLU, stride 2), then ``layer1..3`` of ``blocks`` residual blocks at widths w, 2w, 4w and
    strides 2, 2, 1 (``dilation`` in ``layer3``): 40x101 -> 20x51 -> 10x26 -> 5x13 -> 5x13."""

    def __init__(self, num_classes: int, in_channels: int, width: int, blocks: int, dilation: int) -> None:
        _check_width("kws_resnet", width=width, blocks=blocks, dilation=dilation)
        stem = conv_bn_act(in_channels, width, 3, 2)
        cin, stages = width, []
        for i, (cout, stride) in enumerate(((width, 2), (2 * width, 2), (4 * width, 1))):
            d = dilation if i == 2 else 1
            blks = [BasicBlock(cin if j == 0 else cout, cout, stride if j == 0 else 1, d) for j in range(blocks)]
            stages.append(nn.Sequential(*blks))
            cin = cout
        super().__init__(stem, stages, None, cin, num_classes)


@register_model("kws_resnet")
def kws_resnet(
    num_classes: int = 12, in_channels: int = 1, width: int = 40, blocks: int = 1, dilation: int = 1
) -> nn.Module:
    """Keyword-spotting ResNet (teacher): 482,452 parameters at the defaults for 12 classes on 1 channel."""
    return KWSResNet(num_classes, in_channels, width, blocks, dilation)


# --- ds_cnn -------------------------------------------------------------------------------------------------------


def ds_block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    """Depthwise 3x3 conv + BN + ReLU, then pointwise 1x1 conv + BN + ReLU (Howard et al.'s MobileNet unit)."""
    return nn.Sequential(conv_bn_act(cin, cin, 3, stride, groups=cin), conv_bn_act(cin, cout, 1))


class DSCNN(_Net):
    """Conv (4x10 kernel: 4 mel bands x 10 frames, stride 2 x 4) + BN + ReLU, then ``blocks`` depthwise-separable
    blocks (``layer1..N``), the first at stride 2: 40x101 -> 20x25 -> 10x13.

    Hello Edge's first conv spans 10 frames x 4 of 10 MFCC coefficients of a 49-frame input with a 20 ms hop, at
    stride 2 (small) or 2 x 1 (medium) in time x frequency. The log-mel input here has a 10 ms hop and 40 bands, so
    the same 10 x 4 window strides 4 frames (40 ms, as 2 of the paper's frames) by 2 bands, and the first block
    strides 2: the blocks run on 10x13 = 130 positions (the paper's small: 125) and the multiply-adds stay near the
    paper's (s: 3.7 M here, 5.4 M there; m: 19.6 M here, 19.8 M there).
    """

    def __init__(self, num_classes: int, in_channels: int, channels: int, blocks: int) -> None:
        _check_width("ds_cnn", channels=channels, blocks=blocks)
        stem = nn.Sequential(
            nn.Conv2d(in_channels, channels, (4, 10), (2, 4), (1, 4), bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
        )
        stages = [ds_block(channels, channels, 2 if i == 0 else 1) for i in range(blocks)]
        super().__init__(stem, stages, None, channels, num_classes)


@register_model("ds_cnn")
def ds_cnn(
    num_classes: int = 12, in_channels: int = 1, size: str = "s", channels: int | None = None, blocks: int | None = None
) -> nn.Module:
    """Hello Edge's DS-CNN; ``size`` s (64 channels x 4 blocks, 23,180 parameters for 12 classes) or m (172 x 4,
    136,580); ``channels`` / ``blocks`` override the size's."""
    if size not in DS_CNN_SIZES:
        raise ConfigError(f"ds_cnn size must be one of {sorted(DS_CNN_SIZES)}, got {size!r}")
    c, n = DS_CNN_SIZES[size]
    return DSCNN(num_classes, in_channels, c if channels is None else channels, n if blocks is None else blocks)


# --- kws_tiny -----------------------------------------------------------------------------------------------------


class KWSTiny(_Net):
    """Four 3x3 conv-BN-ReLU layers (``layer1..4``) at strides 2, 2, 2, 1: 40x101 -> 20x51 -> 10x26 -> 5x13."""

    def __init__(self, num_classes: int, in_channels: int, widths: Sequence[int]) -> None:
        cin, stages = in_channels, []
        for i, cout in enumerate(widths):
            stages.append(conv_bn_act(cin, cout, 3, 2 if i < 3 else 1))
            cin = cout
        super().__init__(nn.Identity(), stages, None, cin, num_classes)


@register_model("kws_tiny")
def kws_tiny(num_classes: int = 12, in_channels: int = 1, width: int = 8) -> nn.Module:
    """A tiny keyword-spotting CNN: widths w, 2w, 3w, 4w (12,148 parameters at w = 8 for 12 classes)."""
    _check_width("kws_tiny", width=width)
    return KWSTiny(num_classes, in_channels, (width, 2 * width, 3 * width, 4 * width))

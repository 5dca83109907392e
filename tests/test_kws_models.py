"""The keyword-spotting models (kws_resnet, ds_cnn s/m, kws_tiny): parameter counts worked out by hand, shapes on
log-mel input, and every distillation method stepping kws_resnet -> ds_cnn / kws_tiny on synthetic spectrograms."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from distill.data.base import ImageData
from distill.data.module import DataModule
from distill.distillers import DISTILLERS, build_distiller
from distill.errors import ConfigError
from distill.models.zoo import create_model

SHAPE = (1, 40, 101)  # 1 channel, 40 mel bands, 101 frames of 10 ms
K = 12  # yes no up down left right on off stop go _unknown_ _silence_


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# Counts for 12 classes on 1 channel. Convs have no bias; every BatchNorm adds 2 x channels; the final linear layer
# adds D x 12 + 12.
#
# kws_resnet (width 40, 1 block per stage):
#   stem   3x3 conv 1->40 + BN                                 360 + 80                       =     440
#   layer1 block 40->40, stride 2: two 3x3 convs + BN, 1x1 shortcut + BN
#          2 x (14,400 + 80) + (1,600 + 80)                                                   =  30,640
#   layer2 block 40->80, stride 2: (28,800 + 160) + (57,600 + 160) + (3,200 + 160)            =  90,080
#   layer3 block 80->160: (115,200 + 320) + (230,400 + 320) + (12,800 + 320)                  = 359,360
#   fc     160 x 12 + 12                                                                      =   1,932
#   total                                                                                       482,452
# ds_cnn s (64 channels, 4 blocks):
#   stem   4x10 conv 1->64 + BN: 2,560 + 128                                                  =   2,688
#   block  depthwise 3x3 (576) + BN (128) + pointwise 64x64 (4,096) + BN (128) = 4,928; x 4   =  19,712
#   fc     64 x 12 + 12                                                                       =     780
#   total                                                                                        23,180
# ds_cnn m (172 channels, 4 blocks):
#   stem   6,880 + 344                                                                        =   7,224
#   block  1,548 + 344 + 29,584 + 344 = 31,820; x 4                                           = 127,280
#   fc     172 x 12 + 12                                                                      =   2,076
#   total                                                                                       136,580
# kws_tiny (width 8: 8, 16, 24, 32 channels, 3x3 convs + BN):
#   (72 + 16) + (1,152 + 32) + (3,456 + 48) + (6,912 + 64) + (32 x 12 + 12)                   =  12,148
EXPECTED = {
    ("kws_resnet", ()): 482_452,
    ("ds_cnn", (("size", "s"),)): 23_180,
    ("ds_cnn", (("size", "m"),)): 136_580,
    ("kws_tiny", ()): 12_148,
}
STUDENTS = [("ds_cnn", {"size": "s"}), ("ds_cnn", {"size": "m"}), ("kws_tiny", {})]


def build(name: str, seed: int = 0, **kw) -> nn.Module:
    torch.manual_seed(seed)
    return create_model(name, num_classes=K, in_channels=1, **kw)


@pytest.mark.parametrize(("key", "n"), EXPECTED.items(), ids=lambda v: str(v))
def test_parameter_counts_as_worked_out(key, n):
    name, kw = key
    assert count(build(name, **dict(kw))) == n


def test_parameter_ranges_and_the_twenty_fold_ratio():
    teacher = count(build("kws_resnet"))
    s, m, tiny = (count(build(n, **kw)) for n, kw in STUDENTS)
    assert 300_000 <= teacher <= 1_000_000
    assert 20_000 <= s <= 40_000 and 120_000 <= m <= 160_000 and tiny < 25_000
    assert teacher >= 20 * tiny and teacher >= 20 * s  # a student with <= 1/20 of the teacher's parameters exists


@pytest.mark.parametrize(("name", "kw"), [("kws_resnet", {}), ("kws_resnet", {"dilation": 2}), *STUDENTS])
def test_forward_shape_and_taps_on_log_mel(name, kw):
    model = build(name, **kw)
    feats = {}
    for layer in model.feature_layers:
        getattr(model, layer).register_forward_hook(lambda _m, _i, o, layer=layer: feats.__setitem__(layer, o))
    out = model(torch.randn(3, *SHAPE))
    assert out.shape == (3, K)
    assert all(f.dim() == 4 and f.shape[0] == 3 for f in feats.values())
    assert getattr(model, model.penultimate) is model.pool and isinstance(model.fc, nn.Linear)


def test_bad_sizes_are_refused():
    with pytest.raises(ConfigError, match="size"):
        build("ds_cnn", size="xl")
    with pytest.raises(ConfigError, match="width"):
        build("kws_tiny", width=0)
    with pytest.raises(ConfigError, match="dilation"):
        build("kws_resnet", dilation=0)
    assert count(build("ds_cnn", size="s", blocks=5)) == 23_180 + 4_928  # one more block


def speech_like(n: int = 96, seed: int = 0) -> ImageData:
    """Synthetic log-mel 'spectrograms': a smooth random prototype per class plus noise, uint8 (N, 1, 40, 101)."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.nn.functional.interpolate(torch.rand(K, 1, 5, 12, generator=g), size=SHAPE[1:], mode="bilinear")
    y = torch.arange(n) % K
    x = (protos[y] + 0.3 * torch.randn(n, *SHAPE, generator=g)).clamp(0, 1).mul(255).to(torch.uint8)
    classes = "yes no up down left right on off stop go _unknown_ _silence_".split()
    return ImageData("speech_like", x, y, x[:24], y[:24], classes, (0.5,), (0.25,))


@pytest.fixture(scope="module")
def batch():
    dm = DataModule(speech_like(), batch_size=16, val_size=0, seed=0, augment=False)
    return next(dm.train_batches(0))


@pytest.fixture(scope="module")
def teacher():
    return build("kws_resnet", seed=1).eval()


LOGIT = [n for n in DISTILLERS.names() if not DISTILLERS.get(n).teacher_features]  # kd, dkd, ... and scratch
FEATURE = [n for n in DISTILLERS.names() if DISTILLERS.get(n).teacher_features]


@pytest.mark.parametrize("student", ["ds_cnn", "kws_tiny"])
@pytest.mark.parametrize("method", LOGIT)
def test_logit_methods_lower_the_loss_on_a_fixed_batch(method, student, teacher, batch):
    model = build(student, seed=2)
    d = build_distiller(method, model, teacher, SHAPE, num_samples=96, num_classes=K)
    d.train()
    opt = torch.optim.Adam(d.trainable_parameters(), lr=3e-3)
    losses = []
    for _ in range(6):
        out = d(batch.x, batch.y, index=batch.index)
        assert torch.isfinite(out.loss) and out.logits.shape == (16, K)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(float(out.loss.detach()))
    assert losses[-1] < losses[0], losses
    d.close()


@pytest.mark.parametrize("student", ["ds_cnn", "kws_tiny"])
@pytest.mark.parametrize("method", FEATURE)
def test_feature_methods_step_once(method, student, teacher, batch):
    model = build(student, seed=2)
    before = [p.clone() for p in model.parameters()]
    d = build_distiller(method, model, teacher, SHAPE, num_samples=96, num_classes=K)
    d.train()
    opt = torch.optim.SGD(d.trainable_parameters(), lr=0.01)
    out = d(batch.x, batch.y, index=batch.index)
    assert torch.isfinite(out.loss) and out.logits.shape == (16, K)
    opt.zero_grad()
    out.loss.backward()
    opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    d.close()

"""Every registered model: shapes, gradients, tap-point names; plus the torchvision/timm adapters and checkpoints."""

from __future__ import annotations

import os
import sys

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from distill.errors import CheckpointError, ConfigError, DistillError, UnknownNameError
from distill.models.adapters import tap_names
from distill.models.zoo import create_model, model_names

NAMES = model_names()


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", [(2, 1, 28, 28), (2, 3, 32, 32)], ids=["1x28", "3x32"])
def test_forward_backward(name: str, shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, in_channels=shape[1])
    logits = model(torch.randn(shape))
    assert logits.shape == (2, 7)
    assert torch.isfinite(logits).all()
    logits.square().mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad[:5]}"
    # in eval mode a sample's logits do not depend on the rest of its batch (no batch statistics at inference)
    model.eval()
    x = torch.randn(shape)
    with torch.no_grad():
        together = model(x)
        alone = torch.cat([model(x[i : i + 1]) for i in range(len(x))])
    torch.testing.assert_close(together, alone, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_tap_points(name: str) -> None:
    model = create_model(name, num_classes=7, in_channels=3).eval()
    modules = dict(model.named_modules())
    taps = tap_names(model)
    assert taps == (model.feature_layers, model.penultimate, model.classifier)
    assert taps.feature_layers and all(layer in modules for layer in taps.feature_layers)
    assert taps.penultimate in modules
    assert isinstance(modules[taps.classifier], nn.Linear)
    assert modules[taps.classifier].out_features == 7

    seen: dict[str, torch.Tensor] = {}
    for layer in [*taps.feature_layers, taps.penultimate]:
        modules[layer].register_forward_hook(lambda _m, _i, out, layer=layer: seen.__setitem__(layer, out))
    with torch.no_grad():
        logits = model(torch.randn(2, 3, 32, 32))
        pen = seen[taps.penultimate]
        assert pen.shape == (2, modules[taps.classifier].in_features)
        torch.testing.assert_close(modules[taps.classifier](pen), logits)  # it really is the classifier's input
    assert all(seen[layer].shape[0] == 2 for layer in taps.feature_layers)


@pytest.mark.parametrize(
    ("name", "millions"),
    [
        ("resnet8x4", 1.23),
        ("resnet32x4", 7.43),
        ("resnet56", 0.86),
        ("resnet20", 0.28),
        ("wrn_40_2", 2.26),
        ("wrn_16_2", 0.70),
        ("vgg8", 3.96),
        ("vgg13", 9.46),
    ],
)
def test_param_counts_match_literature(name: str, millions: float) -> None:
    # Figures as reported for CIFAR-100 in the CRD/RepDistiller benchmark tables.
    count = _count(create_model(name, num_classes=100, in_channels=3))
    assert abs(count / 1e6 - millions) <= 0.05 * millions, f"{name}: {count / 1e6:.3f}M vs {millions}M"


def test_variants_and_knobs() -> None:
    assert _count(create_model("wrn", depth=40, widen_factor=2)) == _count(create_model("wrn_40_2"))
    assert _count(create_model("cnn", width=8)) < _count(create_model("cnn", width=16))
    assert _count(create_model("mobilenetv2", width_mult=0.5)) < _count(create_model("mobilenetv2"))
    assert _count(create_model("shufflenetv2", width_mult=0.5)) < _count(create_model("shufflenetv2"))
    model = create_model("mlp", hidden=[32], pool_to=4, in_channels=1)
    assert model.feature_layers == ["hidden.0"] and model(torch.randn(1, 1, 28, 28)).shape == (1, 10)
    assert create_model("mlp", hidden=[]).penultimate == "input_pool"


def test_unknown_name_lists_options() -> None:
    with pytest.raises(UnknownNameError, match=r"resnet8x4.*Available:.*wrn_40_2"):
        create_model("resnet8x5")


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("resnet8", {"widen_factor": 2}),
        ("wrn", {"depth": 17}),
        ("shufflenetv2", {"width_mult": 0.7}),
        ("cnn", {"dropout": 1.5}),
        ("mlp", {"hidden": [0]}),
    ],
)
def test_bad_arguments_raise_config_error(name: str, kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        create_model(name, **kwargs)


# --- adapters --------------------------------------------------------------------------------------------------------


def test_torchvision_grayscale() -> None:
    model = create_model("torchvision:resnet18", num_classes=5, in_channels=1).eval()
    assert model.conv1.in_channels == 1
    with torch.no_grad():
        assert model(torch.randn(2, 1, 32, 32)).shape == (2, 5)
    taps = tap_names(model)
    assert taps.feature_layers == ["layer1", "layer2", "layer3", "layer4"]
    assert taps.classifier == "fc"
    with torch.no_grad():
        assert model.get_submodule(taps.penultimate)(torch.randn(2, 512, 3, 3)).shape == (2, 512)


def test_torchvision_head_named_classifier() -> None:
    # torchvision's MobileNetV3 owns a submodule called ``classifier``: the name goes to ``classifier_name``.
    model = create_model("torchvision:mobilenet_v3_small", num_classes=4)
    assert isinstance(model.classifier, nn.Sequential)
    assert tap_names(model).classifier == "classifier.3" and tap_names(model).penultimate == "classifier.1"


def test_torchvision_errors() -> None:
    with pytest.raises(UnknownNameError, match="resnet18"):
        create_model("torchvision:resnet19")
    with pytest.raises(UnknownNameError, match="torchvision"):
        create_model("tv:resnet18")
    with pytest.raises(DistillError, match="checkpoint"):
        create_model("torchvision:resnet18", pretrained=True)
    with pytest.raises(DistillError, match="checkpoint"):
        create_model("torchvision:resnet18", weights="IMAGENET1K_V1")
    with pytest.raises(ConfigError):
        create_model("torchvision:resnet18", no_such_argument=1)


def test_timm_missing(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` now fails as if it were not installed
    with pytest.raises(DistillError, match=r"pip install 'distill\[timm\]'"):
        create_model("timm:resnet18")


def test_timm_model() -> None:
    pytest.importorskip("timm")
    model = create_model("timm:resnet18", num_classes=3, in_channels=1).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 32, 32)).shape == (1, 3)
    assert tap_names(model).classifier == "fc"


def test_checkpoint_roundtrip(tmp_path) -> None:
    source = create_model("torchvision:resnet18", num_classes=3, in_channels=1).eval()
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    save_file(state, str(tmp_path / "w.safetensors"))
    torch.save({"state_dict": state}, tmp_path / "w.pt")
    x = torch.randn(1, 1, 32, 32)
    for file in ("w.safetensors", "w.pt"):
        model = create_model("torchvision:resnet18", num_classes=3, in_channels=1, checkpoint=str(tmp_path / file))
        with torch.no_grad():
            torch.testing.assert_close(model.eval()(x), source(x))


def test_checkpoint_of_wrong_shapes(tmp_path) -> None:
    state = {k: v.contiguous() for k, v in create_model("torchvision:resnet18", num_classes=5).state_dict().items()}
    state["extra.weight"] = torch.zeros(1)
    del state["layer1.0.conv1.weight"]
    save_file(state, str(tmp_path / "w.safetensors"))
    with pytest.raises(CheckpointError) as err:
        create_model("torchvision:resnet18", num_classes=10, checkpoint=str(tmp_path / "w.safetensors"))
    message = str(err.value)
    assert "fc.weight (5, 512) in file vs (10, 512) in model" in message
    assert "missing keys: layer1.0.conv1.weight" in message and "unexpected keys: extra.weight" in message
    with pytest.raises(CheckpointError, match="does not exist"):
        create_model("torchvision:resnet18", checkpoint=str(tmp_path / "nope.pt"))


class _Evil:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):  # unpickling this would run a shell command
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused(tmp_path) -> None:
    marker = tmp_path / "pwned"
    torch.save({"fc.weight": _Evil(str(marker))}, tmp_path / "evil.pt")
    assert not marker.exists()
    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        create_model("torchvision:resnet18", checkpoint=str(tmp_path / "evil.pt"))
    assert not marker.exists()

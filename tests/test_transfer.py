"""Parameter transfer: exactly the intended teacher tensors land in the student."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from distill.errors import ConfigError
from distill.models.cifar import CifarResNet
from distill.models.transfer import init_from_teacher
from distill.models.zoo import create_model


def model(name: str, seed: int, **kw) -> nn.Module:
    torch.manual_seed(seed)
    return create_model(name, num_classes=10, in_channels=1, **kw).eval()


def test_match_copies_every_tensor_of_the_same_name_and_shape():
    teacher, student = model("cnn", 0, width=8), model("cnn", 1, width=4)
    before = {k: v.clone() for k, v in student.state_dict().items()}
    t_state = teacher.state_dict()
    report = init_from_teacher(student, teacher, "match")
    expected = {k for k, v in before.items() if k in t_state and t_state[k].shape == v.shape}
    assert set(report.copied) == expected and expected  # fc.bias, num_batches_tracked ...
    assert "fc.bias" in expected and "layer1.0.0.weight" not in expected
    for k, v in student.state_dict().items():
        assert torch.equal(v, t_state[k] if k in expected else before[k]), k
    assert set(report.skipped) == set(before) - expected

    same = model("cnn", 2, width=8)
    assert len(init_from_teacher(same, teacher, True).copied) == len(t_state)
    assert all(torch.equal(a, b) for a, b in zip(same.state_dict().values(), t_state.values(), strict=True))


def test_every_kth_block_resnet56_to_resnet20():
    teacher, student = model("resnet56", 0), model("resnet20", 1)
    report = init_from_teacher(student, teacher, "every_kth")
    assert not report.skipped
    t_state = teacher.state_dict()
    for key, value in student.state_dict().items():
        parts = key.split(".")
        if parts[0] in ("layer1", "layer2", "layer3"):
            parts[1] = str(int(parts[1]) * 3)  # student block j <- teacher block 3j (9 blocks -> 3)
        t_key = ".".join(parts)
        assert report.copied[key] == t_key
        assert torch.equal(value, t_state[t_key]), key


def test_every_kth_skips_a_leading_pool_cnn_two_blocks_to_one():
    teacher, student = model("cnn", 0, width=4, blocks=2), model("cnn", 1, width=4, blocks=1)
    report = init_from_teacher(student, teacher, "every_kth")
    # layer1 = [conv, conv] -> [conv]; layer2/3 = [pool, conv, conv] -> [pool, conv]: the first conv each time
    assert report.copied["layer1.0.0.weight"] == "layer1.0.0.weight"
    assert report.copied["layer2.1.0.weight"] == "layer2.1.0.weight"
    assert report.copied["layer3.1.1.running_var"] == "layer3.1.1.running_var"
    assert torch.equal(student.layer3[1][0].weight, teacher.layer3[1][0].weight)
    assert torch.equal(student.fc.weight, teacher.fc.weight)
    assert not report.skipped


def test_important_channels_picks_the_largest_l1_filters_consistently():
    teacher, student = model("cnn", 0, width=8, blocks=1), model("cnn", 1, width=4, blocks=1)
    report = init_from_teacher(student, teacher, "important_channels", input_shape=(1, 28, 28))
    assert not report.skipped and len(report.copied) == len(student.state_dict())

    def top(conv: nn.Conv2d, n: int) -> torch.Tensor:  # computed by hand, without the tracer
        return conv.weight.abs().sum(dim=(1, 2, 3)).topk(n).indices.sort().values

    i1, i2, i3 = top(teacher.layer1[0][0], 4), top(teacher.layer2[1][0], 8), top(teacher.layer3[1][0], 16)
    assert torch.equal(student.layer1[0][0].weight, teacher.layer1[0][0].weight[i1])
    assert torch.equal(student.layer1[0][1].running_mean, teacher.layer1[0][1].running_mean[i1])
    assert torch.equal(student.layer2[1][0].weight, teacher.layer2[1][0].weight[i2][:, i1])
    assert torch.equal(student.layer2[1][1].weight, teacher.layer2[1][1].weight[i2])
    assert torch.equal(student.layer3[1][0].weight, teacher.layer3[1][0].weight[i3][:, i2])
    assert torch.equal(student.fc.weight, teacher.fc.weight[:, i3])
    assert torch.equal(student.fc.bias, teacher.fc.bias)


def _zero_channels(conv_bn: list[tuple[nn.Conv2d, nn.BatchNorm2d]], drop: torch.Tensor) -> None:
    for conv, bn in conv_bn:
        conv.weight.data[drop] = 0
        bn.weight.data[drop] = 0
        bn.bias.data[drop] = 0


def test_important_channels_through_residual_groups_keeps_the_function():
    """Teacher channels that are exactly zero (in every layer that writes a residual group) carry nothing; a
    student keeping the others must compute the teacher's very logits."""
    torch.manual_seed(0)
    teacher = CifarResNet(8, (16, 16, 32, 64), 10, 3).eval()
    student = CifarResNet(8, (8, 8, 16, 32), 10, 3).eval()
    for m in teacher.modules():  # non-trivial BN statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.bias.data.uniform_(-0.2, 0.2)
    g = torch.Generator().manual_seed(1)

    def drop(n: int) -> torch.Tensor:
        return torch.randperm(n, generator=g)[: n // 2]

    b1, b2, b3 = teacher.layer1[0], teacher.layer2[0], teacher.layer3[0]
    groups = [
        [(teacher.stem[0], teacher.stem[1]), (b1.conv2[0], b1.conv2[1])],  # stem + identity shortcut of layer1
        [(b1.conv1[0], b1.conv1[1])],
        [(b2.conv2[0], b2.conv2[1]), (b2.shortcut[0], b2.shortcut[1])],
        [(b2.conv1[0], b2.conv1[1])],
        [(b3.conv2[0], b3.conv2[1]), (b3.shortcut[0], b3.shortcut[1])],
        [(b3.conv1[0], b3.conv1[1])],
    ]
    for grp in groups:
        _zero_channels(grp, drop(grp[0][0].out_channels))
    for m in teacher.modules():  # zeroed channels: BN gives exactly 0 whatever the statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean[m.weight == 0] = 0
    report = init_from_teacher(student, teacher, "important_channels", input_shape=(3, 16, 16))
    assert not report.skipped
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(student(x), teacher(x), rtol=1e-4, atol=1e-5)


def test_unknown_mode_and_missing_shape():
    teacher, student = model("cnn", 0, width=8), model("cnn", 1, width=4)
    with pytest.raises(ConfigError, match="init_from_teacher"):
        init_from_teacher(student, teacher, "everything")
    with pytest.raises(ConfigError, match="input_shape"):
        init_from_teacher(student, teacher, "important_channels")
    assert init_from_teacher(student, teacher, False).copied == {}

"""Every registered method: one training step on tiny models, the teacher untouched; the base class contract."""

import pytest
import torch
import torch.nn.functional as F

from distill.distillers import DISTILLERS, Teacher, build_distiller
from distill.distillers.base import method_params
from distill.errors import ConfigError, UnknownNameError
from distill.features import FeatureTap, probe_shapes


@pytest.mark.parametrize("name", DISTILLERS.names())
def test_one_step_trains_student_and_leaves_teacher_alone(name, tiny, dm):
    teacher, student = tiny(8, seed=1), tiny(4, seed=2)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    d = build_distiller(name, student, teacher, dm.input_shape)
    d.train()
    opt = torch.optim.SGD(d.trainable_parameters(), lr=0.1)
    s_before = [p.clone() for p in student.parameters()]
    batch = next(dm.train_batches(0))
    out = d(batch.x, batch.y)
    assert out.loss.dim() == 0 and torch.isfinite(out.loss)
    assert out.logits.shape == (len(batch.y), 4)
    assert torch.allclose(out.loss, sum(out.losses.values()))
    with torch.no_grad():  # the logits reported for metrics are the student's own on this batch (train mode)
        torch.testing.assert_close(out.logits.detach(), student(batch.x), rtol=0, atol=1e-6)
    if "ce" in out.losses:  # the label term is ce_weight · CE(student logits, labels), computed here
        want = d.ce_weight * F.cross_entropy(out.logits.detach(), batch.y, label_smoothing=d.label_smoothing)
        torch.testing.assert_close(out.losses["ce"].detach(), want, rtol=1e-5, atol=1e-7)
    opt.zero_grad()
    out.loss.backward()
    opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(s_before, student.parameters(), strict=True))
    if d.teacher is not None:
        assert not d.teacher.training and not any(m.training for m in d.teacher.modules())
        for k, v in teacher.state_dict().items():  # BN running stats included
            assert torch.equal(v, before[k]), k
        assert all(p.grad is None for p in teacher.parameters())
    exported = d.export_student()
    assert exported is student
    d.close()


def test_kd_total_is_alpha_mix_of_ce_and_kd(tiny, dm):
    teacher, student = tiny(8, 1), tiny(4, 2)
    d = build_distiller("kd", student, teacher, dm.input_shape, alpha=0.7, temperature=3.0)
    batch = next(dm.train_batches(0))
    out = d(batch.x, batch.y)
    with torch.no_grad():
        s, t = student(batch.x), teacher.eval()(batch.x)
    ce = F.cross_entropy(s, batch.y)
    kl = F.kl_div(F.log_softmax(s / 3, 1), F.softmax(t / 3, 1), reduction="batchmean") * 9
    assert out.losses["ce"].item() == pytest.approx(0.3 * ce.item(), rel=1e-4)
    assert out.losses["kd"].item() == pytest.approx(0.7 * kl.item(), rel=1e-4)


def test_kd_uses_cached_teacher_logits_when_given(tiny, dm):
    d = build_distiller("kd", tiny(4, 2), tiny(8, 1), dm.input_shape, alpha=1.0)
    batch = next(dm.train_batches(0))
    fake = torch.zeros(len(batch.y), 4)
    fake[:, 0] = 10.0
    a = d(batch.x, None, teacher_logits=fake).loss
    b = d(batch.x, None).loss
    assert not torch.allclose(a, b)


def test_hard_trains_without_labels(tiny, dm):
    d = build_distiller("hard", tiny(4, 2), tiny(8, 1), dm.input_shape)
    out = d(next(dm.train_batches(0)).x, None)
    assert set(out.losses) == {"pseudo"}


def test_kd_with_alpha_below_one_needs_labels(tiny, dm):
    d = build_distiller("kd", tiny(4, 2), tiny(8, 1), dm.input_shape, alpha=0.5)
    with pytest.raises(ConfigError, match="needs labels"):
        d(next(dm.train_batches(0)).x, None)


def test_teacher_wrapper_refuses_training_mode(tiny):
    t = Teacher(tiny(8))
    t.train()
    assert not t.training and not t.model.training
    assert not any(p.requires_grad for p in t.parameters())


def test_fitnet_adapter_sized_by_probe_and_feature_methods_can_add_kd(tiny, dm):
    student, teacher = tiny(4, 2), tiny(8, 1)
    d = build_distiller("fitnet", student, teacher, dm.input_shape, kd_weight=0.5)
    assert d.adapter[0].in_channels == 8 and d.adapter[0].out_channels == 16  # layer2 of width 4 vs width 8
    out = d(*(lambda b: (b.x, b.y))(next(dm.train_batches(0))))
    assert set(out.losses) == {"ce", "kd", "hint"}


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("kd", {"temperature": -1.0}, "temperature must be in"),
        ("kd", {"alpha": 1.5}, r"alpha must be in \[0.0, 1.0\]"),
        ("kd", {"alpa": 0.5}, "no parameter"),
        ("kd", {"kd_weight": 0.5}, "no parameter"),
        ("fitnet", {"student_layer": "nope"}, "unknown layer"),
        ("hard", {"pseudo_weight": -1.0}, "pseudo_weight"),
    ],
)
def test_bad_hyper_parameters_are_refused(name, params, match, tiny, dm):
    with pytest.raises(ConfigError, match=match):
        build_distiller(name, tiny(4, 2), tiny(8, 1), dm.input_shape, **params)


def test_unknown_method_lists_the_registered_ones(tiny, dm):
    with pytest.raises(UnknownNameError, match=r"Available: .*fitnet.*kd"):
        build_distiller("kdd", tiny(4), tiny(8), dm.input_shape)


def test_method_params_are_introspectable():
    assert {"alpha", "temperature", "label_smoothing"} <= set(method_params("kd"))
    assert "hint_weight" in method_params("fitnet") and "kd_weight" in method_params("fitnet")


def test_feature_tap_captures_and_removes_hooks(tiny):
    model = tiny(4)
    with FeatureTap(model, ["layer1", "layer3"]) as tap:
        model(torch.zeros(2, 1, 28, 28))
        assert tap["layer1"].shape == (2, 4, 28, 28) and tap["layer3"].shape[1] == 16
        assert len(model.layer1._forward_hooks) == 1
    assert len(model.layer1._forward_hooks) == 0 and not tap.features
    assert probe_shapes(model, ["pool"], (1, 28, 28)) == {"pool": (16,)}


def test_feature_tap_unknown_name_lists_real_ones(tiny):
    with pytest.raises(ConfigError, match="layer3"):
        FeatureTap(tiny(4), ["layer4"])

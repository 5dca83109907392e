"""Multi-teacher KD (loss against NumPy, the MultiTeacher container, the distiller) and born-again networks."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from distill.born_again import born_again
from distill.distillers import build_distiller
from distill.distillers.multi_teacher import MultiTeacher
from distill.engine.trainer import OptimSettings, Trainer
from distill.errors import ConfigError
from distill.losses.logits import kd_loss, multi_teacher_kd_loss


def np_softmax(z, temperature=1.0):
    z = np.asarray(z, dtype=np.float64) / temperature
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def np_kl_rows(p, q):
    """Mean over rows of KL(p_i ‖ q_i)."""
    return float(np.mean(np.sum(p * (np.log(p) - np.log(q)), axis=1)))


def np_multi_sum(s, ts, weights, temps):
    terms = zip(ts, weights, temps, strict=True)
    return sum(w * T**2 * np_kl_rows(np_softmax(t, T), np_softmax(s, T)) for t, w, T in terms)


def np_multi_average(s, ts, weights, T):
    q = sum(w * np_softmax(t, T) for t, w in zip(ts, weights, strict=True)) / sum(weights)
    return T**2 * np_kl_rows(q, np_softmax(s, T))


def case(seed, n=3, b=5, k=6):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, k, generator=g, dtype=torch.float64) * 2, torch.randn(
        n, b, k, generator=g, dtype=torch.float64
    ) * 3


@pytest.mark.parametrize("seed", [0, 1])
def test_weighted_sum_matches_numpy(seed):
    s, ts = case(seed)
    weights, temps = [0.5, 0.3, 0.2], [1.0, 4.0, 2.0]
    want = np_multi_sum(s.numpy(), ts.numpy(), weights, temps)
    assert multi_teacher_kd_loss(s, ts, weights, temps).item() == pytest.approx(want, rel=1e-9)
    assert multi_teacher_kd_loss(s, list(ts), weights, temps).item() == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("seed", [0, 1])
def test_average_mode_matches_numpy(seed):
    s, ts = case(seed)
    weights = [2.0, 1.0, 1.0]  # not normalised: the average divides by their sum
    want = np_multi_average(s.numpy(), ts.numpy(), weights, 3.0)
    assert multi_teacher_kd_loss(s, ts, weights, [3.0] * 3, mode="average").item() == pytest.approx(want, rel=1e-9)


def test_one_teacher_or_identical_teachers_reduce_to_kd():
    s, ts = case(2)
    kd = kd_loss(s, ts[0], 2.0).item()
    assert multi_teacher_kd_loss(s, ts[:1], [1.0], [2.0]).item() == pytest.approx(kd, rel=1e-12)
    same = ts[0].expand(3, -1, -1)
    assert multi_teacher_kd_loss(s, same, [0.2, 0.3, 0.5], [2.0] * 3, "average").item() == pytest.approx(kd, rel=1e-9)
    # a zero weight removes a teacher
    mixed = torch.stack([ts[0], ts[1]])
    assert multi_teacher_kd_loss(s, mixed, [1.0, 0.0], [2.0, 2.0], "average").item() == pytest.approx(kd, rel=1e-9)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"weights": [1.0, 1.0], "temperatures": [1.0] * 3}, "3 teachers"),
        ({"weights": [1.0, -1.0, 1.0], "temperatures": [1.0] * 3}, "weights must be"),
        ({"weights": [1.0] * 3, "temperatures": [1.0, 2.0, 2.0], "mode": "average"}, "one temperature"),
        ({"weights": [1.0] * 3, "temperatures": [1.0] * 3, "mode": "max"}, "mode must be"),
    ],
)
def test_loss_refuses_inconsistent_arguments(kwargs, match):
    s, ts = case(3)
    with pytest.raises(ValueError, match=match):
        multi_teacher_kd_loss(s, ts, **kwargs)


def test_multi_teacher_container_is_frozen_and_returns_the_ensemble(tiny):
    a, b = tiny(8, 1), tiny(4, 3)
    mt = MultiTeacher([a, b], weights=[3.0, 1.0])
    mt.train()
    assert not mt.training and not any(m.training for m in mt.modules())
    assert not any(p.requires_grad for p in mt.parameters())
    x = torch.randn(5, 1, 28, 28)
    stacked = mt.all_logits(x)
    assert stacked.shape == (2, 5, 4)
    with torch.no_grad():
        la, lb = a(x), b(x)
    assert torch.allclose(stacked[0], la) and torch.allclose(stacked[1], lb)
    q = 0.75 * np_softmax(la.numpy()) + 0.25 * np_softmax(lb.numpy())
    assert np.allclose(F.softmax(mt(x), dim=1).numpy(), q, atol=1e-6)


def test_distiller_loss_with_two_teachers_matches_numpy(tiny, dm):
    student, t1, t2 = tiny(4, 2), tiny(8, 1), tiny(6, 3)
    d = build_distiller("multi_kd", student, [t1, t2], dm.input_shape, weights=[3.0, 1.0], temperatures=[2.0, 4.0])
    batch = next(dm.train_batches(0))
    out = d(batch.x, batch.y)
    with torch.no_grad():
        s = student(batch.x)
        ts = [t1.eval()(batch.x).double().numpy(), t2.eval()(batch.x).double().numpy()]
    want = 0.9 * np_multi_sum(s.double().numpy(), ts, [0.75, 0.25], [2.0, 4.0])
    assert set(out.losses) == {"ce", "kd"}
    assert out.losses["kd"].item() == pytest.approx(want, rel=1e-4)
    assert out.losses["ce"].item() == pytest.approx(0.1 * F.cross_entropy(s, batch.y).item(), rel=1e-5)
    d.mode = "average"
    d.temperatures = (3.0, 3.0)
    want = 0.9 * np_multi_average(s.double().numpy(), ts, [0.75, 0.25], 3.0)
    assert d(batch.x, batch.y).losses["kd"].item() == pytest.approx(want, rel=1e-4)


def test_distiller_with_one_teacher_equals_kd(tiny, dm):
    batch = next(dm.train_batches(0))
    student, teacher = tiny(4, 2), tiny(8, 1)
    multi = build_distiller("multi_kd", student, teacher, dm.input_shape)(batch.x, batch.y)
    kd = build_distiller("kd", student, teacher, dm.input_shape, alpha=0.9, temperature=4.0)(batch.x, batch.y)
    assert multi.loss.item() == pytest.approx(kd.loss.item(), rel=1e-5)


def test_distiller_trains_with_a_multi_teacher_and_evaluates_agreement(tiny, dm):
    student, t1, t2 = tiny(4, 2), tiny(8, 1), tiny(6, 3)
    before = [{k: v.clone() for k, v in t.state_dict().items()} for t in (t1, t2)]
    mt = MultiTeacher([t1, t2])
    d = build_distiller("multi_kd", student, mt, dm.input_shape, mode="average", ce_weight=0.0, kd_weight=1.0)
    d.train()
    opt = torch.optim.SGD(d.trainable_parameters(), lr=0.1)
    assert all(p.requires_grad for p in d.trainable_parameters())
    assert len(d.trainable_parameters()) == len(list(student.parameters()))
    batch = next(dm.train_batches(0))
    out = d(batch.x, None)  # ce_weight 0: no labels needed
    opt.zero_grad()
    out.loss.backward()
    opt.step()
    for t, b in zip((t1, t2), before, strict=True):
        assert all(torch.equal(v, b[k]) for k, v in t.state_dict().items())
    metrics = Trainer(d, dm, OptimSettings(epochs=1)).evaluate("val")
    # by hand: the ensemble's prediction is the argmax of the mean of the two teachers' probabilities
    x_val = (dm.x_val.float() / 255 - dm.mean.view(1, -1, 1, 1)) / dm.std.view(1, -1, 1, 1)
    with torch.no_grad():
        probs = (t1.eval()(x_val).softmax(1) + t2.eval()(x_val).softmax(1)) / 2
        pred = student.eval()(x_val).argmax(1)
    student.train()
    assert metrics["agreement"] == pytest.approx((pred == probs.argmax(1)).double().mean().item(), abs=1e-6)
    assert metrics["acc"] == pytest.approx((pred == dm.y_val).double().mean().item(), abs=1e-6)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"weights": [1.0]}, "2 teacher"),
        ({"weights": [1.0, -2.0]}, r"weights\[1\]"),
        ({"weights": [0.0, 0.0]}, "all be zero"),
        ({"temperatures": [1.0, 0.0]}, r"temperatures\[1\]"),
        ({"temperatures": [1.0, 2.0], "mode": "average"}, "one temperature"),
        ({"mode": "vote"}, "mode must be"),
    ],
)
def test_distiller_refuses_bad_parameters(params, match, tiny, dm):
    with pytest.raises(ConfigError, match=match):
        build_distiller("multi_kd", tiny(4, 2), [tiny(8, 1), tiny(8, 3)], dm.input_shape, **params)


def test_born_again_two_generations(tiny, dm, tmp_path):
    teacher = tiny(8, 1)
    seeds = iter([10, 11])
    results = born_again(
        lambda: tiny(8, next(seeds)),
        teacher,
        dm,
        OptimSettings(epochs=1, lr=0.05),
        generations=2,
        params={"alpha": 0.5},
        out_dir=tmp_path,
        spec={"model": "cnn", "num_classes": 4, "in_channels": 1, "kwargs": {"width": 8, "blocks": 1}},
    )
    assert len(results) == 2
    (g1, m1), (g2, m2) = results
    assert g1 is not g2 and g1 is not teacher
    assert m1["generation"] == 1 and m2["generation"] == 2
    assert "agreement" in m1["test"] and "ensemble" not in m1 and "ensemble" in m2
    assert all(p.requires_grad for g in (g1, g2) for p in g.parameters())  # unfrozen after teaching gen 2
    # the ensemble metric: the average of the two generations' softmax outputs on the test split, recomputed here
    with torch.no_grad():
        x = torch.cat([b.x for b in dm.eval_batches("test")])
        y = torch.cat([b.y for b in dm.eval_batches("test")]).numpy()
        p = (np_softmax(g1.eval()(x).numpy()) + np_softmax(g2.eval()(x).numpy())) / 2
    assert m2["ensemble"]["acc"] == pytest.approx(float((p.argmax(1) == y).mean()), abs=1e-9)
    for k in (1, 2):
        assert (tmp_path / f"gen{k}" / "metrics.json").is_file()
        assert (tmp_path / f"gen{k}" / "model.safetensors").is_file()
    # generation 2 learnt from generation 1: its recorded teacher agreement is against generation 1
    with torch.no_grad():
        agree = (g2(x).argmax(1) == g1(x).argmax(1)).float().mean().item()
    assert m2["test"]["agreement"] == pytest.approx(agree, abs=1e-9)


def test_born_again_refuses_zero_generations(tiny, dm):
    with pytest.raises(ConfigError, match="generations"):
        born_again(lambda: tiny(8), tiny(8), dm, OptimSettings(epochs=1), generations=0)

"""DKD, DIST and logit-standardised KD: each loss against a NumPy reference written from the paper's formula."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from distill.distillers import build_distiller
from distill.engine.trainer import OptimSettings, Trainer
from distill.errors import ConfigError
from distill.losses.logits import dist_loss, dkd_loss, kd_loss, lskd_loss, nckd_loss, tckd_loss

B, K = 6, 7


def np_softmax(z, temperature=1.0):
    z = np.asarray(z, dtype=np.float64) / temperature
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def np_kl(p, q):
    return float(np.sum(p * (np.log(p) - np.log(q))))


def rand_case(seed, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(B, K, generator=g, dtype=torch.float64) * scale
    t = torch.randn(B, K, generator=g, dtype=torch.float64) * scale
    y = torch.randint(0, K, (B,), generator=g)
    return s, t, y


# -- DKD ------------------------------------------------------------------------------------------------------------


def np_tckd_nckd(s, t, y, temperature):
    """Per-sample TCKD and NCKD from the paper's definitions, with plain loops."""
    tckd, nckd = [], []
    for i in range(len(y)):
        ps, pt = np_softmax(s[i], temperature), np_softmax(t[i], temperature)
        bs = np.array([ps[y[i]], 1 - ps[y[i]]])
        bt = np.array([pt[y[i]], 1 - pt[y[i]]])
        tckd.append(np_kl(bt, bs))
        others = [k for k in range(len(ps)) if k != y[i]]
        hat_s = ps[others] / ps[others].sum()  # the paper's p̂: renormalised non-target probabilities
        hat_t = pt[others] / pt[others].sum()
        nckd.append(np_kl(hat_t, hat_s))
    return np.array(tckd), np.array(nckd)


@pytest.mark.parametrize(("seed", "temperature"), [(0, 4.0), (1, 1.0), (2, 2.5)])
def test_tckd_nckd_and_dkd_match_numpy(seed, temperature):
    s, t, y = rand_case(seed)
    tckd, nckd = np_tckd_nckd(s.numpy(), t.numpy(), y.numpy(), temperature)
    t2 = temperature**2
    assert tckd_loss(s, t, y, temperature).item() == pytest.approx(t2 * tckd.mean(), rel=1e-9)
    assert nckd_loss(s, t, y, temperature).item() == pytest.approx(t2 * nckd.mean(), rel=1e-9)
    got = dkd_loss(s, t, y, alpha=0.7, beta=3.0, temperature=temperature).item()
    assert got == pytest.approx(t2 * (0.7 * tckd.mean() + 3.0 * nckd.mean()), rel=1e-9)


def test_kd_decomposes_into_tckd_plus_weighted_nckd():
    """The paper's Eq. 4: KD = TCKD + (1 − p_target^t) · NCKD, per sample."""
    s, t, y = rand_case(3)
    for i in range(B):
        one = slice(i, i + 1)
        p_t = F.softmax(t[one] / 4.0, dim=1)[0, y[i]]
        rhs = tckd_loss(s[one], t[one], y[one]) + (1 - p_t) * nckd_loss(s[one], t[one], y[one])
        assert kd_loss(s[one], t[one]).item() == pytest.approx(rhs.item(), rel=1e-9)


def test_dkd_without_nckd_and_a_certain_teacher_is_the_target_log_likelihood():
    """β = 0 and the teacher's mass all on the target: TCKD = −log p_target^s (times T²)."""
    s, t, y = rand_case(4)
    t = torch.full((B, K), -200.0, dtype=torch.float64)
    t[torch.arange(B), y] = 200.0  # p_target^t = 1 − O(e^-100) at T = 4
    ps = np_softmax(s.numpy(), 4.0)
    want = 16.0 * np.mean(-np.log(ps[np.arange(B), y.numpy()]))
    assert dkd_loss(s, t, y, alpha=1.0, beta=0.0).item() == pytest.approx(want, rel=1e-4)


def test_dkd_is_zero_for_identical_logits_and_finite_for_extreme_ones():
    s, _, y = rand_case(5)
    assert dkd_loss(s, s.clone(), y).item() == pytest.approx(0.0, abs=1e-12)
    s = (s * 1e3).float().requires_grad_(True)  # saturated softmax: p_rest underflows to 0 in a naive version
    t = torch.zeros(B, K)
    t[torch.arange(B), y] = 1e4
    loss = dkd_loss(s, t, y)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()


def test_nckd_is_zero_with_two_classes():
    s, t = torch.randn(5, 2), torch.randn(5, 2)
    assert nckd_loss(s, t, torch.randint(0, 2, (5,))).item() == pytest.approx(0.0, abs=1e-7)


def test_dkd_distiller_warms_up_its_kd_terms(tiny, dm):
    student, teacher = tiny(4, 2), tiny(8, 1)
    d = build_distiller("dkd", student, teacher, dm.input_shape, alpha=2.0, beta=3.0, warmup_epochs=4)
    batch = next(dm.train_batches(0))
    with torch.no_grad():
        s, t = student(batch.x), teacher.eval()(batch.x)
    tckd, nckd = np_tckd_nckd(s.double().numpy(), t.double().numpy(), batch.y.numpy(), 4.0)
    for epoch, w in [(0, 0.25), (2, 0.75), (3, 1.0), (10, 1.0)]:
        d.set_epoch(epoch, 12)
        out = d(batch.x, batch.y)
        assert out.losses["tckd"].item() == pytest.approx(w * 2.0 * 16 * tckd.mean(), rel=1e-4)
        assert out.losses["nckd"].item() == pytest.approx(w * 3.0 * 16 * nckd.mean(), rel=1e-4)
        assert out.losses["ce"].item() == pytest.approx(F.cross_entropy(s, batch.y).item(), rel=1e-5)
    with pytest.raises(ConfigError, match="needs labels"):
        d(batch.x, None)


@pytest.mark.parametrize(
    ("epoch", "epochs", "w"),
    [
        (0, 240, 1 / 20),  # the paper's run: W = 20
        (9, 240, 10 / 20),
        (19, 240, 1.0),
        (0, 24, 0.5),  # W = 2
        (1, 24, 1.0),
        (0, 60, 0.2),  # W = 5
        (0, 12, 1.0),  # W = 1: no ramp in runs of 12 epochs or fewer
        (0, 3, 1.0),
    ],
)
def test_dkd_default_warmup_is_a_twelfth_of_the_run(epoch, epochs, w, tiny, dm):
    d = build_distiller("dkd", tiny(4, 2), tiny(8, 1), dm.input_shape)
    assert d.warmup_epochs is None and d.warmup_factor() == 1.0  # outside the trainer: full weight
    d.set_epoch(epoch, epochs)
    assert d.warmup_length() == pytest.approx(epochs / 12)
    assert d.warmup_factor() == pytest.approx(w)


def test_the_trainer_tells_dkd_the_run_length(tiny, dm):
    d = build_distiller("dkd", tiny(4, 2), tiny(8, 1), dm.input_shape)
    Trainer(d, dm, OptimSettings(epochs=24, lr=0.01)).train_epoch()
    assert (d.epoch, d.epochs) == (0, 24) and d.warmup_factor() == pytest.approx(0.5)


def test_dkd_explicit_warmup_is_used_as_given(tiny, dm):
    d = build_distiller("dkd", tiny(4, 2), tiny(8, 1), dm.input_shape, warmup_epochs=20)
    d.set_epoch(0, 24)  # a short run does not shorten an explicit warm-up
    assert d.warmup_factor() == pytest.approx(1 / 20)
    d = build_distiller("dkd", tiny(4, 2), tiny(8, 1), dm.input_shape, warmup_epochs=0)
    d.set_epoch(0, 240)
    assert d.warmup_factor() == 1.0


# -- DIST -----------------------------------------------------------------------------------------------------------


def np_dist(s, t, temperature):
    """Inter: mean over samples of 1 − corr(rows); intra: mean over classes of 1 − corr(columns)."""
    ys, yt = np_softmax(s, temperature), np_softmax(t, temperature)
    inter = np.mean([1 - np.corrcoef(ys[i], yt[i])[0, 1] for i in range(len(ys))])
    intra = np.mean([1 - np.corrcoef(ys[:, j], yt[:, j])[0, 1] for j in range(ys.shape[1])])
    return inter, intra


@pytest.mark.parametrize(("seed", "temperature"), [(0, 1.0), (1, 4.0)])
def test_dist_matches_numpy_corrcoef(seed, temperature):
    s, t, _ = rand_case(seed)
    inter, intra = np_dist(s.numpy(), t.numpy(), temperature)
    t2 = temperature**2
    assert dist_loss(s, t, 1.0, 0.0, temperature).item() == pytest.approx(t2 * inter, rel=1e-6)
    assert dist_loss(s, t, 0.0, 1.0, temperature).item() == pytest.approx(t2 * intra, rel=1e-6)
    assert dist_loss(s, t, 2.0, 0.5, temperature).item() == pytest.approx(t2 * (2 * inter + 0.5 * intra), rel=1e-6)


@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_dist_is_zero_for_an_affine_relaxation_of_the_teacher(temperature):
    """Pearson ρ ignores positive affine maps: a student with p_s = a·p_t + (1 − a)/K matches exactly, KL does not."""
    _, t, _ = rand_case(6)
    p_t = F.softmax(t / temperature, dim=1)
    s = temperature * torch.log(0.3 * p_t + 0.7 / K)  # softmax(s / T) = 0.3 p_t + 0.7 / K
    # not exactly 0: the authors' ε = 1e-8 in ρ's denominator biases low-variance columns by ε / (‖a‖‖b‖)
    assert dist_loss(s, t, temperature=temperature).item() < 1e-4
    assert dist_loss(torch.randn_like(s), t, temperature=temperature).item() > 1e-2
    assert kd_loss(s, t, temperature).item() > 1e-3


def test_dist_ignores_a_per_sample_logit_shift_but_not_a_scale():
    s, t, _ = rand_case(7)
    shift = torch.randn(B, 1, dtype=torch.float64) * 5
    assert dist_loss(s + shift, t).item() == pytest.approx(dist_loss(s, t).item(), rel=1e-9)
    assert dist_loss(2 * s, t).item() != pytest.approx(dist_loss(s, t).item(), rel=1e-3)  # softmax is not affine


def test_dist_distiller_terms(tiny, dm):
    student, teacher = tiny(4, 2), tiny(8, 1)
    d = build_distiller("dist", student, teacher, dm.input_shape, beta=2.0, gamma=0.5, temperature=1.0)
    batch = next(dm.train_batches(0))
    out = d(batch.x, batch.y)
    with torch.no_grad():
        inter, intra = np_dist(student(batch.x).double().numpy(), teacher.eval()(batch.x).double().numpy(), 1.0)
    assert set(out.losses) == {"ce", "inter", "intra"}
    assert out.losses["inter"].item() == pytest.approx(2.0 * inter, rel=1e-4)
    assert out.losses["intra"].item() == pytest.approx(0.5 * intra, rel=1e-4)


def test_dist_defaults_are_the_authors_cifar_recipe(tiny, dm):
    """β = γ = 1 and τ = 4 times the recipe's loss weight 2: effective β = γ = 2, T² = 16."""
    student, teacher = tiny(4, 2), tiny(8, 1)
    d = build_distiller("dist", student, teacher, dm.input_shape)
    assert (d.beta, d.gamma, d.temperature) == (2.0, 2.0, 4.0)
    batch = next(dm.train_batches(0))
    out = d(batch.x, batch.y)
    with torch.no_grad():
        inter, intra = np_dist(student(batch.x).double().numpy(), teacher.eval()(batch.x).double().numpy(), 4.0)
    assert out.losses["inter"].item() == pytest.approx(2.0 * 16 * inter, rel=1e-4)
    assert out.losses["intra"].item() == pytest.approx(2.0 * 16 * intra, rel=1e-4)


# -- logit standardisation --------------------------------------------------------------------------------------------


def np_lskd(s, t, temperature, eps=1e-7):
    def z(v):
        return (v - v.mean(axis=1, keepdims=True)) / (v.std(axis=1, ddof=1, keepdims=True) + eps)

    ps, pt = np_softmax(z(s), temperature), np_softmax(z(t), temperature)
    return temperature**2 * np.mean([np_kl(pt[i], ps[i]) for i in range(len(ps))])


@pytest.mark.parametrize(("seed", "temperature"), [(0, 2.0), (1, 1.0), (2, 3.0)])
def test_lskd_matches_numpy(seed, temperature):
    s, t, _ = rand_case(seed)
    want = np_lskd(s.numpy(), t.numpy(), temperature)
    assert lskd_loss(s, t, temperature).item() == pytest.approx(want, rel=1e-9)


def test_lskd_ignores_each_samples_logit_scale_and_offset():
    s, t, _ = rand_case(8)
    a = torch.rand(B, 1, dtype=torch.float64) * 5 + 0.1
    b = torch.randn(B, 1, dtype=torch.float64) * 10
    assert lskd_loss(a * s + b, t).item() == pytest.approx(lskd_loss(s, t).item(), rel=1e-6)
    # a student whose logits are an affine map of the teacher's is a perfect LSKD match, not a perfect KD match
    assert lskd_loss(3 * t + 1, t).item() == pytest.approx(0.0, abs=1e-9)
    assert kd_loss(3 * t + 1, t).item() > 1e-2


def test_lskd_distiller_uses_the_authors_weights(tiny, dm):
    student, teacher = tiny(4, 2), tiny(8, 1)
    d = build_distiller("lskd", student, teacher, dm.input_shape)
    batch = next(dm.train_batches(0))
    out = d(batch.x, batch.y)
    with torch.no_grad():
        s, t = student(batch.x), teacher.eval()(batch.x)
    assert set(out.losses) == {"ce", "lskd"}
    assert out.losses["ce"].item() == pytest.approx(0.1 * F.cross_entropy(s, batch.y).item(), rel=1e-5)
    want = 9.0 * np_lskd(s.double().numpy(), t.double().numpy(), 2.0)
    assert out.losses["lskd"].item() == pytest.approx(want, rel=1e-4)


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("dkd", {"beta": -1.0}, "beta must be in"),
        ("dkd", {"warmup_epochs": -1}, "warmup_epochs"),
        ("dist", {"gamma": -0.5}, "gamma must be in"),
        ("lskd", {"temperature": 0.0}, "temperature must be in"),
    ],
)
def test_bad_hyper_parameters_are_refused(name, params, match, tiny, dm):
    with pytest.raises(ConfigError, match=match):
        build_distiller(name, tiny(4, 2), tiny(8, 1), dm.input_shape, **params)

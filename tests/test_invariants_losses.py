"""Logit losses: properties the other loss tests leave open (found by mutation testing of losses/logits.py).

Low-precision logits are softened in float32, a temperature of 0 is refused, the documented defaults are the papers'
settings, label smoothing reaches the hard-distillation loss, and the z-score is per row.
"""

from __future__ import annotations

import math

import pytest
import torch

from distill.losses.logits import (
    dist_loss,
    dkd_loss,
    kd_loss,
    lskd_loss,
    multi_teacher_kd_loss,
    nckd_loss,
    pearson_distance,
    pseudo_label_loss,
    tckd_loss,
    zscore,
)


def logits(b: int = 6, k: int = 5, seed: int = 0, scale: float = 3.0) -> torch.Tensor:
    return torch.randn(b, k, generator=torch.Generator().manual_seed(seed)) * scale


S, T, Y = logits(seed=1), logits(seed=2), torch.tensor([0, 1, 2, 3, 4, 0])

LOSSES = {
    "kd": lambda s, t: kd_loss(s, t, 4.0),
    "tckd": lambda s, t: tckd_loss(s, t, Y, 4.0),
    "nckd": lambda s, t: nckd_loss(s, t, Y, 4.0),
    "dkd": lambda s, t: dkd_loss(s, t, Y),
    "dist": lambda s, t: dist_loss(s, t),
    "lskd": lambda s, t: lskd_loss(s, t),
    "multi_sum": lambda s, t: multi_teacher_kd_loss(s, [t, t.flip(0)], [0.3, 0.7], [2.0, 4.0]),
    "multi_average": lambda s, t: multi_teacher_kd_loss(s, [t, t.flip(0)], [0.3, 0.7], [3.0, 3.0], mode="average"),
}


@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_logits_are_softened_in_float32(name, dtype):
    """The loss of bf16/fp16 logits is the float32 loss of the same (rounded) values, and comes back as float32."""
    fn = LOSSES[name]
    s, t = S.to(dtype), T.to(dtype)
    got = fn(s, t)
    want = fn(s.float(), t.float())
    assert got.dtype == torch.float32, name
    assert got.item() == pytest.approx(want.item(), rel=1e-5, abs=1e-7), name


def test_zscore_of_low_precision_logits_is_float32():
    z = zscore(S.bfloat16())
    assert z.dtype == torch.float32
    torch.testing.assert_close(z, zscore(S.bfloat16().float()))


@pytest.mark.parametrize(
    "call",
    [
        lambda t: kd_loss(S, T, t),
        lambda t: nckd_loss(S, T, Y, t),
        lambda t: dist_loss(S, T, temperature=t),
        lambda t: multi_teacher_kd_loss(S, [T, T], [1.0, 1.0], [t, t], mode="average"),
    ],
    ids=["kd", "nckd", "dist", "multi_average"],
)
@pytest.mark.parametrize("temperature", [0.0, -1.0])
def test_a_temperature_of_zero_or_below_is_refused(call, temperature):
    with pytest.raises(ValueError, match=r"temperature must be > 0, got -?[01]"):
        call(temperature)


def test_documented_defaults_are_the_papers_settings():
    # DIST: β = γ = 1, T = 4; DKD: α = 1, β = 8, T = 4; LSKD: T = 2; KD: T = 4
    assert dist_loss(S, T).item() == pytest.approx(dist_loss(S, T, beta=1.0, gamma=1.0, temperature=4.0).item())
    assert dkd_loss(S, T, Y).item() == pytest.approx(dkd_loss(S, T, Y, alpha=1.0, beta=8.0, temperature=4.0).item())
    assert lskd_loss(S, T).item() == pytest.approx(lskd_loss(S, T, temperature=2.0).item())
    assert kd_loss(S, T).item() == pytest.approx(kd_loss(S, T, temperature=4.0).item())
    assert tckd_loss(S, T, Y).item() == pytest.approx(tckd_loss(S, T, Y, temperature=4.0).item())
    assert nckd_loss(S, T, Y).item() == pytest.approx(nckd_loss(S, T, Y, temperature=4.0).item())
    # each setting matters on these logits, so the comparisons above can fail
    assert dist_loss(S, T, beta=2.0).item() != pytest.approx(dist_loss(S, T).item())
    assert dist_loss(S, T, gamma=2.0).item() != pytest.approx(dist_loss(S, T).item())
    assert dkd_loss(S, T, Y, alpha=2.0).item() != pytest.approx(dkd_loss(S, T, Y).item())
    assert lskd_loss(S, T, temperature=3.0).item() != pytest.approx(lskd_loss(S, T).item())


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_pseudo_label_loss_applies_label_smoothing_to_the_teachers_argmax(eps):
    k = S.shape[1]
    log_p = S.double().log_softmax(1)
    hard = T.argmax(1)
    want = -((1 - eps) * log_p[torch.arange(len(S)), hard] + eps / k * log_p.sum(1)).mean()
    assert pseudo_label_loss(S, T, label_smoothing=eps).item() == pytest.approx(want.item(), rel=1e-5)


def test_zscore_standardises_each_row_on_its_own():
    rows = torch.stack([torch.tensor([1.0, 2.0, 3.0, 10.0]), torch.tensor([-50.0, -40.0, -45.0, -41.0])])
    z = zscore(rows)
    torch.testing.assert_close(z.mean(1), torch.zeros(2), atol=1e-6, rtol=0)
    torch.testing.assert_close(z.std(1), torch.ones(2), atol=1e-6, rtol=0)  # sample std (N − 1)
    r0 = rows[0]
    want0 = (r0 - r0.mean()) / math.sqrt(((r0 - r0.mean()) ** 2).sum().item() / 3)
    torch.testing.assert_close(z[0], want0, atol=1e-6, rtol=0)
    # invariant to a positive affine map of each row
    torch.testing.assert_close(zscore(rows * torch.tensor([[2.0], [0.5]]) + torch.tensor([[7.0], [-3.0]])), z)


def test_multi_teacher_average_of_one_teacher_is_kd():
    want = kd_loss(S, T, 3.0).item()
    assert multi_teacher_kd_loss(S, [T], [2.0], [3.0], mode="average").item() == pytest.approx(want, rel=1e-6)
    assert multi_teacher_kd_loss(S, T[None], [1.0], [3.0], mode="average").item() == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("mode", ["sum", "average"])
def test_multi_teacher_weights_that_are_all_zero_are_refused(mode):
    with pytest.raises(ValueError, match="positive sum"):
        multi_teacher_kd_loss(S, [T, T], [0.0, 0.0], [2.0, 2.0], mode=mode)


def test_multi_teacher_average_runs_on_the_logits_device():
    """The mixture weights are made on the teachers' device: on a device other than the default (here ``meta``,
    which checks devices without computing) the loss must not mix devices."""
    s = torch.zeros(4, 5, device="meta")
    t = torch.zeros(2, 4, 5, device="meta")
    out = multi_teacher_kd_loss(s, t, [0.3, 0.7], [4.0, 4.0], mode="average")
    assert out.device.type == "meta" and out.shape == ()


def test_pearson_distance_of_tiny_scale_rows_matches_numpy_with_its_eps():
    """Rows whose norms are near ``eps`` (nearly constant outputs): ρ = cov / (|a||b| + eps) stays in [-1, 1]."""
    np = pytest.importorskip("numpy")
    a = torch.tensor([[1e-4, -1e-4, 0.0], [3.0, 1.0, 2.0]], dtype=torch.float64)
    b = torch.tensor([[1e-4, -1e-4, 0.0], [1.0, 2.0, 4.0]], dtype=torch.float64)
    an, bn = a.numpy() - a.numpy().mean(1, keepdims=True), b.numpy() - b.numpy().mean(1, keepdims=True)
    rho = (an * bn).sum(1) / (np.linalg.norm(an, axis=1) * np.linalg.norm(bn, axis=1) + 1e-8)
    got = pearson_distance(a, b, eps=1e-8)
    assert abs(rho[0] - 2e-8 / 3e-8) < 1e-9  # the tiny row: 2e-8 / (2e-8 + 1e-8)
    assert got.item() == pytest.approx(1.0 - rho.mean(), abs=1e-12)
    assert 0.0 <= got.item() <= 2.0

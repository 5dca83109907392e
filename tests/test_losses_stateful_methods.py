"""VID, FT, CRD and ReviewKD losses against independent NumPy / plain-loop computations of the papers' formulas."""

import math

import numpy as np
import pytest
import torch

from distill.losses.contrastive import (
    bank_scores,
    contrast_scores,
    info_nce_loss,
    memory_update,
    nce_loss,
    nce_normaliser,
)
from distill.losses.review import hcl_loss, hcl_sum
from distill.losses.variational import factor_transfer_loss, vid_nll


def t64(a: np.ndarray) -> torch.Tensor:
    return torch.tensor(a, dtype=torch.float64)


def unit_rows(a: np.ndarray) -> np.ndarray:
    return a / np.sqrt((a**2).sum(axis=-1, keepdims=True))


# -- VID -----------------------------------------------------------------------------------------------------------
def test_vid_nll_matches_plain_loop_over_elements():
    rng = np.random.default_rng(0)
    mu, t = rng.normal(size=(2, 3, 2, 2)), rng.normal(size=(2, 3, 2, 2))
    var = rng.uniform(0.2, 3.0, size=3)
    total, count = 0.0, 0
    for b, c, h, w in np.ndindex(*t.shape):
        total += 0.5 * (math.log(var[c]) + (t[b, c, h, w] - mu[b, c, h, w]) ** 2 / var[c])
        count += 1
    assert vid_nll(t64(mu), t64(t), t64(var)).item() == pytest.approx(total / count, rel=1e-10)


def test_vid_nll_is_gaussian_nll_minus_constant():
    rng = np.random.default_rng(1)
    mu, t = rng.normal(size=(4, 5)), rng.normal(size=(4, 5))
    var = rng.uniform(0.5, 2.0, size=(1, 5))
    nll = -torch.distributions.Normal(t64(mu), t64(np.sqrt(var))).log_prob(t64(t)).mean().item()
    assert vid_nll(t64(mu), t64(t), t64(var)).item() == pytest.approx(nll - 0.5 * math.log(2 * math.pi), rel=1e-10)


def test_vid_nll_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="shapes differ"):
        vid_nll(torch.zeros(2, 3), torch.zeros(2, 4), torch.ones(3))


# -- Factor transfer -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("p", [1, 2])
def test_factor_transfer_loss_matches_numpy(p):
    rng = np.random.default_rng(2)
    s, t = rng.normal(size=(3, 4, 2, 2)), rng.normal(size=(3, 4, 2, 2))
    fs, ft = unit_rows(s.reshape(3, -1)), unit_rows(t.reshape(3, -1))
    diff = ft - fs
    norm = np.mean([sum(abs(d) ** p for d in row) ** (1 / p) for row in diff])  # the paper's ‖·‖_p per sample
    mean = np.mean(np.abs(diff) ** p)
    assert factor_transfer_loss(t64(s), t64(t), p, "norm").item() == pytest.approx(norm, rel=1e-10)
    assert factor_transfer_loss(t64(s), t64(t), p, "mean").item() == pytest.approx(mean, rel=1e-10)


def test_factor_transfer_loss_ignores_per_sample_scale():
    rng = np.random.default_rng(3)
    s, t = rng.normal(size=(2, 8)), rng.normal(size=(2, 8))
    scale = np.array([[3.0], [0.25]])
    a = factor_transfer_loss(t64(s), t64(t)).item()
    assert factor_transfer_loss(t64(s * scale), t64(t / scale)).item() == pytest.approx(a, rel=1e-10)
    assert factor_transfer_loss(t64(s), t64(s)).item() == pytest.approx(0.0, abs=1e-12)


# -- CRD -----------------------------------------------------------------------------------------------------------
def test_contrast_scores_and_normaliser_match_loops():
    rng = np.random.default_rng(4)
    a = unit_rows(rng.normal(size=(3, 5)))
    c = unit_rows(rng.normal(size=(3, 4, 5)))
    expected = np.array([[math.exp(sum(c[i, j] * a[i]) / 0.07) for j in range(4)] for i in range(3)])
    got = contrast_scores(t64(a), t64(c), 0.07)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)
    assert nce_normaliser(got, 1000).item() == pytest.approx(expected.mean() * 1000, rel=1e-10)


@pytest.mark.parametrize("n", [6, 200])  # a whole-bank product and a gather
def test_bank_scores_match_loops(n):
    rng = np.random.default_rng(n)
    bank, a = unit_rows(rng.normal(size=(n, 3))), unit_rows(rng.normal(size=(2, 3)))
    idx = rng.integers(0, n, size=(2, 5))
    expected = np.array([[math.exp(bank[j] @ a[i] / 0.1) for j in row] for i, row in enumerate(idx)])
    np.testing.assert_allclose(bank_scores(t64(a), t64(bank), torch.tensor(idx), 0.1).numpy(), expected, rtol=1e-10)


def test_nce_loss_matches_the_papers_formula():
    rng = np.random.default_rng(5)
    n, k, b = 50, 6, 4
    probs = rng.uniform(0.001, 0.5, size=(b, k + 1))
    pn = 1.0 / n
    total = 0.0
    for i in range(b):
        total += math.log(probs[i, 0] / (probs[i, 0] + k * pn + 1e-7))
        for j in range(1, k + 1):
            total += math.log(k * pn / (probs[i, j] + k * pn + 1e-7))
    assert nce_loss(t64(probs), n).item() == pytest.approx(-total / b, rel=1e-10)


def test_nce_loss_with_fixed_negatives_end_to_end():
    """Embeddings -> scores -> Z -> NCE, all by hand, for a fixed bank and fixed negatives."""
    rng = np.random.default_rng(6)
    n, d, tau = 10, 4, 0.5
    bank = unit_rows(rng.normal(size=(n, d)))
    v = unit_rows(rng.normal(size=(3, d)))
    idx = np.array([[0, 4, 5], [1, 7, 2], [2, 2, 9]])  # positive first
    h = np.array([[math.exp(bank[j] @ v[i] / tau) for j in row] for i, row in enumerate(idx)])
    z = h.mean() * n
    p = h / z
    k, pn = 2, 1 / n
    expected = -np.mean(
        [
            math.log(r[0] / (r[0] + k * pn + 1e-7)) + sum(math.log(k * pn / (q + k * pn + 1e-7)) for q in r[1:])
            for r in p
        ]
    )
    scores = contrast_scores(t64(v), t64(bank)[torch.tensor(idx)], tau)
    got = nce_loss(scores / nce_normaliser(scores, n), n)
    assert got.item() == pytest.approx(expected, rel=1e-10)


def test_memory_update_is_momentum_then_renormalisation():
    rng = np.random.default_rng(7)
    old, new = rng.normal(size=(3, 6)), rng.normal(size=(3, 6))
    for m in (0.0, 0.5, 0.9):
        mixed = m * old + (1 - m) * new
        expected = mixed / np.linalg.norm(mixed, axis=1, keepdims=True)
        np.testing.assert_allclose(memory_update(t64(old), t64(new), m).numpy(), expected, rtol=1e-10)


def test_info_nce_loss_matches_numpy():
    rng = np.random.default_rng(8)
    a, p = unit_rows(rng.normal(size=(5, 3))), unit_rows(rng.normal(size=(5, 3)))
    logits = a @ p.T / 0.1
    log_softmax = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    assert info_nce_loss(t64(a), t64(p), 0.1).item() == pytest.approx(-np.mean(np.diag(log_softmax)), rel=1e-10)


# -- ReviewKD HCL --------------------------------------------------------------------------------------------------
def np_adaptive_avg_pool(x: np.ndarray, size: int) -> np.ndarray:
    """PyTorch's adaptive-pooling bins: [floor(i·H/l), ceil((i+1)·H/l))."""
    b, c, h, w = x.shape
    out = np.zeros((b, c, size, size))
    for i in range(size):
        h0, h1 = (i * h) // size, -((-(i + 1) * h) // size)
        for j in range(size):
            w0, w1 = (j * w) // size, -((-(j + 1) * w) // size)
            out[:, :, i, j] = x[:, :, h0:h1, w0:w1].mean(axis=(2, 3))
    return out


def np_hcl(s: np.ndarray, t: np.ndarray, levels=(4, 2, 1)) -> float:
    """Weights 1, ½, ¼, ⅛ for the full map and each used pyramid level (levels >= H skipped), normalised."""
    terms = [(1.0, np.mean((s - t) ** 2))]
    for level in levels:
        if level < s.shape[2]:
            pooled = np_adaptive_avg_pool(s, level) - np_adaptive_avg_pool(t, level)
            terms.append((terms[-1][0] / 2, np.mean(pooled**2)))
    return sum(w * v for w, v in terms) / sum(w for w, _ in terms)


@pytest.mark.parametrize("size", [8, 7, 4, 2, 1])
def test_hcl_matches_numpy(size):
    rng = np.random.default_rng(size)
    s, t = rng.normal(size=(2, 3, size, size)), rng.normal(size=(2, 3, size, size))
    assert hcl_loss(t64(s), t64(t)).item() == pytest.approx(np_hcl(s, t), rel=1e-10)


def test_hcl_weights_on_an_8x8_map_are_one_half_quarter_eighth():
    rng = np.random.default_rng(9)
    s, t = rng.normal(size=(1, 2, 8, 8)), rng.normal(size=(1, 2, 8, 8))
    mse = [np.mean((s - t) ** 2)] + [
        np.mean((np_adaptive_avg_pool(s, k) - np_adaptive_avg_pool(t, k)) ** 2) for k in (4, 2, 1)
    ]
    expected = (mse[0] + 0.5 * mse[1] + 0.25 * mse[2] + 0.125 * mse[3]) / 1.875
    assert hcl_loss(t64(s), t64(t)).item() == pytest.approx(expected, rel=1e-10)


def test_hcl_sum_adds_stages():
    rng = np.random.default_rng(10)
    pairs = [(rng.normal(size=(2, 2, h, h)), rng.normal(size=(2, 2, h, h))) for h in (4, 1)]
    got = hcl_sum([t64(s) for s, _ in pairs], [t64(t) for _, t in pairs])
    assert got.item() == pytest.approx(sum(np_hcl(s, t) for s, t in pairs), rel=1e-10)

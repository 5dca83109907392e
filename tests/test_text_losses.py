"""Text losses pinned to independent NumPy / plain-loop computations on random inputs."""

import math

import numpy as np
import pytest
import torch

from distill.text.losses import (
    attention_kl_loss,
    attention_mse_loss,
    embedding_loss,
    hidden_mse_loss,
    kd_loss,
    masked_cross_entropy,
)


def _mask(b, t, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, t + 1, size=b)
    lengths[0] = t
    return (np.arange(t)[None, :] < lengths[:, None]).astype(np.int64)


def test_hidden_mse_masks_padding_and_matches_loops():
    rng = np.random.default_rng(1)
    s, t = rng.normal(size=(3, 5, 4)), rng.normal(size=(3, 5, 4))
    mask = _mask(3, 5)
    total, count = 0.0, 0
    for b in range(3):
        for i in range(5):
            if mask[b, i]:
                for d in range(4):
                    total += (s[b, i, d] - t[b, i, d]) ** 2
                    count += 1
    got = hidden_mse_loss(torch.tensor(s), torch.tensor(t), torch.tensor(mask))
    assert got.item() == pytest.approx(total / count, rel=1e-6)
    assert hidden_mse_loss(torch.tensor(s), torch.tensor(t)).item() == pytest.approx(((s - t) ** 2).mean(), rel=1e-6)
    # what lies under the padding does not matter
    t2 = t.copy()
    t2[mask == 0] += 100.0
    assert hidden_mse_loss(torch.tensor(s), torch.tensor(t2), torch.tensor(mask)).item() == pytest.approx(got.item())


def _softmax(z, axis=-1):
    z = z - z.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


def test_attention_kl_matches_loops_over_heads_and_real_queries():
    rng = np.random.default_rng(2)
    b, h, t = 2, 3, 4
    mask = _mask(b, t, seed=3)
    key_bias = np.where(mask[:, None, None, :] == 1, 0.0, -1e9)
    a_s = _softmax(rng.normal(size=(b, h, t, t)) + key_bias)
    a_t = _softmax(2 * rng.normal(size=(b, h, t, t)) + key_bias)
    total, count = 0.0, 0
    for bi in range(b):
        for hi in range(h):
            for q in range(t):
                if not mask[bi, q]:
                    continue
                kl = 0.0
                for k in range(t):
                    p, r = a_t[bi, hi, q, k], a_s[bi, hi, q, k]
                    if p > 0:
                        kl += p * (math.log(max(p, 1e-12)) - math.log(max(r, 1e-12)))
                total += kl
                count += 1
    got = attention_kl_loss(torch.tensor(a_s), torch.tensor(a_t), torch.tensor(mask))
    assert got.item() == pytest.approx(total / count, rel=1e-6)
    assert attention_kl_loss(torch.tensor(a_t), torch.tensor(a_t), torch.tensor(mask)).item() == pytest.approx(0.0)
    with pytest.raises(ValueError, match="shape"):
        attention_kl_loss(torch.tensor(a_s[:, :2]), torch.tensor(a_t), torch.tensor(mask))


def test_attention_mse_is_tinybert_per_head_mean_over_real_token_pairs():
    """TinyBERT eq. 7, (1/h) Σ_heads MSE(A_S, A_T), each text's n×n block of real (query, key) pairs."""
    rng = np.random.default_rng(4)
    b, h, t = 3, 2, 5
    mask = _mask(b, t, seed=5)
    a_s, a_t = rng.uniform(size=(b, h, t, t)), rng.uniform(size=(b, h, t, t))
    total, count = 0.0, 0
    for bi in range(b):
        n = int(mask[bi].sum())
        for hi in range(h):
            for q in range(n):
                for k in range(n):
                    total += (a_s[bi, hi, q, k] - a_t[bi, hi, q, k]) ** 2
                    count += 1
    got = attention_mse_loss(torch.tensor(a_s), torch.tensor(a_t), torch.tensor(mask))
    assert count < b * h * t * t  # some padding is left out
    assert got.item() == pytest.approx(total / count, rel=1e-6)
    assert attention_mse_loss(torch.tensor(a_s), torch.tensor(a_t)).item() == pytest.approx(((a_s - a_t) ** 2).mean())
    junk = a_t.copy()
    junk[mask[:, None, :, None].repeat(h, 1).repeat(t, 3) == 0] += 5.0  # padded queries
    junk[mask[:, None, None, :].repeat(h, 1).repeat(t, 2) == 0] += 5.0  # padded keys
    assert attention_mse_loss(torch.tensor(a_s), torch.tensor(junk), torch.tensor(mask)).item() == pytest.approx(
        got.item(), rel=1e-6
    )
    with pytest.raises(ValueError, match="shape"):
        attention_mse_loss(torch.tensor(a_s[:, :1]), torch.tensor(a_t), torch.tensor(mask))
    a = torch.tensor(a_s, requires_grad=True)
    tt = torch.tensor(a_t, requires_grad=True)
    attention_mse_loss(a, tt, torch.tensor(mask)).backward()
    assert a.grad is not None and tt.grad is None


def test_attention_kl_gradient_flows_to_student_only():
    a_s = torch.softmax(torch.randn(1, 2, 3, 3), -1).requires_grad_(True)
    a_t = torch.softmax(torch.randn(1, 2, 3, 3), -1).requires_grad_(True)
    attention_kl_loss(a_s, a_t).backward()
    assert a_s.grad is not None and a_s.grad.abs().sum() > 0 and a_t.grad is None


@pytest.mark.parametrize("kind", ["mse", "cosine"])
def test_embedding_loss_matches_numpy(kind):
    rng = np.random.default_rng(4)
    s, t = rng.normal(size=(5, 6)), rng.normal(size=(5, 6))
    t = t / np.linalg.norm(t, axis=1, keepdims=True)
    if kind == "mse":
        want = np.mean((s - t) ** 2)
    else:
        cos = [np.dot(s[i], t[i]) / (np.linalg.norm(s[i]) * np.linalg.norm(t[i])) for i in range(5)]
        want = np.mean([1 - c for c in cos])
    assert embedding_loss(torch.tensor(s), torch.tensor(t), kind).item() == pytest.approx(want, rel=1e-6)
    with pytest.raises(ValueError, match="unknown"):
        embedding_loss(torch.tensor(s), torch.tensor(t), "l1")


def test_masked_cross_entropy_skips_unlabeled_rows():
    rng = np.random.default_rng(5)
    logits = rng.normal(size=(6, 3))
    y = np.array([0, -1, 2, 1, -1, 2])
    terms = []
    for i in range(6):
        if y[i] < 0:
            continue
        lse = math.log(sum(math.exp(v) for v in logits[i]))
        terms.append(lse - logits[i, y[i]])
    got = masked_cross_entropy(torch.tensor(logits), torch.tensor(y))
    assert got.item() == pytest.approx(np.mean(terms), rel=1e-6)
    none = masked_cross_entropy(torch.tensor(logits), torch.full((6,), -1))
    assert none.item() == 0.0


def test_kd_loss_reused_for_text_matches_formula():
    rng = np.random.default_rng(6)
    s, t, temp = rng.normal(size=(4, 2)), rng.normal(size=(4, 2)), 2.0
    p_s, p_t = _softmax(s / temp), _softmax(t / temp)
    want = temp**2 * np.mean(np.sum(p_t * (np.log(p_t) - np.log(p_s)), axis=1))
    assert kd_loss(torch.tensor(s), torch.tensor(t), temp).item() == pytest.approx(want, rel=1e-6)

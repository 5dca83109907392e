"""Loss functions: edge cases the other loss tests leave open (found by mutation testing of src/distill/losses/*).

Error messages that are part of the contract, non-square and unequal feature maps for the resize paths, explicit
non-default arguments and documented defaults, dtypes and devices kept, tiny-norm rows with an ``eps``. Every
expected value is computed independently: with numpy by hand, a closed form, or a brute-force loop.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from distill.losses.attention import at_loss, attention_map, match_size, nst_loss, poly_kernel
from distill.losses.contrastive import info_nce_loss, memory_update
from distill.losses.relational import (
    cc_loss,
    cosine_conditional,
    pairwise_distances,
    pkt_loss,
    rkd_angle_loss,
    rkd_distance_loss,
    sp_loss,
    taylor_rbf_correlation,
)
from distill.losses.review import hcl_loss, hcl_sum
from distill.losses.variational import factor, factor_transfer_loss, vid_nll


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# -- numpy references -----------------------------------------------------------------------------------------------


def np_adaptive_pool(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Adaptive average pooling of the last two axes, bins ``[floor(i·n/m), ceil((i+1)·n/m))``, by a loop."""
    h, w = x.shape[-2:]
    out = np.zeros((*x.shape[:-2], *size))
    for i in range(size[0]):
        h0, h1 = (i * h) // size[0], -((-(i + 1) * h) // size[0])
        for j in range(size[1]):
            w0, w1 = (j * w) // size[1], -((-(j + 1) * w) // size[1])
            out[..., i, j] = x[..., h0:h1, w0:w1].mean(axis=(-2, -1))
    return out


def np_bilinear_1d_weights(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` weights of linear interpolation with half-pixel centres (``align_corners=False``)."""
    m = np.zeros((n_out, n_in))
    for i in range(n_out):
        src = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = min(math.floor(src), n_in - 1)
        i1 = min(i0 + 1, n_in - 1)
        lam = src - i0
        m[i, i0] += 1.0 - lam
        m[i, i1] += lam
    return m


def np_bilinear(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    wh = np_bilinear_1d_weights(x.shape[-2], size[0])
    ww = np_bilinear_1d_weights(x.shape[-1], size[1])
    return np.einsum("ih,...hw,jw->...ij", wh, x, ww)


def np_attention(f: np.ndarray, p: float) -> np.ndarray:
    am = (np.abs(f) ** p).mean(axis=1).reshape(len(f), -1)
    return am / np.linalg.norm(am, axis=1, keepdims=True)


def np_normalise_rows(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)


# -- attention: AT, NST and their resizing --------------------------------------------------------------------------


def test_at_loss_refuses_different_batch_sizes_naming_both():
    """Channel counts differ from the batch sizes, so the message must name the batch dimensions themselves."""
    with pytest.raises(ValueError, match=r"^batch sizes differ: 4 vs 6$"):
        at_loss(rand(4, 3, 5, 5), rand(6, 2, 5, 5))


def test_attention_map_refuses_a_non_4d_map_naming_its_shape():
    with pytest.raises(ValueError, match=r"^attention_map needs a \(B, C, H, W\) feature map, got shape \(2, 3, 4\)$"):
        attention_map(rand(2, 3, 4))


@pytest.mark.parametrize("resize", ["pool_first", "to_teacher"])
def test_at_loss_refuses_a_3d_teacher_with_attention_maps_message(resize):
    with pytest.raises(ValueError, match=r"^attention_map needs a \(B, C, H, W\) feature map, got shape \(2, 4, 5\)$"):
        at_loss(rand(2, 3, 4, 5), rand(2, 4, 5, seed=1), resize=resize)


@pytest.mark.parametrize(
    ("shape", "size"),
    [
        ((3, 8), (2, 4)),  # both shrink, H ≠ W: pooling
        ((6, 4), (2, 4)),  # W kept, H shrinks: pooling
        ((4, 6), (4, 2)),  # H kept, W shrinks: pooling
        ((8, 3), (4, 6)),  # H shrinks but W grows: bilinear
        ((6, 2), (2, 4)),  # H shrinks by 3 but W grows: bilinear
        ((2, 3), (5, 7)),  # both grow: bilinear
    ],
)
def test_match_size_pools_only_when_no_side_grows(shape, size):
    """Adaptive average pooling when neither side grows, bilinear (half-pixel centres) otherwise."""
    x = rand(2, 3, *shape)
    shrink = shape[0] >= size[0] and shape[1] >= size[1]
    want = np_adaptive_pool(x.numpy(), size) if shrink else np_bilinear(x.numpy(), size)
    got = match_size(x, size)
    assert got.shape == (2, 3, *size)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("p", [1.0, 3.0, 4.0])
@pytest.mark.parametrize(("s_hw", "t_hw"), [((4, 6), (4, 6)), ((8, 6), (4, 3)), ((4, 3), (8, 6))])
def test_at_loss_pool_first_uses_p_for_both_maps(p, s_hw, t_hw):
    """``p ≠ 2``: both attention maps (student's and teacher's) are ``|f|^p``, the larger feature map pooled first."""
    s, t = rand(3, 4, *s_hw, seed=1), rand(3, 2, *t_hw, seed=2)
    size = (min(s_hw[0], t_hw[0]), min(s_hw[1], t_hw[1]))
    sn, tn = np_adaptive_pool(s.numpy(), size), np_adaptive_pool(t.numpy(), size)
    want = ((np_attention(sn, p) - np_attention(tn, p)) ** 2).mean()
    assert at_loss(s, t, p=p).item() == pytest.approx(want, rel=1e-10)


@pytest.mark.parametrize("p", [1.0, 3.0])
def test_at_loss_to_teacher_resizes_the_students_attention_map_with_p(p):
    s, t = rand(3, 4, 8, 6, seed=1), rand(3, 2, 4, 3, seed=2)
    am = (np.abs(s.numpy()) ** p).mean(axis=1, keepdims=True)
    am = np_adaptive_pool(am, (4, 3)).reshape(3, -1)
    a_s = am / np.linalg.norm(am, axis=1, keepdims=True)
    want = ((a_s - np_attention(t.numpy(), p)) ** 2).mean()
    assert at_loss(s, t, p=p, resize="to_teacher").item() == pytest.approx(want, rel=1e-10)


@pytest.mark.parametrize(("s_shape", "t_shape"), [((2, 3, 4, 4), (2, 3, 4)), ((2, 3, 4), (2, 3, 4, 4))])
def test_nst_loss_refuses_either_map_not_4d_with_its_exact_message(s_shape, t_shape):
    with pytest.raises(ValueError, match=r"^nst_loss needs \(B, C, H, W\) feature maps$"):
        nst_loss(rand(*s_shape), rand(*t_shape, seed=1))


def test_poly_kernel_defaults_are_the_papers_degree_2_and_c_0():
    a, b = rand(2, 3, 5, seed=1), rand(2, 4, 5, seed=2)
    want = np.einsum("bmn,bkn->bmk", a.numpy(), b.numpy()) ** 2
    np.testing.assert_allclose(poly_kernel(a, b).numpy(), want, rtol=1e-12)


# -- contrastive ----------------------------------------------------------------------------------------------------


def test_info_nce_loss_runs_on_the_embeddings_device():
    """The targets are made on the anchors' device (``meta`` checks devices without computing)."""
    a = torch.zeros(4, 8, device="meta")
    out = info_nce_loss(a, torch.zeros(4, 8, device="meta"), 0.1)
    assert out.device.type == "meta" and out.shape == ()


@pytest.mark.parametrize(("bank_dtype", "new_dtype"), [(torch.float32, torch.float64), (torch.float64, torch.float32)])
def test_memory_update_keeps_the_banks_dtype_and_matches_the_momentum_rule(bank_dtype, new_dtype):
    rows = rand(4, 6, seed=1).to(bank_dtype)
    new = rand(4, 6, seed=2).to(new_dtype)
    m = 0.5
    out = memory_update(rows, new, m)
    assert out.dtype == bank_dtype
    # by hand: the new rows are first cast to the bank's dtype, then mixed and L2-normalised per row
    new_as_bank = new.to(bank_dtype).to(torch.float64).numpy()
    mix = m * rows.to(torch.float64).numpy() + (1 - m) * new_as_bank
    want = mix / np.linalg.norm(mix, axis=1, keepdims=True)
    tol = 1e-6 if bank_dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(out.to(torch.float64).numpy(), want, rtol=tol, atol=tol)


def test_memory_update_casts_new_rows_before_mixing_in_float64():
    """A float32 ``new`` mixed into a float64 bank: cast first (exact), then ``(1 − m) · new`` in float64."""
    rows = rand(3, 5, seed=3)
    new = rand(3, 5, seed=4).to(torch.float32)
    m = 0.3
    mix = m * rows.numpy() + (1 - m) * new.numpy().astype(np.float64)
    want = mix / np.linalg.norm(mix, axis=1, keepdims=True)
    got = memory_update(rows, new, m).numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)


# -- relational -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("loss", [sp_loss, rkd_distance_loss, rkd_angle_loss, pkt_loss, cc_loss])
def test_relational_losses_refuse_different_batch_sizes_naming_both(loss):
    with pytest.raises(ValueError, match=r"^batch sizes differ: student 4 vs teacher 6$"):
        loss(rand(4, 3), rand(6, 5, seed=1))


def np_rkd_distance(s: np.ndarray, t: np.ndarray) -> float:
    def norm_dist(e: np.ndarray) -> np.ndarray:
        b = len(e)
        d = np.array([[np.linalg.norm(e[i] - e[j]) for j in range(b)] for i in range(b)])
        return d / (d.sum() / (b * (b - 1)))

    diff = np.abs(norm_dist(s) - norm_dist(t))
    return float(np.where(diff < 1.0, 0.5 * diff**2, diff - 0.5).mean())


@pytest.mark.parametrize("scale", [1e-3, 0.2, 1.0, 50.0])
def test_rkd_distance_loss_of_small_embeddings_matches_numpy_and_is_scale_free(scale):
    """Distances are divided by their mean however small it is (above 1e-12): the loss ignores the scale."""
    s, t = rand(5, 3, seed=1), rand(5, 4, seed=2)
    want = np_rkd_distance(s.numpy(), t.numpy())
    assert rkd_distance_loss(s * scale, t * scale).item() == pytest.approx(want, rel=1e-9)


def np_cosine_conditional(f: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    f = np_normalise_rows(f.reshape(len(f), -1), eps)
    k = (f @ f.T + 1.0) / 2.0
    return k / k.sum(axis=1, keepdims=True)


def test_cosine_conditional_rows_are_distributions_matching_numpy():
    x = rand(5, 3, seed=1)
    got = cosine_conditional(x)
    np.testing.assert_allclose(got.sum(dim=1).numpy(), np.ones(5), rtol=1e-12)
    np.testing.assert_allclose(got.numpy(), np_cosine_conditional(x.numpy()), rtol=1e-12)


def test_pkt_loss_matches_numpy():
    s, t = rand(5, 3, seed=1), rand(5, 7, seed=2)
    ps, pt = np_cosine_conditional(s.numpy()), np_cosine_conditional(t.numpy())
    want = (pt * np.log((pt + 1e-7) / (ps + 1e-7))).mean()
    assert pkt_loss(s, t).item() == pytest.approx(want, rel=1e-10)


def test_cosine_conditional_uses_its_eps_for_tiny_rows():
    """A row with norm below ``eps`` is divided by ``eps``, not by its norm."""
    x = torch.tensor([[3e-3, 4e-3], [1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    got = cosine_conditional(x, eps=0.1)
    np.testing.assert_allclose(got.numpy(), np_cosine_conditional(x.numpy(), eps=0.1), rtol=1e-12)


def test_pairwise_distances_runs_on_the_embeddings_device():
    out = pairwise_distances(torch.zeros(4, 3, device="meta"))
    assert out.device.type == "meta" and out.shape == (4, 4)
    assert rkd_distance_loss(torch.zeros(4, 3, device="meta"), torch.zeros(4, 5, device="meta")).device.type == "meta"


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_pairwise_distances_keep_a_low_precision_dtype(dtype):
    e = rand(4, 3, seed=1).to(dtype)
    out = pairwise_distances(e)
    assert out.dtype == dtype
    assert (torch.diagonal(out) == 0).all()


def np_taylor_rbf(x: np.ndarray, gamma: float, order: int) -> np.ndarray:
    f = np_normalise_rows(x.reshape(len(x), -1))
    sim = f @ f.T
    return sum(math.exp(-2 * gamma) * (2 * gamma) ** p / math.factorial(p) * sim**p for p in range(order + 1))


def test_taylor_rbf_correlation_defaults_match_the_series_with_gamma_04_order_2():
    x = rand(4, 2, 3, seed=1)
    np.testing.assert_allclose(taylor_rbf_correlation(x).numpy(), np_taylor_rbf(x.numpy(), 0.4, 2), rtol=1e-12)


@pytest.mark.parametrize(("gamma", "order"), [(0.4, 2), (1.0, 1), (0.25, 4)])
def test_taylor_rbf_correlation_approximates_the_positive_rbf(gamma, order):
    """The series is a sum of positive terms for ``sim ≥ 0`` and tends to ``exp(−γ‖f_i − f_j‖²)``: on the diagonal
    (``sim = 1``) its truncation is the partial sum of ``e^{-2γ} e^{2γ} = 1``."""
    x = rand(4, 3, seed=2)
    got = taylor_rbf_correlation(x, gamma=gamma, order=order).numpy()
    np.testing.assert_allclose(got, np_taylor_rbf(x.numpy(), gamma, order), rtol=1e-12)
    partial = sum(math.exp(-2 * gamma) * (2 * gamma) ** p / math.factorial(p) for p in range(order + 1))
    np.testing.assert_allclose(np.diag(got), np.full(4, partial), rtol=1e-12)
    assert 0.0 < partial <= 1.0


# -- review (HCL) ---------------------------------------------------------------------------------------------------


def np_hcl(s: np.ndarray, t: np.ndarray, levels) -> float:
    loss, weight, total = ((s - t) ** 2).mean(), 1.0, 1.0
    for level in levels:
        if level >= s.shape[2]:  # levels not smaller than the height are skipped
            continue
        weight /= 2.0
        loss += weight * ((np_adaptive_pool(s, (level, level)) - np_adaptive_pool(t, (level, level))) ** 2).mean()
        total += weight
    return loss / total


@pytest.mark.parametrize("hw", [(8, 2), (2, 8), (6, 3)])
def test_hcl_loss_on_non_square_maps_skips_levels_by_height(hw):
    s, t = rand(2, 3, *hw, seed=1), rand(2, 3, *hw, seed=2)
    assert hcl_loss(s, t).item() == pytest.approx(np_hcl(s.numpy(), t.numpy(), (4, 2, 1)), rel=1e-10)


def test_hcl_loss_refuses_different_shapes_naming_both():
    with pytest.raises(ValueError, match=r"^HCL shapes differ: student \(2, 3, 4, 4\) vs teacher \(2, 3, 2, 2\)$"):
        hcl_loss(rand(2, 3, 4, 4), rand(2, 3, 2, 2))


def test_hcl_sum_refuses_different_stage_counts_naming_both():
    with pytest.raises(ValueError, match=r"^2 student stages vs 3 teacher stages$"):
        hcl_sum([rand(1, 2, 4, 4)] * 2, [rand(1, 2, 4, 4)] * 3)


@pytest.mark.parametrize("levels", [(2,), (3, 1), ()])
def test_hcl_sum_passes_its_levels_to_every_stage(levels):
    s = [rand(2, 3, 8, 8, seed=1), rand(2, 4, 4, 4, seed=3)]
    t = [rand(2, 3, 8, 8, seed=2), rand(2, 4, 4, 4, seed=4)]
    want = sum(np_hcl(a.numpy(), b.numpy(), levels) for a, b in zip(s, t, strict=True))
    assert hcl_sum(s, t, levels).item() == pytest.approx(want, rel=1e-10)


# -- variational ----------------------------------------------------------------------------------------------------


def test_factor_uses_its_eps_for_tiny_codes():
    x = torch.tensor([[3e-3, 4e-3], [3.0, 4.0]], dtype=torch.float64)
    np.testing.assert_allclose(factor(x, eps=0.1).numpy(), [[0.03, 0.04], [0.6, 0.8]], rtol=1e-12)


def test_factor_transfer_loss_default_is_the_mean_absolute_difference():
    """Defaults ``p=1, reduction="mean"``: the mean of ``|Δ|`` of the normalised factors."""
    s, t = rand(3, 2, 2, 2, seed=1), rand(3, 2, 2, 2, seed=2)
    d = np_normalise_rows(t.numpy().reshape(3, -1)) - np_normalise_rows(s.numpy().reshape(3, -1))
    assert factor_transfer_loss(s, t).item() == pytest.approx(np.abs(d).mean(), rel=1e-12)


def test_factor_transfer_loss_refuses_bad_arguments_with_their_messages():
    with pytest.raises(ValueError, match=r"^factor shapes differ: student \(2, 3\) vs teacher \(2, 4\)$"):
        factor_transfer_loss(rand(2, 3), rand(2, 4))
    with pytest.raises(ValueError, match=r"^p must be 1 or 2, got 3$"):
        factor_transfer_loss(rand(2, 3), rand(2, 3), p=3)
    with pytest.raises(ValueError, match=r"^reduction must be 'mean' or 'norm', got 'sum'$"):
        factor_transfer_loss(rand(2, 3), rand(2, 3), reduction="sum")


def np_vid(mean: np.ndarray, target: np.ndarray, var: np.ndarray) -> float:
    return float((0.5 * (np.log(var) + (target - mean) ** 2 / var)).mean())


def test_vid_nll_with_an_elementwise_variance_of_a_4d_map():
    mean, target = rand(2, 3, 4, 5, seed=1), rand(2, 3, 4, 5, seed=2)
    var = rand(2, 3, 4, 5, seed=3).abs() + 0.1
    want = np_vid(mean.numpy(), target.numpy(), var.numpy())
    assert vid_nll(mean, target, var).item() == pytest.approx(want, rel=1e-12)


def test_vid_nll_per_channel_variance_of_a_3d_sequence():
    """``(B, C, L)`` features with a ``(C,)`` variance: one variance per channel, broadcast over ``L``."""
    mean, target = rand(2, 3, 5, seed=1), rand(2, 3, 5, seed=2)
    var = torch.tensor([0.5, 1.0, 2.0], dtype=torch.float64)
    want = np_vid(mean.numpy(), target.numpy(), var.numpy()[None, :, None])
    assert vid_nll(mean, target, var).item() == pytest.approx(want, rel=1e-12)

"""Losses on the spatial statistics of feature maps: attention transfer (AT) and neuron selectivity transfer (NST).

Both compare a student map with a teacher map at one spatial resolution. When the resolutions differ, two
conventions are offered (``resize``):

* ``"pool_first"`` (default; the reference code's — the CRD benchmark's AT and NST, RepDistiller; the AT authors'
  own code only pairs maps of equal size): the larger *feature map* — student's or teacher's — is
  adaptive-average-pooled to the smaller one's size before anything is squared or normalised;
* ``"to_teacher"``: the student is brought to the teacher's size — AT resizes the student's attention map (after
  squaring), NST the student's feature map — by adaptive average pooling when larger, bilinear upsampling when
  smaller; the teacher is never resized.

With equal sizes both give the same value.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

RESIZE_MODES = ("pool_first", "to_teacher")


def check_resize(resize: str) -> None:
    """Refuse an unknown ``resize`` convention."""
    if resize not in RESIZE_MODES:
        raise ValueError(f"resize must be one of {RESIZE_MODES}, got {resize!r}")


def match_size(x: Tensor, size: tuple[int, int]) -> Tensor:
    """Resize ``(B, C, H, W)`` to ``size``: adaptive average pooling when shrinking, bilinear when growing."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if x.shape[-2] >= size[0] and x.shape[-1] >= size[1]:
        return F.adaptive_avg_pool2d(x, size)
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def pool_to_smaller(student_feat: Tensor, teacher_feat: Tensor) -> tuple[Tensor, Tensor]:
    """The reference convention: adaptive-average-pool whichever map is larger to ``(min H, min W)``."""
    size = (min(student_feat.shape[-2], teacher_feat.shape[-2]), min(student_feat.shape[-1], teacher_feat.shape[-1]))
    pool = [f if tuple(f.shape[-2:]) == size else F.adaptive_avg_pool2d(f, size) for f in (student_feat, teacher_feat)]
    return pool[0], pool[1]


def attention_map(feat: Tensor, p: float = 2.0, size: tuple[int, int] | None = None) -> Tensor:
    """Zagoruyko & Komodakis (2017): the channel mean of ``|f|^p``, flattened and L2-normalised per sample.

    ``(B, C, H, W) -> (B, H·W)``; ``size`` resizes the ``(H, W)`` map before flattening (mismatched stages).
    The mean (not the paper's sum) over channels makes no difference after the normalisation.
    """
    if feat.dim() != 4:
        raise ValueError(f"attention_map needs a (B, C, H, W) feature map, got shape {tuple(feat.shape)}")
    am = feat.abs().pow(p).mean(dim=1, keepdim=True)  # (B, 1, H, W)
    if size is not None:
        am = match_size(am, size)
    return F.normalize(am.flatten(1), dim=1)


def at_loss(student_feat: Tensor, teacher_feat: Tensor, p: float = 2.0, resize: str = "pool_first") -> Tensor:
    """Attention transfer for one pair of stages: mean squared difference of the normalised attention maps.

    This is the squared-L2 variant used by the CRD benchmark (Tian et al., 2020), averaged over batch and
    positions. Mismatched spatial sizes are handled by ``resize`` (see the module docstring): ``"pool_first"``
    pools the larger feature map before the attention map is formed, ``"to_teacher"`` resizes the student's
    attention map to the teacher's size.
    """
    check_resize(resize)
    if student_feat.shape[0] != teacher_feat.shape[0]:
        raise ValueError(f"batch sizes differ: {student_feat.shape[0]} vs {teacher_feat.shape[0]}")
    teacher_feat = teacher_feat.detach()
    if resize == "pool_first":
        student_feat, teacher_feat = pool_to_smaller(student_feat, teacher_feat)
        a_s = attention_map(student_feat, p)
    else:
        a_s = attention_map(student_feat, p, tuple(teacher_feat.shape[-2:]))
    a_t = attention_map(teacher_feat, p)
    return (a_s - a_t).pow(2).mean()


def poly_kernel(a: Tensor, b: Tensor, degree: int = 2, c: float = 0.0) -> Tensor:
    """``(x·y + c)^d`` between every row of ``a`` ``(B, M, N)`` and of ``b`` ``(B, K, N)`` -> ``(B, M, K)``."""
    return (a @ b.transpose(1, 2) + c).pow(degree)


def nst_loss(
    student_feat: Tensor, teacher_feat: Tensor, degree: int = 2, c: float = 0.0, resize: str = "pool_first"
) -> Tensor:
    """Neuron selectivity transfer (Huang & Wang, 2017): squared MMD between the channel distributions.

    Each channel's activations over the ``H·W`` positions are one sample, L2-normalised; with kernel ``k``::

        MMD² = mean_{i,i'} k(t_i, t_i') + mean_{j,j'} k(s_j, s_j') − 2 · mean_{i,j} k(s_j, t_i)

    averaged over the batch. The channel counts of student and teacher may differ; mismatched spatial sizes are
    handled by ``resize`` (see the module docstring): ``"pool_first"`` pools the larger map, ``"to_teacher"``
    resizes the student's map to the teacher's. The paper's default kernel is polynomial with ``d=2, c=0``.
    """
    check_resize(resize)
    if student_feat.dim() != 4 or teacher_feat.dim() != 4:
        raise ValueError("nst_loss needs (B, C, H, W) feature maps")
    teacher_feat = teacher_feat.detach()
    if resize == "pool_first":
        student_feat, teacher_feat = pool_to_smaller(student_feat, teacher_feat)
    else:
        student_feat = match_size(student_feat, tuple(teacher_feat.shape[-2:]))
    s = F.normalize(student_feat.flatten(2), dim=2)  # (B, C_s, H·W)
    t = F.normalize(teacher_feat.flatten(2), dim=2)  # (B, C_t, H·W)
    k_tt = poly_kernel(t, t, degree, c).mean()
    k_ss = poly_kernel(s, s, degree, c).mean()
    k_st = poly_kernel(s, t, degree, c).mean()
    return k_tt + k_ss - 2 * k_st

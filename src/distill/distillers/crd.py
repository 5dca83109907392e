"""Contrastive Representation Distillation (Tian, Krishnan & Isola, ICLR 2020, arXiv:1910.10699)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.distillers.base import StepInput, check_range, register_method
from distill.distillers.feature_base import FeatureDistiller
from distill.errors import ConfigError
from distill.losses.contrastive import bank_scores, info_nce_loss, memory_update, nce_loss, nce_normaliser


class Embed(nn.Module):
    """A linear projection to ``feat_dim`` followed by L2 normalisation. ``(B, ...) -> (B, feat_dim)``."""

    def __init__(self, in_dim: int, feat_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, feat_dim)

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(self.linear(x.flatten(1)), dim=1)


@register_method("crd")
class CRD(FeatureDistiller):
    """``ce_weight · CE + crd_weight · (NCE_s + NCE_t) [+ kd_weight · KD]`` (set ``kd_weight=1`` for CRD+KD).

    The student's and the teacher's penultimate features are embedded (linear, ``feat_dim``, L2-normalised). Two
    memory banks (buffers of ``num_samples × feat_dim``, saved with the state dict) hold a running embedding of
    every training sample, one per network. For each sample, ``nce_k`` negatives are drawn uniformly from the
    training set; the student's embedding is contrasted with the teacher bank (positive: the sample's own row) and
    the teacher's embedding with the student bank, each with the NCE loss at temperature ``nce_t`` and the
    normalising constant ``Z`` estimated on the first batch (buffers too, so fixed across resumes). Afterwards the
    batch's rows are updated: ``normalize(m · old + (1 − m) · new)`` with ``m = nce_momentum``. ``nce_k`` is
    clamped to ``num_samples − 1`` on small data.

    Without memory banks — ``num_samples`` unknown (the method built without the data's size) or a step without
    sample ``index`` — each term falls back to an in-batch InfoNCE at temperature ``nce_t`` (the other samples of
    the batch are the negatives) and the banks are left untouched. The trainer always passes ``index``, and the
    pipeline passes ``num_samples``.

    Args:
        crd_weight: β (0.8, as in the paper's CIFAR-100 setting).
        feat_dim: embedding size (128).
        nce_k: negatives per sample (16384).
        nce_t: temperature τ (0.07).
        nce_momentum: memory-bank momentum (0.5).
        student_layer / teacher_layer: the features to embed (default: each model's ``penultimate``).
        num_samples: training-set size (supplied by the pipeline).
    """

    single_layer = True

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | None = None,
        *,
        crd_weight: float = 0.8,
        feat_dim: int = 128,
        nce_k: int = 16384,
        nce_t: float = 0.07,
        nce_momentum: float = 0.5,
        student_layer: str | None = None,
        teacher_layer: str | None = None,
        num_samples: int | None = None,
        input_shape=None,
        **kw,
    ) -> None:
        check_range("crd_weight", crd_weight, lo=0.0)
        check_range("feat_dim", feat_dim, lo=1)
        check_range("nce_k", nce_k, lo=1)
        check_range("nce_t", nce_t, lo=0.0, lo_open=True)
        check_range("nce_momentum", nce_momentum, 0.0, 1.0, hi_open=True)
        if num_samples is not None:
            check_range("num_samples", num_samples, lo=2)
        if input_shape is None:
            raise ConfigError("crd needs input_shape to size its embeddings")
        super().__init__(student, teacher, (student_layer, teacher_layer), probe=True, input_shape=input_shape, **kw)
        self.crd_weight, self.feat_dim, self.nce_t, self.nce_momentum = crd_weight, feat_dim, nce_t, nce_momentum
        self.num_samples = num_samples
        self.nce_k = min(nce_k, num_samples - 1) if num_samples else nce_k
        (s_shape,), (t_shape,) = self.student_shapes, self.teacher_shapes
        self.embed_s = Embed(math.prod(s_shape), feat_dim)
        self.embed_t = Embed(math.prod(t_shape), feat_dim)
        if num_samples:
            bound = 1.0 / math.sqrt(feat_dim / 3)  # uniform init with unit expected row norm
            self.register_buffer("memory_s", torch.rand(num_samples, feat_dim).mul_(2 * bound).sub_(bound))
            self.register_buffer("memory_t", torch.rand(num_samples, feat_dim).mul_(2 * bound).sub_(bound))
            self.register_buffer("z_s", torch.tensor(-1.0))  # -1: not estimated yet
            self.register_buffer("z_t", torch.tensor(-1.0))

    @property
    def has_memory(self) -> bool:
        return self.num_samples is not None

    def feature_loss(self, s_feats: list[Tensor], t_feats: list[Tensor], b: StepInput) -> dict[str, Tensor]:
        (s_feat,), (t_feat,) = s_feats, t_feats
        with torch.autocast(b.x.device.type, enabled=False):  # exp(·/0.07) needs float32
            v_s = self.embed_s(s_feat.float())  # (B, D)
            v_t = self.embed_t(t_feat.float())
            if self.has_memory and b.index is not None:
                loss = self._memory_nce(v_s, v_t, b.index)
            else:
                loss = info_nce_loss(v_s, v_t, self.nce_t) + info_nce_loss(v_t, v_s, self.nce_t)
        return {"crd": self.crd_weight * loss}

    def sample_negatives(self, index: Tensor) -> Tensor:
        """``nce_k`` sample positions per anchor, uniform over the training set. ``(B,) -> (B, nce_k)``"""
        assert self.num_samples is not None
        return torch.randint(0, self.num_samples, (len(index), self.nce_k), device=index.device)

    def _memory_nce(self, v_s: Tensor, v_t: Tensor, index: Tensor) -> Tensor:
        n = self.num_samples
        assert n is not None
        index = index.to(self.memory_s.device).long()
        if int(index.max()) >= n or int(index.min()) < 0:
            raise ConfigError(f"crd: sample index out of range for a memory bank of {n} samples (num_samples)")
        idx = torch.cat([index[:, None], self.sample_negatives(index)], dim=1)  # (B, K + 1), the positive first
        scores_s = bank_scores(v_s, self.memory_t, idx, self.nce_t)  # student anchor vs teacher bank
        scores_t = bank_scores(v_t, self.memory_s, idx, self.nce_t)  # teacher anchor vs student bank
        if self.z_s < 0:
            self.z_s.fill_(nce_normaliser(scores_s, n).item())
            self.z_t.fill_(nce_normaliser(scores_t, n).item())
        loss = nce_loss(scores_s / self.z_s, n) + nce_loss(scores_t / self.z_t, n)
        if self.training:
            m = self.nce_momentum
            with torch.no_grad():  # out of place: the scores' backward still needs the banks as they were
                self.memory_s = self.memory_s.index_copy(0, index, memory_update(self.memory_s[index], v_s, m))
                self.memory_t = self.memory_t.index_copy(0, index, memory_update(self.memory_t[index], v_t, m))
        return loss

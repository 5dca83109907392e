"""Batched tensor augmentation: random crop with padding, horizontal flip, normalisation, and for spectrograms
(:mod:`distill.data.audio`) a time shift, background-noise mixing and SpecAugment masks.

Augmentation is split into *sampling* parameters (:func:`sample_views`) and *applying* them (:func:`apply_views`),
so a view can be recorded and replayed exactly — the teacher-output cache relies on that. Everything works on a
whole ``(B, C, H, W)`` uint8 batch at once; there is no per-sample Python work.

The speech augmentations (all off by default; a dataset asks for them with ``meta["augment"]`` and gives its noise
bank as ``meta["noise_bank"]``, see :func:`spec_for`), applied in this order to uint8 log-mel spectrograms whose
levels map linearly to ``[-top_db, 0]`` dB (:mod:`distill.data.spectrogram`):

* time shift by ``s`` frames along the last (time) axis, ``|s| <= time_shift``; frames shifted in are silence (0);
* with probability ``noise_prob``, one piece of the noise bank mixed in at an SNR drawn from ``snr_db`` in steps of
  0.1 dB: in the power domain, ``P = P_x + g · P_n`` with ``g = ΣP_x / (ΣP_n · 10^(SNR/10))`` (sums over the whole
  spectrogram, so ``10·log10(ΣP_x / Σ(g·P_n))`` is the SNR), then back to dB and re-quantised;
* SpecAugment (Park et al. 2019): one frequency mask of ``f ~ U{0..F}`` bands from ``f0 ~ U{0..H-f}`` and one time
  mask of ``t ~ U{0..T}`` frames from ``t0 ~ U{0..W-t}``, set to 0 (the −top_db floor).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from distill.errors import DataError

# the columns of Views.speech: shift (frames), noise piece (-1: none), SNR (tenths of dB), frequency mask start and
# width, time mask start and width — all small integers, so the teacher cache stores them exactly (int16)
SPEECH_COLUMNS = ("shift", "noise", "snr_tenths", "f0", "f", "t0", "t")


@dataclass(frozen=True)
class AugmentSpec:
    """What augmentation a dataset gets. The defaults (``crop_padding=0``, ``hflip=False``, no speech part) mean none.

    ``size`` is the ``(H, W)`` of the spectrograms the masks are drawn for, ``noise`` the uint8 noise bank
    ``(M, C, H, W)`` (not compared: :meth:`describe` names it by its sha256).
    """

    crop_padding: int = 0
    hflip: bool = False
    time_shift: int = 0
    noise_prob: float = 0.0
    snr_db: tuple[float, float] = (0.0, 20.0)
    freq_mask: int = 0
    time_mask: int = 0
    size: tuple[int, int] = (0, 0)
    top_db: float = 80.0
    noise: Tensor | None = field(default=None, compare=False, repr=False)

    @property
    def speech(self) -> bool:
        """Whether any of the speech augmentations is on."""
        noisy = self.noise_prob > 0 and self.noise is not None and len(self.noise) > 0
        return self.time_shift > 0 or noisy or self.freq_mask > 0 or self.time_mask > 0

    @property
    def enabled(self) -> bool:
        return self.crop_padding > 0 or self.hflip or self.speech

    def describe(self) -> dict[str, Any]:
        """What identifies the augmentation (the teacher cache's key): only the image fields unless speech is on."""
        d: dict[str, Any] = {"crop_padding": self.crop_padding, "hflip": self.hflip}
        if self.speech:
            noise = None
            if self.noise is not None and self.noise_prob > 0:
                noise = hashlib.sha256(self.noise.contiguous().cpu().numpy().tobytes()).hexdigest()
                noise += f"|{tuple(self.noise.shape)}"
            d["speech"] = {
                "time_shift": self.time_shift,
                "noise_prob": self.noise_prob,
                "snr_db": list(self.snr_db),
                "freq_mask": self.freq_mask,
                "time_mask": self.time_mask,
                "size": list(self.size),
                "top_db": self.top_db,
                "noise": noise,
            }
        return d


def spec_for(data: Any) -> AugmentSpec:
    """The augmentation a dataset asks for: its crop and flip, plus ``meta["augment"]`` (speech) when present."""
    a = getattr(data, "meta", {}).get("augment")
    if not a:
        return AugmentSpec(data.crop_padding, data.hflip)
    return AugmentSpec(
        data.crop_padding,
        data.hflip,
        time_shift=int(a.get("time_shift", 0)),
        noise_prob=float(a.get("noise_prob", 0.0)),
        snr_db=tuple(map(float, a.get("snr_db", (0.0, 20.0)))),  # type: ignore[arg-type]
        freq_mask=int(a.get("freq_mask", 0)),
        time_mask=int(a.get("time_mask", 0)),
        size=tuple(data.image_size),  # type: ignore[arg-type]
        top_db=float(a.get("top_db", 80.0)),
        noise=data.meta.get("noise_bank"),
    )


@dataclass
class Views:
    """Per-sample augmentation parameters of one batch: crop offsets in ``[0, 2p]`` and flip flags, and with speech
    augmentation one row of :data:`SPEECH_COLUMNS` per sample."""

    dy: Tensor  # (B,) int64
    dx: Tensor  # (B,) int64
    flip: Tensor  # (B,) bool
    speech: Tensor | None = None  # (B, 7) int64

    def __getitem__(self, sl: slice | Tensor) -> Views:
        return Views(self.dy[sl], self.dx[sl], self.flip[sl], None if self.speech is None else self.speech[sl])


def _uniform_below(n: int, high: Tensor, g: torch.Generator | None) -> Tensor:
    """One integer in ``0..high[i]-1`` per sample (``high >= 1``)."""
    return (torch.rand(n, generator=g, dtype=torch.float64) * high).floor().long().clamp_max(high - 1)


def sample_speech(n: int, spec: AugmentSpec, g: torch.Generator | None = None) -> Tensor:
    h, w = spec.size
    if spec.speech and (h < 1 or w < 1):
        raise DataError("the speech augmentation needs the spectrogram size (AugmentSpec.size)")
    ts = spec.time_shift
    shift = torch.randint(-ts, ts + 1, (n,), generator=g) if ts else torch.zeros(n, dtype=torch.int64)
    noise = torch.full((n,), -1, dtype=torch.int64)
    snr = torch.zeros(n, dtype=torch.int64)
    if spec.noise is not None and spec.noise_prob > 0 and len(spec.noise):
        piece = torch.randint(0, len(spec.noise), (n,), generator=g)
        noise = torch.where(torch.rand(n, generator=g) < spec.noise_prob, piece, noise)
        lo, hi = round(spec.snr_db[0] * 10), round(spec.snr_db[1] * 10)
        snr = torch.randint(lo, hi + 1, (n,), generator=g)
    zero = torch.zeros(n, dtype=torch.int64)
    fw = torch.randint(0, min(spec.freq_mask, h) + 1, (n,), generator=g) if spec.freq_mask else zero
    f0 = _uniform_below(n, h - fw + 1, g) if spec.freq_mask else zero
    tw = torch.randint(0, min(spec.time_mask, w) + 1, (n,), generator=g) if spec.time_mask else zero
    t0 = _uniform_below(n, w - tw + 1, g) if spec.time_mask else zero
    return torch.stack([shift, noise, snr, f0, fw, t0, tw], 1)


def sample_views(n: int, spec: AugmentSpec, generator: torch.Generator | None = None) -> Views:
    p = spec.crop_padding
    dy = torch.randint(0, 2 * p + 1, (n,), generator=generator) if p else torch.full((n,), 0, dtype=torch.int64)
    dx = torch.randint(0, 2 * p + 1, (n,), generator=generator) if p else torch.full((n,), 0, dtype=torch.int64)
    flip = torch.rand(n, generator=generator) < 0.5 if spec.hflip else torch.zeros(n, dtype=torch.bool)
    speech = sample_speech(n, spec, generator) if spec.speech else None
    return Views(dy, dx, flip, speech)


def identity_views(n: int, spec: AugmentSpec) -> Views:
    """The un-augmented view (centre crop, no flip, no shift, no noise, empty masks)."""
    p = spec.crop_padding
    speech = None
    if spec.speech:
        speech = torch.zeros(n, len(SPEECH_COLUMNS), dtype=torch.int64)
        speech[:, 1] = -1
    return Views(
        torch.full((n,), p, dtype=torch.int64),
        torch.full((n,), p, dtype=torch.int64),
        torch.zeros(n, dtype=torch.bool),
        speech,
    )


def apply_views(x: Tensor, views: Views, spec: AugmentSpec) -> Tensor:
    """Crop and flip (and the speech augmentations of) a uint8 batch ``(B, C, H, W)`` as ``views`` says; returns
    the same shape and dtype."""
    b, _, h, w = x.shape
    p = spec.crop_padding
    if p:
        xp = F.pad(x, (p, p, p, p))  # zero padding, (B, C, H+2p, W+2p)
        rows = views.dy.to(x.device)[:, None] + torch.arange(h, device=x.device)[None, :]  # (B, H)
        cols = views.dx.to(x.device)[:, None] + torch.arange(w, device=x.device)[None, :]  # (B, W)
        cols = torch.where(views.flip.to(x.device)[:, None], cols.flip(1), cols)  # a flip reverses the column order
        bi = torch.arange(b, device=x.device)[:, None, None]
        x = xp.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    elif spec.hflip:
        flip = views.flip.to(x.device)[:, None, None, None]
        x = torch.where(flip, x.flip(3), x)
    if spec.speech:
        if views.speech is None:
            raise DataError(
                "these augmentation views were recorded without the speech augmentation the data asks for (a "
                "teacher cache of another version?); rebuild the cache or set data.augment=false"
            )
        x = apply_speech(x, views.speech.to(x.device), spec)
    return x.contiguous()


def apply_speech(x: Tensor, s: Tensor, spec: AugmentSpec) -> Tensor:
    """Shift, mix noise into and mask uint8 spectrograms ``(B, C, H, W)``; ``s``: ``(B, 7)`` :data:`SPEECH_COLUMNS`."""
    b, c, h, w = x.shape
    dev = x.device
    if bool((s[:, 0] != 0).any()):  # out[..., t] = x[..., t - shift], silence where that is outside the clip
        src = torch.arange(w, device=dev)[None, :] - s[:, 0:1]  # (B, W)
        inside = ((src >= 0) & (src < w))[:, None, None, :]
        moved = x.gather(3, src.clamp(0, w - 1)[:, None, None, :].expand(b, c, h, w))
        x = torch.where(inside, moved, torch.zeros((), dtype=x.dtype, device=dev))
    mixed = (s[:, 1] >= 0).nonzero().flatten()
    if len(mixed):
        if spec.noise is None or int(s[mixed, 1].max()) >= len(spec.noise):
            raise DataError("a view names a noise piece the dataset's noise bank does not have")
        r = spec.top_db
        px = torch.pow(10.0, (x[mixed].float() * (r / 255) - r) / 10)
        pn = torch.pow(10.0, (spec.noise[s[mixed, 1].to(spec.noise.device)].to(dev).float() * (r / 255) - r) / 10)
        snr = s[mixed, 2].float() / 10
        gain = px.sum((1, 2, 3)) / (pn.sum((1, 2, 3)) * torch.pow(10.0, snr / 10))
        db = 10 * torch.log10(px + gain[:, None, None, None] * pn)
        x = x.clone()
        x[mixed] = ((db + r) * (255 / r)).round().clamp(0, 255).to(torch.uint8)
    band = torch.arange(h, device=dev)[None, :]
    frame = torch.arange(w, device=dev)[None, :]
    in_f = (band >= s[:, 3:4]) & (band < s[:, 3:4] + s[:, 4:5])  # (B, H)
    in_t = (frame >= s[:, 5:6]) & (frame < s[:, 5:6] + s[:, 6:7])  # (B, W)
    masked = in_f[:, None, :, None] | in_t[:, None, None, :]
    return x.masked_fill(masked, 0)


def normalize(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """uint8 ``(B, C, H, W)`` -> float32 standardised with per-channel ``mean``/``std`` (shape ``(C,)``)."""
    return (x.float().div_(255.0) - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)

"""Audio clips to quantised log-mel spectrograms: the features :mod:`distill.data.audio` holds in memory.

Every clip is read with soundfile, mixed down to mono (the mean of its channels), resampled to 16 kHz
(``librosa.resample``) when recorded at another rate, and given a fixed length of one second: a shorter clip is
padded with zeros on both sides (centred), a longer one cut to its central second.

Features (the setting of the keyword-spotting literature, e.g. Zhang et al. 2017 "Hello Edge"):

* STFT with a periodic Hann window of ``n_fft = 480`` samples (30 ms), hop ``160`` (10 ms), centred frames
  (zero padding of ``n_fft / 2`` at both ends), so one second gives ``1 + 16000 / 160 = 101`` frames;
* power ``|X|² / (Σ w)²`` — divided by the squared window sum, so a full-scale sine (amplitude 1) on a bin centre
  has power 0.25 (−6 dB) in that bin;
* 40 mel bands, ``librosa.filters.mel(sr=16000, n_fft=480, n_mels=40, fmin=20, fmax=8000, norm=None)`` (Slaney
  mel scale, triangles of peak 1, so a tone at a band's centre keeps its bin power);
* ``dB = 10·log10(max(mel, 1e-10))`` against the FIXED reference 1.0 (dB full scale), not the clip's maximum, so
  a quiet clip stays quieter than a loud one;
* the 80 dB range ``[-80, 0]`` dBFS mapped linearly to uint8: ``q = clip(round((dB + 80) · 255 / 80), 0, 255)``.
  ``q = 0`` is −80 dBFS or below (silence, and what the masks of SpecAugment write), ``q = 255`` is 0 dBFS or above;
  one step is 80/255 ≈ 0.31 dB. The inverse is ``dB = q · 80 / 255 − 80`` (:func:`uint8_to_db`).

The result is an image-like ``(N, 1, 40, 101)`` uint8 tensor (mel band on the height axis, from low to high
frequency; time on the width axis), which is what the rest of distill consumes.
"""

from __future__ import annotations

import importlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distill.errors import DataError

SAMPLE_RATE = 16_000
AUDIO_EXTENSIONS = (".wav", ".flac")


@dataclass(frozen=True)
class FeatureSettings:
    """How clips become features; part of the on-disk feature cache's key."""

    sample_rate: int = SAMPLE_RATE
    clip_seconds: float = 1.0
    n_fft: int = 480
    hop: int = 160
    n_mels: int = 40
    fmin: float = 20.0
    fmax: float = 8000.0
    top_db: float = 80.0  # the dB range mapped onto uint8: [-top_db, 0] dBFS
    version: int = 1  # bump when the computation changes

    @property
    def clip_samples(self) -> int:
        return round(self.sample_rate * self.clip_seconds)

    @property
    def frames(self) -> int:
        return 1 + self.clip_samples // self.hop

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def need(module: str) -> Any:
    """Import ``soundfile`` or ``librosa``, or say how to install them (the ``speech`` extra)."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise DataError(f"audio data needs {module}: pip install 'distill[speech]' (soundfile, librosa)") from e


def read_clip(path: Path, sample_rate: int = SAMPLE_RATE) -> tuple[np.ndarray, int, int]:
    """``(mono float32 samples at sample_rate, the file's own rate, its channel count)``; a bad file is a DataError."""
    sf = need("soundfile")
    try:
        y, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises LibsndfileError / RuntimeError / TypeError for unreadable files
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        detail = detail.split("': ", 1)[-1] if detail.startswith("Error opening") else detail  # not the path again
        raise DataError(f"{path}: cannot read audio ({detail}); expected a WAV or FLAC file") from e
    if y.size == 0:
        raise DataError(f"{path}: the audio file has no samples; expected a clip of sound (WAV or FLAC)")
    if not np.isfinite(y).all():
        raise DataError(f"{path}: the audio holds NaN or infinite samples")
    channels = y.shape[1]
    mono = y.mean(axis=1) if channels > 1 else y[:, 0]
    if sr != sample_rate:
        mono = need("librosa").resample(mono, orig_sr=sr, target_sr=sample_rate).astype(np.float32)
    return np.ascontiguousarray(mono, dtype=np.float32), int(sr), int(channels)


def fix_length(y: np.ndarray, n: int) -> np.ndarray:
    """Exactly ``n`` samples: zero-padded on both sides (the extra one at the end) or the central ``n`` kept."""
    if len(y) >= n:
        start = (len(y) - n) // 2
        return y[start : start + n]
    left = (n - len(y)) // 2
    return np.pad(y, (left, n - len(y) - left))


def mel_matrix(s: FeatureSettings) -> np.ndarray:
    return need("librosa").filters.mel(
        sr=s.sample_rate, n_fft=s.n_fft, n_mels=s.n_mels, fmin=s.fmin, fmax=s.fmax, norm=None, dtype=np.float64
    )


def log_mel_db(clips: np.ndarray, s: FeatureSettings) -> np.ndarray:
    """float64 dBFS log-mel energies ``(N, n_mels, frames)`` of float clips ``(N, samples)``."""
    librosa = need("librosa")
    spec = librosa.stft(
        clips.astype(np.float64),
        n_fft=s.n_fft,
        hop_length=s.hop,
        window="hann",
        center=True,
        pad_mode="constant",
    )
    window_sum = float(np.sum(librosa.filters.get_window("hann", s.n_fft, fftbins=True)))
    power = np.abs(spec) ** 2 / window_sum**2  # (N, F, T)
    mel = np.einsum("mf,nft->nmt", mel_matrix(s), power)
    return 10.0 * np.log10(np.maximum(mel, 1e-10))


def db_to_uint8(db: np.ndarray, top_db: float = 80.0) -> np.ndarray:
    """The fixed mapping ``q = clip(round((dB + top_db) · 255 / top_db), 0, 255)`` (see the module docstring)."""
    return np.clip(np.round((db + top_db) * (255.0 / top_db)), 0, 255).astype(np.uint8)


def uint8_to_db(q: np.ndarray, top_db: float = 80.0) -> np.ndarray:
    """The inverse of :func:`db_to_uint8` (to within half a step): ``dB = q · top_db / 255 − top_db``."""
    return q.astype(np.float64) * (top_db / 255.0) - top_db


def features(clips: np.ndarray, s: FeatureSettings, batch: int = 256) -> np.ndarray:
    """uint8 ``(N, 1, n_mels, frames)`` features of float clips ``(N, clip_samples)``, computed in batches."""
    out = np.empty((len(clips), 1, s.n_mels, s.frames), dtype=np.uint8)
    for start in range(0, len(clips), batch):
        out[start : start + batch, 0] = db_to_uint8(log_mel_db(clips[start : start + batch], s), s.top_db)
    return out


def noise_chunks(y: np.ndarray, s: FeatureSettings, hop_seconds: float = 0.5) -> np.ndarray:
    """Clip-length pieces ``(K, clip_samples)`` of a long noise recording, every ``hop_seconds`` (at least one)."""
    n, hop = s.clip_samples, max(1, round(hop_seconds * s.sample_rate))
    if len(y) <= n:
        return fix_length(y, n)[None]
    return np.stack([y[i : i + n] for i in range(0, len(y) - n + 1, hop)])


def synthetic_noise(seconds: float, seed: int = 0, sample_rate: int = SAMPLE_RATE) -> dict[str, np.ndarray]:
    """White, pink (1/f) and brown (1/f²) noise, ``seconds`` long each, RMS 0.05, from a fixed seed."""
    rng = np.random.default_rng(seed)
    n = round(seconds * sample_rate)
    out = {}
    for name, exponent in (("white", 0.0), ("pink", 1.0), ("brown", 2.0)):
        spectrum = np.fft.rfft(rng.standard_normal(n))
        f = np.fft.rfftfreq(n, 1 / sample_rate)
        spectrum[1:] /= f[1:] ** (exponent / 2)  # power falls as 1/f**exponent
        spectrum[0] = 0
        y = np.fft.irfft(spectrum, n)
        out[name] = (0.05 * y / np.sqrt(np.mean(y**2))).astype(np.float32)
    return out

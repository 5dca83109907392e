"""Keyword-spotting audio as images: the ``audio_folder`` source (log-mel spectrograms, see
:mod:`distill.data.spectrogram`).

Layouts read (one class per sub-folder, clips ``*.wav`` / ``*.flac``):

* ``ROOT/train/<class>/``, ``ROOT/test/<class>/`` and optionally ``ROOT/validation/<class>/`` (what
  ``python -m distill.data.speech_synth`` writes);
* Google Speech Commands: ``ROOT/<word>/`` with ``validation_list.txt`` and ``testing_list.txt`` at the root
  naming the clips (``word/file.wav``) of those splits; every other clip is training data;
* ``ROOT/<class>/`` alone: a seeded stratified ``test_fraction`` is held out.

distill's datasets have a training and a test split, so validation clips are appended to the training split and
``meta["validation_index"]`` says where they are; the DataModule then uses exactly those clips as its validation
split (no speaker on both sides) instead of carving a random one.

Background noise for augmentation comes from ``ROOT/_background_noise_/`` (or ``ROOT/train/_background_noise_/``):
every recording is cut into one-second pieces every half second. Without one, seeded white, pink and brown noise is
synthesized. The pieces' spectrograms (uint8, like the clips) are ``meta["noise_bank"]``; ``meta["augment"]`` asks
the DataModule for time shift, noise mixing and SpecAugment masks (:mod:`distill.data.augment`).

Features are computed once and cached in ``cache_dir`` (default ``ROOT/.distill-features``) under a key made of the
feature settings and every clip's path, size and modification time, so a second load reads one ``.npz``.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distill.data.base import ImageData, register_dataset
from distill.data.spectrogram import (
    AUDIO_EXTENSIONS,
    FeatureSettings,
    features,
    fix_length,
    noise_chunks,
    read_clip,
    synthetic_noise,
)
from distill.data.vision import _no_options, channel_stats, stratified_split
from distill.errors import ConfigError, DataError

NOISE_DIR = "_background_noise_"
MAX_NOISE = 2048  # pieces in the noise bank (their index is stored as int16 by the teacher cache)
_EXT = ", ".join(f"*{e}" for e in AUDIO_EXTENSIONS)


def _audio_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)


def _class_dirs(folder: Path) -> dict[str, list[Path]]:
    """``{class: clips}`` of the sub-folders of ``folder``; an empty class folder is an error."""
    out = {}
    for d in sorted(folder.iterdir()):
        if not d.is_dir() or d.name.startswith(".") or d.name == NOISE_DIR:
            continue
        files = _audio_files(d)
        if not files:
            raise DataError(f"audio_folder: class folder {d} has no audio files ({_EXT}); remove it or add clips")
        out[d.name] = files
    return out


def _read_list(path: Path, base: Path) -> set[Path]:
    if not path.is_file():
        return set()
    return {base / line.strip() for line in path.read_text().splitlines() if line.strip()}


def scan(base: Path, test_fraction: float, seed: int) -> tuple[list[str], dict[str, list[tuple[Path, int]]]]:
    """The classes and ``{"train"|"validation"|"test": [(clip, label)]}`` of a folder in any supported layout."""
    if (base / "train").is_dir():
        trees = {s: _class_dirs(base / s) if (base / s).is_dir() else {} for s in ("train", "validation", "test")}
        classes = list(trees["train"])
        if not classes:
            raise DataError(f"audio_folder: no class folders with audio ({_EXT}) in {base / 'train'}")
        for split in ("validation", "test"):
            if extra := sorted(set(trees[split]) - set(classes)):
                raise DataError(f"audio_folder: {base / split} has classes not in train/: {', '.join(extra)}")
        index = {c: i for i, c in enumerate(classes)}
        splits = {s: [(p, index[c]) for c, files in t.items() for p in files] for s, t in trees.items()}
        if not splits["test"]:
            raise DataError(f"audio_folder: {base / 'test'} has no clips; expected test/<class>/{_EXT}")
        return classes, splits
    tree = _class_dirs(base)
    classes = list(tree)
    if not classes:
        raise DataError(
            f"audio_folder: no audio files ({_EXT}) in class sub-folders of {base}; expected ROOT/<class>/*.wav "
            "or ROOT/train/<class>/*.wav and ROOT/test/<class>/*.wav"
        )
    index = {c: i for i, c in enumerate(classes)}
    clips = [(p, index[c]) for c, files in tree.items() for p in files]
    testing, validation = _read_list(base / "testing_list.txt", base), _read_list(base / "validation_list.txt", base)
    if testing or validation:  # Google Speech Commands
        splits = {
            "train": [c for c in clips if c[0] not in testing and c[0] not in validation],
            "validation": [c for c in clips if c[0] in validation and c[0] not in testing],
            "test": [c for c in clips if c[0] in testing],
        }
        if not splits["test"]:
            raise DataError(f"audio_folder: {base / 'testing_list.txt'} names none of the clips under {base}")
        return classes, splits
    tr, te = stratified_split(torch.tensor([c[1] for c in clips]), test_fraction, seed)
    return classes, {"train": [clips[i] for i in tr], "validation": [], "test": [clips[i] for i in te]}


def _noise_files(base: Path) -> list[Path]:
    for d in (base / NOISE_DIR, base / "train" / NOISE_DIR):
        if d.is_dir():
            return _audio_files(d)
    return []


def fingerprint(paths: list[Path], settings: FeatureSettings, extra: dict[str, Any]) -> str:
    """sha256 over the feature settings, ``extra`` and every file's path, size and modification time."""
    h = hashlib.sha256(json.dumps({"features": settings.as_dict(), **extra}, sort_keys=True).encode())
    for p in paths:
        st = p.stat()
        h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


class _Notes:
    """Counts what was done to the clips, said once per load (not per file)."""

    def __init__(self, rate: int) -> None:
        self.rate, self.rates, self.multichannel, self.count = rate, Counter[int](), 0, 0

    def read(self, path: Path) -> np.ndarray:
        y, sr, channels = read_clip(path, self.rate)
        if sr != self.rate:
            self.rates[sr] += 1
        self.multichannel += channels > 1
        self.count += 1
        return y

    def say(self, name: str) -> None:
        if self.rates:
            rates = ", ".join(f"{n} at {r} Hz" for r, n in sorted(self.rates.items()))
            print(f"{name}: resampled {sum(self.rates.values())} file(s) to {self.rate} Hz ({rates})", file=sys.stderr)
        if self.multichannel:
            print(f"{name}: mixed {self.multichannel} multi-channel file(s) down to mono", file=sys.stderr)


def compute(
    splits: dict[str, list[tuple[Path, int]]], noise_files: list[Path], s: FeatureSettings, name: str, seed: int
) -> dict[str, np.ndarray]:
    """Read every clip once and compute the features of each split and of the noise bank."""
    notes = _Notes(s.sample_rate)
    out: dict[str, np.ndarray] = {}
    for split, items in splits.items():
        clips = np.zeros((len(items), s.clip_samples), dtype=np.float32)
        for i, (p, _) in enumerate(items):
            clips[i] = fix_length(notes.read(p), s.clip_samples)
        out[f"x_{split}"] = features(clips, s)
        out[f"y_{split}"] = np.array([label for _, label in items], dtype=np.int64)
    recordings = [notes.read(p) for p in noise_files]
    if not recordings:
        recordings = list(synthetic_noise(10.0, seed, s.sample_rate).values())
    pieces = np.concatenate([noise_chunks(y, s) for y in recordings])
    if len(pieces) > MAX_NOISE:  # an even spread over all recordings
        pieces = pieces[np.linspace(0, len(pieces) - 1, MAX_NOISE).round().astype(int)]
    out["noise"] = features(pieces, s)
    notes.say(name)
    return out


def _load_cached(path: Path, keys: list[str]) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path) as z:
            return {k: z[k] for k in keys}
    except (OSError, ValueError, KeyError, EOFError):
        return None


def _save_cached(path: Path, arrays: dict[str, np.ndarray], name: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        print(f"{name}: features not cached ({path.parent}: {e.strerror or e})", file=sys.stderr)


@register_dataset("audio_folder")
def audio_folder(
    root: str | None = None,
    download: bool = False,
    test_fraction: float = 0.2,
    seed: int = 0,
    cache_dir: str | None = None,
    time_shift_ms: float = 100.0,
    noise_prob: float = 0.8,
    snr_db_min: float = 0.0,
    snr_db_max: float = 20.0,
    freq_mask: int = 7,
    time_mask: int = 10,
    **kw: Any,
) -> ImageData:
    """Clips in class folders -> uint8 log-mel spectrograms ``(N, 1, 40, 101)`` (see the module docstring).

    The augmentation options (used when ``data.augment`` is true): a time shift of up to ``time_shift_ms``
    either way, background noise mixed in with probability ``noise_prob`` at an SNR drawn from
    ``[snr_db_min, snr_db_max]`` dB, and one SpecAugment frequency mask of up to ``freq_mask`` bands and one time
    mask of up to ``time_mask`` frames; 0 turns each off.
    """
    accepted = "root, test_fraction, seed, cache_dir, time_shift_ms, noise_prob, snr_db_min, snr_db_max, freq_mask"
    _no_options("audio_folder", kw, accepted + ", time_mask")
    if not root:
        raise ConfigError("audio_folder: needs root=DIR with train/<class>/*.wav (and test/<class>/...) or <class>/*")
    if not 0 <= noise_prob <= 1 or snr_db_min > snr_db_max or min(time_shift_ms, freq_mask, time_mask) < 0:
        raise ConfigError(
            "audio_folder: expected 0 <= noise_prob <= 1, snr_db_min <= snr_db_max and time_shift_ms, freq_mask, "
            "time_mask >= 0"
        )
    base = Path(root).expanduser()
    if not base.is_dir():
        raise DataError(f"audio_folder: {base} is not a directory")
    s = FeatureSettings()
    classes, splits = scan(base, test_fraction, seed)
    noise_files = _noise_files(base)
    all_files = [p for items in splits.values() for p, _ in items] + noise_files
    extra = {
        "classes": classes,
        "sizes": {k: len(v) for k, v in splits.items()},
        "labels": hashlib.sha256(str([lab for v in splits.values() for _, lab in v]).encode()).hexdigest(),
        "seed": seed,
    }
    key = fingerprint(all_files, s, extra)
    cache = Path(cache_dir).expanduser() if cache_dir else base / ".distill-features"
    cache_file = cache / f"audio-{key[:32]}.npz"
    keys = [f"{a}_{b}" for b in splits for a in "xy"] + ["noise"]
    arrays = _load_cached(cache_file, keys) if cache_file.is_file() else None
    if arrays is None:
        arrays = compute(splits, noise_files, s, "audio_folder", seed)
        _save_cached(cache_file, arrays, "audio_folder")
    t = {k: torch.from_numpy(v) for k, v in arrays.items()}
    n_train = len(t["x_train"])
    x_train = torch.cat([t["x_train"], t["x_validation"]])
    y_train = torch.cat([t["y_train"], t["y_validation"]])
    mean, std = channel_stats(x_train)
    hop_ms = 1000 * s.hop / s.sample_rate
    return ImageData(
        f"audio_folder:{base.name}",
        x_train,
        y_train,
        t["x_test"],
        t["y_test"],
        classes,
        mean,
        std,
        hflip=False,
        crop_padding=0,
        meta={
            "source": str(base),
            "kind": "log-mel",
            "input_kind": "log-mel",  # what the images are, for plots (image datasets have none: "image")
            "input_axes": {
                "hop_ms": hop_ms,  # width: frame i is centred at i * hop_ms (centred STFT frames)
                "n_mels": s.n_mels,  # height: mel bands, low to high frequency
                "sample_rate": s.sample_rate,
                "fmin": s.fmin,
                "fmax": s.fmax,
                "top_db": s.top_db,  # q = 0 is -top_db dBFS, q = 255 is 0 dBFS: dB = q * top_db / 255 - top_db
            },
            "features": s.as_dict(),
            "db_mapping": f"q = clip(round((dB + {s.top_db:g}) * 255 / {s.top_db:g}), 0, 255), dB re full scale",
            "validation_index": torch.arange(n_train, len(x_train)),
            "noise_bank": t["noise"],
            "noise_source": "background_noise" if noise_files else "synthetic",
            "augment": {
                "time_shift": round(time_shift_ms / hop_ms),
                "noise_prob": float(noise_prob),
                "snr_db": (float(snr_db_min), float(snr_db_max)),
                "freq_mask": int(freq_mask),
                "time_mask": int(time_mask),
                "top_db": s.top_db,
            },
            "feature_cache": str(cache_file),
        },
    )

"""A reproducible synthetic speech-commands corpus spoken by espeak-ng.

    python -m distill.data.speech_synth --out data/speech [--small] [--seed 0]

Classes: the ten command words of Google Speech Commands (yes no up down left right on off stop go), ``_unknown_``
(25 other English words) and ``_silence_`` (noise only). Speakers are espeak-ng *voices*: an English accent
(``espeak-ng --voices=en``, the built-in ones; MBROLA voices need extra packages and are skipped) combined with a
voice variant (``espeak-ng --voices=variant``). Every variant speaks with ``accents_per_variant`` accents taken in
turn, so every accent and every variant is used. The corpus is split BY VARIANT — a variant's clips (and so every
accent+variant voice) are all in one of train/validation/test — 80/10/10 with a seeded permutation.

Each voice says every command word, ``unknown_per_voice`` unknown words (taken in turn from the list) and records
``silence_per_voice`` noise-only clips. Per clip a seeded draw picks the speed (``-s``), pitch (``-p``), level, onset
within the second and whether background noise (white, pink or brown, synthesized) is mixed in at an SNR; the draw
depends only on the seed and the clip's name, so the corpus is the same whatever the order of building. Clips are
16 kHz mono 16-bit WAV of exactly one second, ``ROOT/<split>/<class>/<voice>__<n>.wav``. The noise recordings are
in ``ROOT/_background_noise_/`` (the audio source's augmentation reads them), and ``ROOT/fingerprint.json`` holds the
settings, the seed, espeak-ng's version, the clip counts and a sha256 over every file.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from distill.data.spectrogram import SAMPLE_RATE, fix_length, synthetic_noise
from distill.errors import DataError

COMMANDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go")
UNKNOWN = (
    "bed", "bird", "cat", "dog", "happy", "house", "marvin", "sheila", "tree", "wow",
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    "learn", "follow", "forward", "backward", "visual",
)  # fmt: skip
SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class SynthSettings:
    seed: int = 0
    commands: tuple[str, ...] = COMMANDS
    unknown: tuple[str, ...] = UNKNOWN
    accents_per_variant: int = 2
    max_variants: int | None = None  # None: every variant
    unknown_per_voice: int = 3
    silence_per_voice: int = 1
    speeds: tuple[int, ...] = (130, 150, 170, 190)  # words per minute (espeak-ng -s; its default is 175)
    pitches: tuple[int, ...] = (25, 40, 50, 60, 75)  # 0..99 (espeak-ng -p; its default is 50)
    noise_fraction: float = 0.3  # of the spoken clips, mixed with background noise at build time
    snr_db: tuple[float, float] = (5.0, 25.0)
    peak_dbfs: tuple[float, float] = (-20.0, -1.0)  # the spoken word's peak level
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    noise_seconds: float = 20.0
    extra: dict[str, str] = field(default_factory=dict)


SMALL = SynthSettings(
    commands=("yes", "no", "up", "down"),
    unknown=("bed", "bird", "cat"),
    accents_per_variant=1,
    max_variants=10,
    unknown_per_voice=1,
    silence_per_voice=1,
    noise_seconds=3.0,
)


def espeak() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise DataError("espeak-ng is not installed; on Debian/Ubuntu: sudo apt-get install espeak-ng")
    return exe


def espeak_version() -> str:
    return subprocess.run([espeak(), "--version"], capture_output=True, text=True, check=True).stdout.strip()


def _voice_table(arg: str) -> list[list[str]]:
    out = subprocess.run([espeak(), f"--voices={arg}"], capture_output=True, text=True, check=True).stdout
    return [line.split() for line in out.splitlines()[1:] if line.strip()]


def english_accents() -> list[str]:
    """espeak-ng's own English voices (their file names, e.g. ``gmw/en-US``), without the MBROLA ones."""
    rows = _voice_table("en")
    files = {row[4] for row in rows if len(row) >= 5 and not row[4].startswith(("mb/", "!v/"))}  # no MBROLA, variant
    return sorted(files)


def variants() -> list[str]:
    """The voice variants (``adam``, ``f3``, ``klatt``, ...)."""
    return sorted({row[4].removeprefix("!v/") for row in _voice_table("variant") if len(row) >= 5})


def _stable(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "little")


def plan(s: SynthSettings, accents: list[str], names: list[str]) -> dict[str, list[tuple[str, str, str, int]]]:
    """``{split: [(class, word or "", voice, n)]}``; a voice is ``accent+variant``, split by variant."""
    names = sorted(names)
    rng = np.random.default_rng([s.seed, 1])
    names = [names[i] for i in rng.permutation(len(names))][: s.max_variants]
    n_val = max(1, round(len(names) * s.split_fractions[1]))
    n_test = max(1, round(len(names) * s.split_fractions[2]))
    part = {"validation": names[:n_val], "test": names[n_val : n_val + n_test], "train": names[n_val + n_test :]}
    out: dict[str, list[tuple[str, str, str, int]]] = {split: [] for split in SPLITS}
    turn, unknown_turn = 0, 0
    for split in SPLITS:
        for variant in sorted(part[split]):
            for _ in range(s.accents_per_variant):
                voice = f"{accents[turn % len(accents)]}+{variant}"
                turn += 1
                out[split] += [(w, w, voice, 0) for w in s.commands]
                for _ in range(s.unknown_per_voice):
                    out[split].append(("_unknown_", s.unknown[unknown_turn % len(s.unknown)], voice, 0))
                    unknown_turn += 1
                out[split] += [("_silence_", "", voice, k) for k in range(s.silence_per_voice)]
    return out


def _speak(word: str, voice: str, speed: int, pitch: int, tmp: Path) -> np.ndarray:
    import librosa
    import soundfile as sf

    wav = tmp / "say.wav"
    cmd = [espeak(), "-v", voice, "-s", str(speed), "-p", str(pitch), "-w", str(wav), word]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise DataError(f"espeak-ng failed for {voice!r} saying {word!r}: {done.stderr.strip()[:200]}")
    y, sr = sf.read(str(wav), dtype="float32", always_2d=True)
    y = y.mean(axis=1)
    if sr != SAMPLE_RATE:
        y = librosa.resample(y, orig_sr=sr, target_sr=SAMPLE_RATE)
    loud = np.flatnonzero(np.abs(y) > 0.01 * max(float(np.abs(y).max()), 1e-9))
    return y[loud[0] : loud[-1] + 1] if len(loud) else y


def _mix(y: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    ps, pn = float(np.mean(y**2)), float(np.mean(noise**2))
    return y + noise * np.sqrt(ps / (max(pn, 1e-12) * 10 ** (snr_db / 10)))


def clip(s: SynthSettings, item: tuple[str, str, str, int], noises: dict[str, np.ndarray], tmp: Path) -> np.ndarray:
    """One second of float32 audio for a planned item; its random choices depend on the seed and the item only."""
    label, word, voice, k = item
    rng = np.random.default_rng([s.seed, _stable(label, word, voice, k)])
    n = SAMPLE_RATE
    kind = sorted(noises)[rng.integers(len(noises))]
    start = int(rng.integers(0, len(noises[kind]) - n + 1))
    piece = noises[kind][start : start + n]
    if label == "_silence_":
        level = 10 ** (rng.uniform(-60, -20) / 20)  # the RMS of the noise-only clip
        return (piece * level / max(float(np.sqrt(np.mean(piece**2))), 1e-12)).astype(np.float32)
    speed, pitch = int(rng.choice(s.speeds)), int(rng.choice(s.pitches))
    peak = 10 ** (rng.uniform(*s.peak_dbfs) / 20)
    y = _speak(word, voice, speed, pitch, tmp)
    y = y * (peak / max(float(np.abs(y).max()), 1e-9))
    if len(y) < n:  # a random onset inside the second
        y = np.pad(y, (off := int(rng.integers(0, n - len(y) + 1)), n - len(y) - off))
    y = fix_length(y, n)
    if rng.random() < s.noise_fraction:
        y = _mix(y, piece, float(rng.uniform(*s.snr_db)))
    return np.clip(y, -1, 1).astype(np.float32)


def tree_sha256(root: Path) -> tuple[str, int]:
    """sha256 over (relative path, sha256 of content) of every WAV under ``root``, sorted; and their count."""
    h, n = hashlib.sha256(), 0
    for p in sorted(root.rglob("*.wav")):
        h.update(f"{p.relative_to(root).as_posix()}\0{hashlib.sha256(p.read_bytes()).hexdigest()}\n".encode())
        n += 1
    return h.hexdigest(), n


def build(out: str | Path, small: bool = False, seed: int = 0, progress: bool = False) -> dict:
    """Write the corpus (``small``: a tiny one for tests, seconds) to ``out``; returns its fingerprint.

    An existing corpus whose ``fingerprint.json`` has the same settings and espeak-ng version is kept as it is.
    """
    import soundfile as sf

    base = SMALL if small else SynthSettings()
    s = SynthSettings(**{**asdict(base), "seed": seed, "extra": {"size": "small" if small else "full"}})
    root = Path(out)
    version = espeak_version()
    settings = json.loads(json.dumps(asdict(s)))
    fp_file = root / "fingerprint.json"
    if fp_file.is_file():
        old = json.loads(fp_file.read_text())
        if old.get("settings") == settings and old.get("espeak_ng") == version:
            return old
    accents, names = english_accents(), variants()
    if not accents or not names:
        raise DataError("espeak-ng lists no English voices or no variants")
    t0 = time.perf_counter()
    for sub in (*SPLITS, "_background_noise_"):
        shutil.rmtree(root / sub, ignore_errors=True)
    fp_file.unlink(missing_ok=True)
    noises = synthetic_noise(s.noise_seconds, seed, SAMPLE_RATE)
    (root / "_background_noise_").mkdir(parents=True)
    for name, y in noises.items():
        sf.write(str(root / "_background_noise_" / f"{name}_noise.wav"), y, SAMPLE_RATE, subtype="PCM_16")
    items = plan(s, accents, names)
    counts: dict[str, dict[str, int]] = {}
    voices: dict[str, list[str]] = {}
    done, total = 0, sum(map(len, items.values()))
    with tempfile.TemporaryDirectory() as tmp:
        for split, todo in items.items():
            counts[split] = {}
            voices[split] = sorted({v for _, _, v, _ in todo})
            for item in todo:
                label, word, voice, k = item
                folder = root / split / label
                folder.mkdir(parents=True, exist_ok=True)
                name = f"{voice.replace('/', '-')}__{word or 'noise'}{k}.wav"
                sf.write(str(folder / name), clip(s, item, noises, Path(tmp)), SAMPLE_RATE, subtype="PCM_16")
                counts[split][label] = counts[split].get(label, 0) + 1
                done += 1
                if progress and done % 500 == 0:
                    print(f"speech_synth: {done}/{total} clips", file=sys.stderr)
    sha, n = tree_sha256(root)
    fp = {
        "settings": settings,
        "seed": seed,
        "espeak_ng": version,
        "accents": accents,
        "voices": voices,
        "counts": counts,
        "files": n,
        "sha256": sha,
        "build_seconds": round(time.perf_counter() - t0, 1),
    }
    fp_file.write_text(json.dumps(fp, indent=2) + "\n")
    return fp


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m distill.data.speech_synth", description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="the corpus directory (created)")
    ap.add_argument("--small", action="store_true", help="a tiny corpus for tests (seconds)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    try:
        fp = build(args.out, small=args.small, seed=args.seed, progress=True)
    except DataError as e:
        print(f"speech_synth: error: {e}", file=sys.stderr)
        return 2
    per = {k: sum(v.values()) for k, v in fp["counts"].items()}
    split = ", ".join(f"{k} {n}" for k, n in per.items())
    print(f"{args.out}: {sum(per.values())} clips ({split}), {fp['files']} WAV files, sha256 {fp['sha256'][:16]}…")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Audio as spectrogram images: the features, the audio_folder source, the speech augmentation and its replay
through the teacher cache, and the synthetic espeak-ng corpus (skipped without espeak-ng)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("soundfile")
pytest.importorskip("librosa")
import librosa
import soundfile as sf

from distill.data import audio, speech_synth
from distill.data.augment import AugmentSpec, Views, apply_views, identity_views, sample_views, spec_for
from distill.data.base import load_dataset
from distill.data.module import DataModule
from distill.data.spectrogram import FeatureSettings, features, fix_length, read_clip
from distill.engine.cache import TeacherCache
from distill.errors import DataError

SR = 16_000
S = FeatureSettings()


def tone(freq: float, amp: float = 0.5, sr: int = SR, seconds: float = 1.0, phase: float = 0.0) -> np.ndarray:
    t = np.arange(round(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t + phase)).astype(np.float32)


def write(path: Path, y: np.ndarray, sr: int = SR) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), y, sr, subtype="PCM_16" if path.suffix == ".wav" else None)
    return path


def reference_features(y: np.ndarray) -> np.ndarray:
    """The documented computation in plain numpy: centred frames, periodic Hann, |rfft|² / (Σw)², mel, dBFS, uint8."""
    n_fft, hop = 480, 160
    w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    padded = np.pad(y.astype(np.float64), n_fft // 2)
    frames = np.stack([padded[i * hop : i * hop + n_fft] for i in range(1 + len(y) // hop)])
    power = np.abs(np.fft.rfft(frames * w, axis=1)) ** 2 / w.sum() ** 2  # (T, F)
    mel = librosa.filters.mel(sr=SR, n_fft=n_fft, n_mels=40, fmin=20, fmax=8000, norm=None) @ power.T
    db = 10 * np.log10(np.maximum(mel, 1e-10))
    return np.clip(np.round((db + 80) * 255 / 80), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------------ features


def test_features_shape_dtype_and_db_mapping_match_an_independent_computation():
    y = tone(1000, 0.5)
    f = features(y[None], S)
    assert f.shape == (1, 1, 40, 101) and f.dtype == np.uint8
    ref = reference_features(y)
    assert np.abs(f[0, 0].astype(int) - ref.astype(int)).max() <= 1  # float rounding at a step boundary only
    # analytically: a sine of amplitude 0.5 on bin 30 (1000 Hz) has power 0.5²/4 = 0.0625 (-12 dBFS) there, and the
    # periodic Hann window leaks a quarter of that power into each neighbour bin
    mel = librosa.filters.mel(sr=SR, n_fft=480, n_mels=40, fmin=20, fmax=8000, norm=None)
    energy = 0.0625 * (mel[:, 30] + 0.25 * (mel[:, 29] + mel[:, 31]))
    band = int(energy.argmax())
    assert f[0, 0, :, 50].argmax() == band
    assert abs(int(f[0, 0, band, 50]) * 80 / 255 - 80 - 10 * np.log10(energy[band])) <= 0.5 * 80 / 255 + 1e-6


def test_loudness_survives_the_fixed_reference():
    f = features(np.stack([tone(1000, 0.5), tone(1000, 0.05)]), S).astype(int)
    band = f[0, 0, :, 50].argmax()
    assert abs((f[0, 0, band, 50] - f[1, 0, band, 50]) - 20 * 255 / 80) <= 1  # 20 dB quieter = 63.75 steps
    assert features(np.zeros((1, SR), np.float32), S).max() == 0  # silence is the floor


def test_fix_length_pads_centred_and_cuts_the_centre():
    y = np.arange(1, 11, dtype=np.float32)
    assert fix_length(y, 14).tolist() == [0, 0, *range(1, 11), 0, 0]
    assert fix_length(y, 13).tolist() == [0, *range(1, 11), 0, 0]
    assert fix_length(y, 4).tolist() == [4, 5, 6, 7]
    assert fix_length(y, 10).tolist() == list(range(1, 11))


def test_resampling_keeps_a_tones_frequency(tmp_path):
    y8, sr8 = read_clip(write(tmp_path / "a.wav", tone(1000, 0.5, sr=8000), sr=8000))[:2]
    assert sr8 == 8000 and len(y8) == SR
    spectrum = np.abs(np.fft.rfft(y8))
    assert abs(np.fft.rfftfreq(len(y8), 1 / SR)[spectrum.argmax()] - 1000) <= 1
    f8 = features(y8[None], S)[0, 0].astype(int)
    f16 = features(tone(1000, 0.5)[None], S)[0, 0].astype(int)
    assert f8[:, 50].argmax() == f16[:, 50].argmax() and abs(f8[:, 50].max() - f16[:, 50].max()) <= 3


def test_stereo_is_mixed_down_to_mono(tmp_path):
    left, right = tone(500, 0.4), tone(2000, 0.2)
    y, _, channels = read_clip(write(tmp_path / "st.wav", np.stack([left, right], 1)))
    assert channels == 2
    np.testing.assert_allclose(y, (left + right) / 2, atol=2 / 32768)


# ------------------------------------------------------------------------------------------------------ the source


def make_tree(root: Path, classes=("yes", "no"), n=3, sr=SR, layout="split") -> Path:
    for ci, c in enumerate(classes):
        for i in range(n):
            y = tone(300 + 400 * ci + 20 * i, 0.3, sr=sr, seconds=0.6 + 0.2 * i)
            if layout == "split":
                for split in ("train", "test"):
                    write(root / split / c / f"{i}.wav", y, sr)
            else:
                write(root / c / f"{c}_{i}.wav", y, sr)
    return root


def test_split_layout_loads_as_image_data(tmp_path, capsys):
    data = load_dataset("audio_folder", root=str(make_tree(tmp_path / "d")))
    assert data.x_train.shape == (6, 1, 40, 101) and data.x_train.dtype == torch.uint8
    assert data.classes == ["no", "yes"] and data.y_train.tolist() == [0, 0, 0, 1, 1, 1]
    assert data.meta["noise_source"] == "synthetic" and data.meta["noise_bank"].shape[1:] == (1, 40, 101)
    assert "resampled" not in capsys.readouterr().err


def test_resampling_is_said_once_and_features_are_cached(tmp_path, capsys, monkeypatch):
    root = make_tree(tmp_path / "d", sr=8000)
    first = load_dataset("audio_folder", root=str(root))
    err = capsys.readouterr().err
    assert err.count("resampled") == 1 and "12 file(s) to 16000 Hz (12 at 8000 Hz)" in err
    monkeypatch.setattr(audio, "compute", lambda *a, **k: pytest.fail("features recomputed"))
    second = load_dataset("audio_folder", root=str(root))
    assert torch.equal(first.x_train, second.x_train) and torch.equal(first.x_test, second.x_test)
    write(root / "test" / "no" / "0.wav", tone(999, 0.3, seconds=0.5))  # a changed file (size) is a new key
    with pytest.raises(pytest.fail.Exception, match="recomputed"):
        load_dataset("audio_folder", root=str(root))


def test_speech_commands_layout_reads_the_lists(tmp_path):
    root = make_tree(tmp_path / "sc", classes=("go", "stop", "up"), n=4, layout="flat")
    write(root / "_background_noise_" / "hum.wav", tone(50, 0.1, seconds=3.0))
    (root / "testing_list.txt").write_text("go/go_0.wav\nstop/stop_1.wav\n")
    (root / "validation_list.txt").write_text("up/up_2.wav\ngo/go_3.wav\n")
    data = load_dataset("audio_folder", root=str(root), cache_dir=str(tmp_path / "cache"))
    assert data.classes == ["go", "stop", "up"]
    assert data.y_test.tolist() == [0, 1] and len(data.x_train) == 10  # 8 training + 2 validation clips
    assert data.y_train[data.meta["validation_index"]].tolist() == [0, 2]
    assert data.meta["noise_source"] == "background_noise" and len(data.meta["noise_bank"]) == 5  # 3 s, 0.5 s hop
    assert not (root / ".distill-features").exists()  # cache_dir was used


@pytest.mark.parametrize(
    ("setup", "pattern"),
    [
        (lambda r: (r / "train" / "no" / "0.wav").write_bytes(b"RIFF garbage"), r"train/no/0\.wav: cannot read audio"),
        (lambda r: (r / "test" / "yes" / "1.wav").write_bytes(b""), r"test/yes/1\.wav: cannot read audio"),
        (lambda r: write(r / "train" / "no" / "0.wav", np.zeros(0, np.float32)), r"0\.wav: the audio file has no"),
        (lambda r: (r / "train" / "maybe").mkdir(), r"class folder .*train/maybe has no audio files"),
        (lambda r: shutil.rmtree(r / "test"), r"test has no clips"),
    ],
    ids=["corrupt", "empty-file", "no-samples", "empty-class", "no-test"],
)
def test_bad_audio_is_one_clear_data_error(tmp_path, setup, pattern):
    root = make_tree(tmp_path / "d")
    setup(root)
    with pytest.raises(DataError, match=pattern) as e:
        load_dataset("audio_folder", root=str(root))
    assert "\n" not in str(e.value)


def test_a_folder_without_audio_is_refused(tmp_path):
    (tmp_path / "d" / "cats").mkdir(parents=True)
    (tmp_path / "d" / "cats" / "a.png").write_bytes(b"x")
    with pytest.raises(DataError, match=r"class folder .*cats has no audio files \(\*\.wav, \*\.flac\)"):
        load_dataset("audio_folder", root=str(tmp_path / "d"))
    (tmp_path / "e").mkdir()
    with pytest.raises(DataError, match="no audio files"):
        load_dataset("audio_folder", root=str(tmp_path / "e"))


# ------------------------------------------------------------------------------------------------ augmentation


def speech_spec(noise=None, **kw) -> AugmentSpec:
    base = {"time_shift": 10, "noise_prob": 0.8, "freq_mask": 7, "time_mask": 10, "size": (40, 101)}
    if noise is None:
        noise = torch.randint(0, 256, (5, 1, 40, 101), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    return AugmentSpec(**{**base, **kw}, noise=noise)


def batch(n=16, seed=0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 1, 40, 101), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def test_speech_views_replay_exactly_and_identity_is_no_change():
    spec, x = speech_spec(), batch()
    views = sample_views(len(x), spec, torch.Generator().manual_seed(3))
    assert views.speech is not None and views.speech.shape == (16, 7)
    assert torch.equal(apply_views(x, views, spec), apply_views(x, views, spec))
    again = sample_views(len(x), spec, torch.Generator().manual_seed(3))
    assert torch.equal(views.speech, again.speech)
    assert torch.equal(apply_views(x, identity_views(len(x), spec), spec), x)
    assert not torch.equal(apply_views(x, views, spec), x)
    s = views.speech
    assert s[:, 0].abs().max() <= 10 and (s[:, 4] <= 7).all() and (s[:, 6] <= 10).all()
    assert ((s[:, 3] + s[:, 4]) <= 40).all() and ((s[:, 5] + s[:, 6]) <= 101).all()


def test_images_are_untouched_by_the_speech_fields():
    assert not AugmentSpec().enabled and AugmentSpec(2, True).describe() == {"crop_padding": 2, "hflip": True}
    v = sample_views(4, AugmentSpec(2, True), torch.Generator().manual_seed(0))
    assert v.speech is None


def one_view(shift=0, noise=-1, snr_tenths=0, f0=0, f=0, t0=0, t=0) -> Views:
    z = torch.zeros(1, dtype=torch.int64)
    return Views(z, z, z.bool(), torch.tensor([[shift, noise, snr_tenths, f0, f, t0, t]]))


def test_time_shift_moves_along_the_last_axis_only():
    x, spec = batch(1), speech_spec()
    out = apply_views(x, one_view(shift=3), spec)
    assert torch.equal(out[..., 3:], x[..., :-3]) and (out[..., :3] == 0).all()
    out = apply_views(x, one_view(shift=-2), spec)
    assert torch.equal(out[..., :-2], x[..., 2:]) and (out[..., -2:] == 0).all()


def test_masks_zero_the_right_band_and_frames():
    x = batch(1).clamp_min(1)
    out = apply_views(x, one_view(f0=5, f=3, t0=20, t=4), speech_spec())
    assert (out[:, :, 5:8, :] == 0).all() and (out[..., 20:24] == 0).all()
    keep = torch.ones(40, 101, dtype=torch.bool)
    keep[5:8, :] = False
    keep[:, 20:24] = False
    assert torch.equal(out[0, 0][keep], x[0, 0][keep])


@pytest.mark.parametrize("snr_db", [0.0, 6.0, 20.0])
def test_noise_is_mixed_at_the_drawn_snr(snr_db):
    x = torch.zeros((1, 1, 40, 101), dtype=torch.uint8)
    x[:, :, 20:] = 200  # the upper 20 bands at -17.3 dBFS, the lower ones silent (the -80 dB floor)
    noise = torch.full((2, 1, 40, 101), 90, dtype=torch.uint8)  # piece 0: flat noise
    noise[1, :, :, :50] = 0  # piece 1: noise in the second half of the clip only
    spec = speech_spec(noise)
    px = 10 ** ((x.double() * 80 / 255 - 80) / 10)
    for piece in (0, 1):
        out = apply_views(x, one_view(noise=piece, snr_tenths=round(snr_db * 10)), spec)
        pn = 10 ** ((noise[piece : piece + 1].double() * 80 / 255 - 80) / 10)
        gain = px.sum() / (pn.sum() * 10 ** (snr_db / 10))  # power domain: SNR over the whole spectrogram
        want = ((10 * torch.log10(px + gain * pn) + 80) * 255 / 80).round().clamp(0, 255)
        assert (out.double() - want).abs().max() <= 1
    # flat noise: the silent half shows half of the added noise power, so  Σ P_x / (2 Σ P_quiet) = 10^(SNR/10)
    out = apply_views(x, one_view(noise=0, snr_tenths=round(snr_db * 10)), spec)
    quiet = 10 ** ((out[:, :, :20].double() * 80 / 255 - 80) / 10) - 1e-8
    measured = 10 * torch.log10(px.sum() / (2 * quiet.sum()))
    assert abs(float(measured) - snr_db) < 0.2  # within the quantisation of 80/255 dB


def test_views_without_the_speech_columns_are_refused():
    z = torch.zeros(2, dtype=torch.int64)
    with pytest.raises(DataError, match="recorded without the speech augmentation"):
        apply_views(batch(2), Views(z, z, z.bool()), speech_spec())


@pytest.fixture
def speech_data(tmp_path):
    return load_dataset("audio_folder", root=str(make_tree(tmp_path / "d", n=4)))


def test_datamodule_and_teacher_cache_replay_speech_views(speech_data, tmp_path):
    dm = DataModule(speech_data, batch_size=4, val_size=0, seed=1)
    assert dm.spec == spec_for(speech_data) and dm.spec.speech and dm.spec.size == (40, 101)
    assert DataModule(speech_data, batch_size=4, val_size=0, augment=False).spec == AugmentSpec()
    first = [b.x for b in dm.train_batches(0)]
    assert all(torch.equal(a, b.x) for a, b in zip(first, dm.train_batches(0), strict=True))
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(40 * 101, 2))
    cache = TeacherCache.build(
        teacher, dm.x_train, dm.spec, dm.mean, dm.std, directory=tmp_path / "c", views=2, progress=False
    )
    assert json.loads((cache.path / "meta.json").read_text())["augment"]["speech"]["freq_mask"] == 7
    assert np.load(cache.path / "views.npy").shape == (2, 8, 10)
    idx = torch.arange(8)
    views = cache.views_for(1, idx)
    assert views.speech is not None and views.speech.shape == (8, 7)
    x = apply_views(dm.x_train, views, dm.spec)
    with torch.no_grad():
        want = teacher((x.float() / 255 - dm.mean.view(1, -1, 1, 1)) / dm.std.view(1, -1, 1, 1))
    torch.testing.assert_close(cache.logits_for(1, idx), want, atol=2e-2, rtol=1e-2)  # stored as float16
    plain = AugmentSpec()
    other = TeacherCache.build(teacher, dm.x_train, plain, dm.mean, dm.std, directory=tmp_path / "c", views=2)
    assert other.key != cache.key and other.views_for(0, idx).speech is None


# ----------------------------------------------------------------------------------------- the synthetic corpus


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng); the synthetic speech corpus needs it")
    root = tmp_path_factory.mktemp("speech") / "small"
    return root, speech_synth.build(root, small=True)


def voice_of(p: Path) -> str:
    return p.name.split("__")[0]


def test_synthetic_corpus_is_split_by_voice(small_corpus):
    root, _ = small_corpus
    voices = {s: {voice_of(p) for p in (root / s).rglob("*.wav")} for s in ("train", "validation", "test")}
    variants = {s: {v.split("+")[1] for v in vs} for s, vs in voices.items()}
    assert all(voices.values())
    assert not (voices["train"] & voices["test"] or voices["train"] & voices["validation"])
    assert not (voices["validation"] & voices["test"])
    assert not (variants["train"] & (variants["test"] | variants["validation"]))
    assert sorted(p.name for p in (root / "train").iterdir()) == ["_silence_", "_unknown_", "down", "no", "up", "yes"]
    for p in list((root / "train").rglob("*.wav"))[:5]:
        info = sf.info(str(p))
        assert (info.samplerate, info.channels, info.frames) == (SR, 1, SR)


def test_synthetic_corpus_fingerprint_and_reuse(small_corpus):
    root, fp = small_corpus
    assert fp["sha256"] == speech_synth.tree_sha256(root)[0] and fp["seed"] == 0
    assert json.loads((root / "fingerprint.json").read_text())["sha256"] == fp["sha256"]
    assert fp["espeak_ng"].startswith("eSpeak NG")
    assert speech_synth.build(root, small=True)["sha256"] == fp["sha256"]  # kept, not rebuilt


def test_synthetic_corpus_loads(small_corpus):
    root, fp = small_corpus
    data = load_dataset("audio_folder", root=str(root))
    n = {s: sum(c.values()) for s, c in fp["counts"].items()}
    assert data.x_train.shape == (n["train"] + n["validation"], 1, 40, 101) and len(data.x_test) == n["test"]
    assert data.meta["noise_source"] == "background_noise"
    assert len(data.classes) == 6 and data.num_classes == 6


def test_synthetic_corpus_is_reproducible(small_corpus, tmp_path):
    _, fp = small_corpus
    again = speech_synth.build(tmp_path / "again", small=True)
    assert again["sha256"] == fp["sha256"] and again["counts"] == fp["counts"]
    assert speech_synth.build(tmp_path / "other", small=True, seed=1)["sha256"] != fp["sha256"]

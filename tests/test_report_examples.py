"""The "Inputs" section of report.html: ``distill run`` saves the first two test samples of each class
(``examples.safetensors`` + ``examples.json``, in the manifest), and the report draws them — spectrograms on a dBFS
colour scale for log-mel audio, the images themselves otherwise; a run directory without them renders as before."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from distill import api
from distill.artifacts import verify_manifest
from distill.report import plots, sections
from distill.report.examples import (
    EXAMPLES,
    EXAMPLES_INFO,
    describe,
    load_examples,
    save_examples,
    select_examples,
    uint8_to_db,
)
from distill.report.html import build_html
from test_report_html import parse

TINY = """\
seed: 0
data: {name: synthetic, options: {n_train: 96, n_test: 40, num_classes: 3, size: 8}, val_size: 16, batch_size: 32}
teacher: {model: cnn, kwargs: {width: 2, blocks: 1}, train: {epochs: 1, lr: 0.05}}
student: {model: cnn, kwargs: {width: 2, blocks: 1}}
train: {epochs: 1, lr: 0.05}
methods: []
bench: {latency: false}
device: cpu
"""


def first_two_per_class(y: torch.Tensor) -> list[int]:
    """The expected selection, written independently: walk the test split once, keep two per class."""
    seen: dict[int, list[int]] = {}
    for i, label in enumerate(y.tolist()):
        if len(seen.setdefault(label, [])) < 2:
            seen[label].append(i)
    return [i for label in sorted(seen)[:16] for i in seen[label]]


@pytest.fixture(scope="module")
def image_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("examples")
    (root / "tiny.yaml").write_text(TINY)
    api.train(root / "tiny.yaml", root / "run")  # the teacher only: train shares run's code path
    return root / "run"


def test_run_saves_the_first_two_test_samples_of_each_class(image_run):
    cfg = api.as_config(image_run / "config.yaml")
    data, _ = api.load_data(cfg)
    want = first_two_per_class(data.y_test)
    ex = load_examples(image_run)
    assert ex is not None and ex.kind == "image"
    assert ex.index.tolist() == want and len(want) == 2 * data.num_classes
    assert np.array_equal(ex.inputs, data.x_test[want].numpy()) and ex.inputs.dtype == np.uint8
    assert ex.labels.tolist() == data.y_test[want].tolist()
    info = json.loads((image_run / EXAMPLES_INFO).read_text())
    assert info["classes"] == data.classes and info["shape"] == [1, 8, 8] and "axes" not in info


def test_the_manifest_lists_the_examples_and_resume_keeps_them(image_run):
    files = json.loads((image_run / "manifest.json").read_text())["files"]
    assert {EXAMPLES, EXAMPLES_INFO} <= set(files)
    verify_manifest(image_run)
    before = (image_run / EXAMPLES).read_bytes()
    api.train(image_run / "config.yaml", image_run, resume=True)  # finished stages are skipped, files rewritten alike
    assert (image_run / EXAMPLES).read_bytes() == before
    verify_manifest(image_run)


def test_report_shows_the_images_and_an_old_run_without_them_renders_as_before(image_run, tmp_path):
    page = parse((image_run / "report.html").read_text())
    assert page.sections[-1] == "examples"
    old = tmp_path / "old"
    shutil.copytree(image_run, old)
    (old / EXAMPLES).unlink()
    (old / EXAMPLES_INFO).unlink()
    html = build_html([old])
    assert "examples" not in parse(html).sections and "Inputs" not in html
    assert parse(html).sections == [s for s in page.sections if s != "examples"]
    (old / "examples.safetensors").write_bytes(b"not safetensors")  # unreadable: left out, the page still renders
    assert "examples" not in parse(build_html([old])).sections


def log_mel_meta() -> dict:
    return {
        "input_kind": "log-mel",
        "input_axes": {
            "hop_ms": 10.0,
            "n_mels": 40,
            "sample_rate": 16000,
            "fmin": 20.0,
            "fmax": 8000.0,
            "top_db": 80.0,
        },
    }


def test_a_log_mel_run_gets_spectrograms_on_the_dbfs_scale(image_run, tmp_path, monkeypatch):
    run = tmp_path / "speech"
    shutil.copytree(image_run, run)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (20, 1, 40, 101), dtype=torch.uint8, generator=g)
    y = torch.tensor([2, 0, 1, 0, 2, 2, 1, 0, 1, 2] * 2)
    save_examples(run, x, y, ["yes", "no", "up"], log_mel_meta())
    ex = load_examples(run)
    assert ex.kind == "log-mel" and ex.info["axes"]["hop_ms"] == 10.0 and ex.inputs.shape == (6, 1, 40, 101)
    assert ex.index.tolist() == first_two_per_class(y)
    html = build_html([run])
    page = parse(html)
    assert "examples" in page.sections
    section = html.split('<section id="examples">', 1)[1].split("</section>", 1)[0]
    assert 'src="data:image/png;base64,' in section and "log-mel" in section and "10 ms apart" in section
    seen = {}

    def spy(db, titles, hop_s, db_range):
        seen.update(db=db, titles=list(titles), hop_s=hop_s, db_range=db_range)
        return "data:image/png;base64,AAAA"

    monkeypatch.setattr(plots, "spectrogram_grid", spy)
    sections.examples_figure(ex)
    assert seen["db_range"] == (-80.0, 0.0) and seen["hop_s"] == pytest.approx(0.01)
    assert np.allclose(seen["db"], ex.inputs[:, 0].astype(float) * 80 / 255 - 80)
    assert seen["titles"] == ["yes", "yes", "no", "no", "up", "up"]


def test_an_audio_folder_run_marks_its_inputs_as_log_mel(tmp_path):
    sf = pytest.importorskip("soundfile")
    pytest.importorskip("librosa")
    t = np.arange(16_000) / 16_000
    for split, n in (("train", 6), ("test", 3)):
        for c, freq in (("low", 300.0), ("high", 3000.0)):
            for i in range(n):
                path = tmp_path / "clips" / split / c / f"{i}.wav"
                path.parent.mkdir(parents=True, exist_ok=True)
                sf.write(str(path), (0.3 * np.sin(2 * np.pi * freq * (1 + i / 50) * t)).astype(np.float32), 16_000)
    recipe = TINY.replace(
        "{name: synthetic, options: {n_train: 96, n_test: 40, num_classes: 3, size: 8}, val_size: 16,",
        f"{{name: audio_folder, root: {json.dumps(str(tmp_path / 'clips'))}, val_size: 4,",
    )
    (tmp_path / "speech.yaml").write_text(recipe)
    api.train(tmp_path / "speech.yaml", tmp_path / "run")
    info = json.loads((tmp_path / "run" / EXAMPLES_INFO).read_text())
    assert info["kind"] == "log-mel" and info["shape"] == [1, 40, 101] and info["classes"] == ["high", "low"]
    assert info["axes"] == log_mel_meta()["input_axes"]
    assert load_examples(tmp_path / "run").index.tolist() == [0, 1, 3, 4]  # test/high/0-2.wav, then test/low/0-2
    html = (tmp_path / "run" / "report.html").read_text()
    assert "examples" in parse(html).sections and "40 mel bands (20–8000 Hz)" in html


def test_db_scale_maps_255_to_0_dbfs_and_0_to_minus_80():
    assert uint8_to_db(np.array([255]))[0] == pytest.approx(0.0)
    assert uint8_to_db(np.array([0]))[0] == pytest.approx(-80.0)
    q = np.arange(256, dtype=np.uint8)
    db = uint8_to_db(q)
    assert np.all(np.diff(db) > 0) and np.allclose(np.diff(db), 80 / 255)
    from distill.data.spectrogram import db_to_uint8

    assert np.array_equal(db_to_uint8(db), q)  # the inverse of the features' own quantisation


def test_selection_caps_the_classes_and_keeps_test_order():
    y = np.array([19, 3, 3, 0, 19, 3, 0, 0, *range(20)])
    idx = select_examples(y)
    assert idx.tolist() == first_two_per_class(torch.from_numpy(y))
    assert sorted(set(y[idx].tolist())) == list(range(16)) and len(idx) == 2 + 2 + 14  # 0 and 3 twice, 19 left out
    assert idx[:6].tolist() == [3, 6, 9, 10, 1, 2]  # class 0, 1, 2, 3: grouped by class, each in test order


def test_no_examples_for_tabular_features_or_an_empty_test_split(tmp_path):
    assert save_examples(tmp_path, torch.zeros(4, 3), torch.zeros(4, dtype=torch.long), ["a", "b"], None) is None
    empty = torch.zeros(0, 1, 4, 4, dtype=torch.uint8)
    assert save_examples(tmp_path, empty, torch.zeros(0, dtype=torch.long), ["a", "b"], None) is None
    assert list(tmp_path.iterdir()) == []
    assert describe(None, ["a"], (3, 4, 4))["kind"] == "image"


def test_image_grid_draws_grey_and_rgb():
    grey = np.zeros((3, 1, 8, 8), dtype=np.uint8)
    rgb = np.full((2, 3, 8, 8), 200, dtype=np.uint8)
    for images in (grey, rgb):
        uri = plots.image_grid(images, [str(i) for i in range(len(images))])
        assert uri.startswith("data:image/png;base64,") and len(uri) > 500

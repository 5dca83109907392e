"""Speech through the same commands as images: ``distill run / train / distill / compress / report`` on a small
espeak-ng corpus, with tiny models and one epoch (skipped without espeak-ng, soundfile or librosa)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from distill.artifacts import load_model
from distill.cli import main
from distill.compress import load_compressed, load_recipe
from distill.config import load_config
from distill.data import speech_synth
from distill.data.base import load_dataset
from distill.report.html import load_predictions
from trust_helpers import tamper_and_rehash

ROOT = Path(__file__).resolve().parents[1]
RECIPE = str(ROOT / "configs/speech.yaml")
COMPRESS = str(ROOT / "configs/speech_compress.yaml")
BENCH = ["--set=bench.batch_sizes=[1]", "--set=bench.repeats=2", "--set=device=cpu"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    pytest.importorskip("soundfile", reason="audio_folder reads clips with soundfile (the speech extra)")
    pytest.importorskip("librosa", reason="audio_folder resamples with librosa (the speech extra)")
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng); the synthetic speech corpus needs it")
    root = tmp_path_factory.mktemp("speech") / "small"
    speech_synth.build(root, small=True)
    return root


def tiny(corpus: Path) -> list[str]:
    """configs/speech.yaml on the small corpus with a width-8 ResNet teacher, kws_tiny, one epoch, kd only."""
    sets = [
        f"data.root={corpus}", "data.batch_size=16", "teacher.kwargs.width=8", "teacher.train.epochs=1",
        "student.model=kws_tiny", "student.kwargs={}", "train.epochs=1", "cache.views=1", "methods=[{name: kd}]",
    ]  # fmt: skip
    return [f"--set={s}" for s in sets] + BENCH


@pytest.fixture(scope="module")
def run_dir(corpus, tmp_path_factory) -> Path:
    """A run whose student predicts more than one class (after one epoch every clip gets the same class, and an
    accuracy check would hold for any model): 10 epochs without augmentation, the last epoch kept (+2 s)."""
    out = tmp_path_factory.mktemp("speech-run") / "run"
    longer = ["teacher.train.epochs=10", "train.epochs=10", "data.augment=false", "select=last"]
    assert main(["run", RECIPE, "--out", str(out), *tiny(corpus), *[f"--set={s}" for s in longer]]) == 0
    return out


def test_the_compress_recipe_loads_and_reads_the_runs_data():
    cfg = load_recipe(COMPRESS)
    assert cfg.quantize.enabled and cfg.quantize.mode == "static" and cfg.export.enabled and cfg.export.int8
    assert not cfg.prune.enabled and not cfg.recover.enabled
    run_data = yaml.safe_load(Path(RECIPE).read_text())["data"]
    for key in ("name", "root", "val_size", "split_seed", "options"):  # the student's spectrograms and split
        assert getattr(cfg.data, key) == run_data[key], key
    # YAML reads a bare `off` as false: the speech recipe's cache can be turned off from the command line
    assert load_config(RECIPE, ["cache.mode=off"]).cache.mode == "off"


def test_run_then_int8_compress_and_an_independent_evaluation(corpus, run_dir, tmp_path):
    for module in ("onnx", "onnxruntime", "onnxscript"):  # the recipe exports with the dynamo exporter
        pytest.importorskip(module, reason="ONNX export needs the compress extra")
    out = tmp_path / "int8"
    student = run_dir / "students" / "kd"
    args = ["compress", "--model", str(student), "--recipe", COMPRESS, "--out", str(out)]
    assert main([*args, f"--set=data.root={corpus}", *BENCH]) == 0
    report = json.loads((out / "report.json").read_text())
    rows = {r["stage"]: r for r in report["stages"]}
    assert list(rows) == ["input", "quantized", "onnx", "onnx_int8"]  # no pruning by default
    assert all("latency_ms_b1" in r and r["size_bytes"] for r in rows.values())
    assert (out / "export" / "model.int8.onnx").is_file() and "test samples" in (out / "report.md").read_text()

    # the test spectrograms, normalised as model.json says, without the DataModule
    data = load_dataset("audio_folder", root=str(corpus))
    model, spec = load_compressed(out / "quantized")
    assert any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in model.modules())
    pre = spec["preprocessing"]
    assert pre["input_shape"] == [1, 40, 101] and tuple(data.x_test.shape[1:]) == (1, 40, 101)
    mean, std = torch.tensor(pre["mean"]).view(1, -1, 1, 1), torch.tensor(pre["std"]).view(1, -1, 1, 1)
    x = (data.x_test.float() * pre["scale"] - mean) / std
    with torch.no_grad():
        int8_logits = model(x)
        float_logits = load_model(student)[0].eval()(x)
    y, pred = data.y_test.numpy(), int8_logits.argmax(1).numpy()
    assert len(set(pred.tolist())) > 1  # not one class for every clip, so the accuracy says something
    assert rows["quantized"]["accuracy"] == pytest.approx(float((pred == y).mean()))
    import onnxruntime as ort

    session = ort.InferenceSession(str(out / "export" / "model.int8.onnx"), providers=["CPUExecutionProvider"])
    onnx_pred = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0].argmax(1)
    assert rows["onnx_int8"]["accuracy"] == pytest.approx(float((onnx_pred == y).mean()))
    # the input row is the run's student on the same clips, and int8 stays close to it
    run_logits, run_labels = load_predictions(student)
    assert np.array_equal(run_labels, y)
    assert rows["input"]["accuracy"] == pytest.approx(float((run_logits.argmax(1) == y).mean()))
    assert np.allclose(float_logits.numpy(), run_logits, atol=1e-4)
    assert (int8_logits - float_logits).abs().max() < 0.1 * float_logits.abs().max() + 0.05


def test_train_then_signed_distill_and_a_tampered_teacher_is_refused(corpus, tmp_path, capsys):
    sets = tiny(corpus)
    assert main(["train", RECIPE, "--out", str(tmp_path / "t"), *sets]) == 0
    assert not (tmp_path / "t" / "students").exists()  # teacher only
    teacher, pub = tmp_path / "t" / "teacher", tmp_path / "k.pub"
    assert main(["keygen", "--out", str(tmp_path / "k")]) == 0
    assert main(["sign", str(teacher), "--key", str(tmp_path / "k.key")]) == 0
    key = f"--set=teacher.public_key={pub}"
    assert main(["distill", RECIPE, "--teacher", str(teacher), "--out", str(tmp_path / "d"), *sets, key]) == 0
    assert (tmp_path / "d" / "students" / "kd" / "model.json").is_file()
    assert json.loads((tmp_path / "d" / "report.json").read_text())["teacher"]["method"] == "loaded"

    shutil.copytree(teacher, tmp_path / "bad")
    tamper_and_rehash(tmp_path / "bad")  # model.json's sha256 matches again: only the signature can tell
    capsys.readouterr()
    refused = [
        ["distill", RECIPE, "--teacher", str(tmp_path / "bad"), "--out", str(tmp_path / "d2"), *sets, key],
        ["compress", "--model", str(tmp_path / "bad"), "--key", str(pub), "--recipe", COMPRESS,
         "--out", str(tmp_path / "c2"), f"--set=data.root={corpus}"],
    ]  # fmt: skip
    for argv in refused:
        assert main(argv) == 2, argv[0]
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "changed after signing" in err[0], err
    assert not (tmp_path / "d2").exists() and not (tmp_path / "c2").exists()


def test_report_renders_the_spectrogram_inputs(run_dir, tmp_path, capsys):
    page = tmp_path / "report.html"
    assert main(["report", str(run_dir), "--out", str(page)]) == 0
    html = page.read_text()
    assert "Inputs: test examples" in html and "log-mel spectrograms" in html
    (tmp_path / "c").mkdir()  # a compress output is not a run: one line, not a traceback
    (tmp_path / "c" / "report.json").write_text(json.dumps({"kind": "compress", "stages": []}))
    capsys.readouterr()
    assert main(["report", str(tmp_path / "c"), "--out", str(tmp_path / "c.html")]) == 2
    assert "distill compress output" in capsys.readouterr().err and not (tmp_path / "c.html").exists()

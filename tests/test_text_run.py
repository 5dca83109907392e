"""``distill text`` end to end on a tiny local BERT and CSV files: the run directory matches an image run's (models
as safetensors, report.json/md/html, manifest), saved models reload to the same predictions, and bad recipes fail
before any training."""

import csv
import json
import math
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers", reason="text distillation needs `transformers`")

from distill.artifacts import load_model, verify_manifest  # noqa: E402
from distill.cli import main  # noqa: E402
from distill.errors import DistillError  # noqa: E402
from distill.report.metrics import predict  # noqa: E402
from distill.text import data as D  # noqa: E402
from distill.text.models import BiLSTMClassifier, HFClassifier, TextCNN  # noqa: E402
from distill.text.pipeline import TextRecipe, run  # noqa: E402
from distill.text.saving import save_text_model  # noqa: E402
from distill.trust import generate_keypair, sign_model  # noqa: E402

GOOD, BAD = "good great fine fun lovely".split(), "bad awful dull poor boring".split()
FILLER = "the movie was very a film plot acting is".split()


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory):
    """A local Hugging Face model directory: a 2-layer BERT and a WordPiece tokenizer over a toy vocabulary."""
    d = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *GOOD, *BAD, *FILLER]
    (d / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = transformers.BertTokenizerFast(vocab_file=str(d / "vocab.txt"))
    if len(tok) != len(vocab):  # transformers 5 ignores vocab_file (every word would be [UNK]); it takes the map
        tok = transformers.BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)})
    assert tok("good movie")["input_ids"] == [2, vocab.index("good"), vocab.index("movie"), 3]
    tok.save_pretrained(str(d))
    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=32, num_labels=2,
    )  # fmt: skip
    transformers.BertForSequenceClassification(cfg).save_pretrained(str(d))
    return d


def write_csv(path, n, seed):
    g = torch.Generator().manual_seed(seed)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label", "movie"])
        for i in range(n):
            words = GOOD if i % 2 else BAD
            pick = [words[int(j)] for j in torch.randint(0, 5, (3,), generator=g)]
            w.writerow([" ".join(["the", "movie", "was", *pick]), "pos" if i % 2 else "neg", f"m{i // 3}"])
    return path


def recipe(tmp_path, teacher_dir, **kw):
    raw = {
        "data": {
            "name": "files", "train": str(write_csv(tmp_path / "train.csv", 96, 0)),
            "test": str(write_csv(tmp_path / "test.csv", 32, 1)), "group_field": "movie",
        },
        "max_length": 16, "batch_size": 16,
        "teacher": {"model": str(teacher_dir)},
        "teacher_train": {"epochs": 3, "optimizer": "adamw", "lr": 3e-3},
        "train": {"epochs": 2, "optimizer": "adamw", "lr": 3e-3},
        "students": [
            {"name": "cnn-ce", "student": {"model": "cnn", "embed_dim": 8, "channels": 8}, "method": "text_ce",
             "train": {"epochs": 1}},
            {"name": "l1-kd", "student": {"model": "layers", "layers": [1]}, "method": "text_kd"},
            {"name": "lstm-transfer", "student": {"model": "bilstm", "embed_dim": 8, "hidden": 8, "init": "pca"},
             "method": "text_kd", "transfer": True},
        ],
        "transfer": {"copies": 2},
        "cache_dir": str(tmp_path / "cache"),
        **kw,
    }  # fmt: skip
    return raw


def test_text_run_writes_an_image_style_run_directory(tmp_path, tiny_teacher):
    out = tmp_path / "run"
    report = run(TextRecipe.from_dict(recipe(tmp_path, tiny_teacher)), out, log=lambda *a: None)
    for f in ("report.json", "report.md", "report.html", "manifest.json", "teacher/tokenizer/tokenizer.json"):
        assert (out / f).is_file(), f
    verify_manifest(out)
    saved = json.loads((out / "report.json").read_text())
    assert [s["name"] for s in saved["students"]] == ["cnn-ce", "l1-kd", "lstm-transfer"]
    assert saved["students"][2]["method"] == "text_kd+transfer"
    assert saved["teacher"]["accuracy"] == report["teacher"]["accuracy"] and saved["dataset"]["classes"] == 2
    ce = saved["students"][0]
    for s in saved["students"]:  # gap recovered: against the CE student, from the accuracies themselves
        gap = saved["teacher"]["accuracy"] - ce["accuracy"]
        want = (s["accuracy"] - ce["accuracy"]) / gap if gap > 0 else None
        assert s["gap_recovered"] == (pytest.approx(want) if want is not None else None)
        # the speed-up is the median of per-round ratios measured beside the teacher (paired_latency, pinned to
        # hand-made timings in test_text_transfer.py); on a loaded machine it may differ from the ratio of the
        # median latencies by any factor, so here only its presence and sign are checked
        assert math.isfinite(s["speedup_b1"]) and s["speedup_b1"] > 0 and s["teacher_latency_ms_b1"] > 0
    html = (out / "report.html").read_text()
    assert "lstm-transfer" in html and "<img" in html and "http://" not in html
    assert (out / "students" / "l1-kd" / "metrics.jsonl").read_text().count("\n") == 2
    assert (out / "students" / "cnn-ce" / "metrics.jsonl").read_text().count("\n") == 1  # its own train.epochs
    # every saved model reloads through the one loader and predicts what the run measured
    tok = transformers.AutoTokenizer.from_pretrained(str(out / "students" / "cnn-ce" / "tokenizer"))
    data = D.load_text_files(write_csv(tmp_path / "train.csv", 96, 0), write_csv(tmp_path / "test.csv", 32, 1))
    dm = D.TextDataModule(data, tok, 16, 16, val_size=0.0)
    for name, cls in (("teacher", HFClassifier), ("students/cnn-ce", TextCNN), ("students/lstm-transfer", None)):
        model, spec = load_model(out / name)
        assert spec["task"] == "text" and spec["classes"] == ["neg", "pos"]
        assert isinstance(model, cls or BiLSTMClassifier)
        logits, y = predict(model, dm.eval_batches("test"))
        row = saved["teacher"] if name == "teacher" else next(s for s in saved["students"] if name.endswith(s["name"]))
        assert float((logits.argmax(1) == y).float().mean()) == pytest.approx(row["accuracy"])


def test_changed_text_weights_are_refused(tmp_path):
    m = TextCNN(20, 2, embed_dim=4, channels=4)
    save_text_model(tmp_path / "m", m, ["a", "b"])
    raw = bytearray((tmp_path / "m" / "model.safetensors").read_bytes())
    raw[-1] ^= 1
    (tmp_path / "m" / "model.safetensors").write_bytes(bytes(raw))
    with pytest.raises(Exception, match="sha256"):
        load_model(tmp_path / "m")


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"students": [{"name": "x", "model": "cnn"}]}, "needs .student: "),
        ({"students": [{"student": {"model": "cnn"}}, {"student": {"model": "cnn"}}]}, "unique"),
        ({"transfer": {"copies": 0}, "students": [{"student": {"model": "cnn"}, "transfer": True}]}, "copies"),
        ({"students": [{"student": {"model": "cnn"}, "train": {"epochz": 2}}]}, "bad train settings"),
        ({"students": [{"student": {"model": "cnn"}, "train": {"epochs": 0}}]}, "epochs must be"),
        ({"students": [{"student": {"model": "gru"}}]}, "unknown text student"),
        ({"students": [{"student": {"model": "cnn"}, "method": "nope"}]}, "nope"),
        ({"teacher": {"model": "minilm", "finetun": True}}, "unknown teacher key"),
    ],
)
def test_bad_text_recipes_fail_before_training(tmp_path, tiny_teacher, change, match):
    with pytest.raises(DistillError, match=match):  # ConfigError, or UnknownNameError for a method
        run(TextRecipe.from_dict(recipe(tmp_path, tiny_teacher, **change)), tmp_path / "run", log=lambda *a: None)
    assert not (tmp_path / "cache" / "text_teacher").exists()  # refused before the teacher was fine-tuned


def test_cli_text_prints_the_table_and_keeps_an_existing_run(tmp_path, tiny_teacher, capsys):
    import yaml

    raw = recipe(tmp_path, tiny_teacher)
    raw["students"] = raw["students"][:1]
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(raw))
    assert main(["text", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "run")]) == 0
    assert "cnn-ce" in capsys.readouterr().out
    before = (tmp_path / "run" / "report.json").read_bytes()
    assert main(["text", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "run")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (tmp_path / "run" / "report.json").read_bytes() == before


def test_train_then_distill_a_text_recipe_through_the_image_commands(tmp_path, tiny_teacher, capsys):
    import yaml

    raw = recipe(tmp_path, tiny_teacher, task="text")
    raw["students"] = raw["students"][:1]
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(raw))
    assert main(["train", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "t")]) == 0
    t = json.loads((tmp_path / "t" / "report.json").read_text())
    assert t["students"] == [] and t["teacher"]["method"] == "fine-tuned"
    # with teacher.public_key in the recipe, --teacher DIR keeps it: an unsigned teacher is refused, before --out
    generate_keypair(tmp_path / "k.key", tmp_path / "k.pub")
    raw["teacher"]["public_key"] = str(tmp_path / "k.pub")
    (tmp_path / "r-key.yaml").write_text(yaml.safe_dump(raw))
    capsys.readouterr()
    assert main(["distill", str(tmp_path / "r-key.yaml"), "--teacher", str(tmp_path / "t" / "teacher"),
                 "--out", str(tmp_path / "d")]) == 2  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not signed" in err[0] and not (tmp_path / "d").exists(), err
    sign_model(tmp_path / "t" / "teacher", tmp_path / "k.key")  # its tokenizer/ included
    assert main(["distill", str(tmp_path / "r-key.yaml"), "--teacher", str(tmp_path / "t" / "teacher"),
                 "--out", str(tmp_path / "d")]) == 0  # fmt: skip
    d = json.loads((tmp_path / "d" / "report.json").read_text())
    assert d["teacher"]["method"] == "loaded" and d["teacher"]["accuracy"] == t["teacher"]["accuracy"]
    assert [s["name"] for s in d["students"]] == ["cnn-ce"]
    assert main(["run", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "d"), "--resume"]) == 2
    assert "do not resume" in capsys.readouterr().err
    # a tampered saved teacher is refused before anything is trained
    w = tmp_path / "t" / "teacher" / "model.safetensors"
    w.write_bytes(w.read_bytes()[:-1] + bytes([w.read_bytes()[-1] ^ 1]))
    assert main(["distill", str(tmp_path / "r.yaml"), "--teacher", str(tmp_path / "t" / "teacher"),
                 "--out", str(tmp_path / "e")]) == 2  # fmt: skip
    assert "sha256" in capsys.readouterr().err and not (tmp_path / "e").exists()


def test_signed_teacher_with_an_altered_tokenizer_is_refused_before_anything_is_read(
    tmp_path, tiny_teacher, monkeypatch
):
    from distill.text import pipeline
    from distill.text.models import load_hf_classifier

    saved = tmp_path / "saved"
    save_text_model(saved, load_hf_classifier(tiny_teacher, num_labels=2), ["neg", "pos"], {"method": "loaded"})
    transformers.AutoTokenizer.from_pretrained(str(tiny_teacher)).save_pretrained(str(saved / "tokenizer"))
    generate_keypair(tmp_path / "k.key", tmp_path / "k.pub")
    sign_model(saved, tmp_path / "k.key")
    tok = saved / "tokenizer" / "tokenizer.json"
    text = tok.read_text()
    assert '"[UNK]": 1' in text
    tok.write_text(text.replace('"[UNK]": 1', '"[UNK]": 4'))  # a vocabulary swap, weights untouched

    def must_not_run(*args, **kwargs):
        raise AssertionError("the teacher directory was read before its signature was checked")

    monkeypatch.setattr(pipeline, "load_tokenizer", must_not_run)
    monkeypatch.setattr(pipeline, "load_data", must_not_run)
    teacher = {"checkpoint": str(saved), "public_key": str(tmp_path / "k.pub")}
    raw = recipe(tmp_path, tiny_teacher, teacher=teacher)
    with pytest.raises(DistillError, match=r"tokenizer/tokenizer.json changed after signing"):
        run(TextRecipe.from_dict(raw), tmp_path / "run", log=lambda *a: None)
    assert not (tmp_path / "run").exists()
    bad = recipe(tmp_path, tiny_teacher, teacher={"checkpoint": str(saved), "public_key": 3})
    with pytest.raises(DistillError, match=r"teacher\.public_key must be a path"):
        run(TextRecipe.from_dict(bad), tmp_path / "run", log=lambda *a: None)


def test_the_shipped_text_recipe_is_valid():
    from pathlib import Path

    from distill.commands.text import is_text_recipe
    from distill.config import read_yaml
    from distill.text.pipeline import check_students

    path = Path(__file__).resolve().parents[1] / "configs" / "text.yaml"
    assert is_text_recipe(path)
    names, augment = check_students(TextRecipe.from_dict(read_yaml(path)))
    assert names == ["minilm-L2-kd", "minilm-L2-hidden", "bilstm-kd-transfer"] and augment.copies == 4

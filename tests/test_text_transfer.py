"""The text transfer set (Tang et al. 2019 augmentation), length-sorted prediction and the teacher-logit cache."""

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
pytest.importorskip("transformers", reason="text distillation needs `transformers`")

from distill.errors import ConfigError
from distill.report.metrics import predict
from distill.text import data as D
from distill.text import pipeline as P
from distill.text.augment import TransferAugment
from distill.text.models import TextCNN, sentence_embeddings

TEXTS = [
    "a truly wonderful and moving film about love",
    "dull , slow and far too long",
    "great acting",
    "ok",
    "the plot makes no sense at all but the score is lovely",
]


def test_same_seed_same_transfer_set_other_seed_another():
    a = TransferAugment(copies=3, seed=1)(TEXTS)
    assert a == TransferAugment(copies=3, seed=1)(TEXTS)
    assert a != TransferAugment(copies=3, seed=2)(TEXTS)


def test_keep_takes_a_prefix_of_each_texts_variants_and_positions_find_them():
    """The copies curve: keep=k is the first k variants of each text of the one full set, so the full set's
    teacher labels sliced at ``positions`` label the smaller set."""
    full_aug = TransferAugment(copies=5, p_mask=0.3, seed=4)
    groups = full_aug.grouped(TEXTS)
    full = full_aug(TEXTS)
    assert full == [v for g in groups for v in g]
    assert [len(g) for g in groups][3] < 5  # "ok" has few distinct variants: the groups are not all full
    for k in (1, 2, 5):
        small = TransferAugment(copies=5, p_mask=0.3, seed=4, keep=k)
        got = small(TEXTS)
        assert got == [v for g in groups for v in g[:k]]
        assert got == [full[i] for i in small.positions(TEXTS)]
    assert TransferAugment(copies=5, p_mask=0.3, seed=4, keep=5)(TEXTS) == full
    for bad in (0, 6):
        with pytest.raises(ConfigError, match="keep"):
            TransferAugment(copies=5, keep=bad)


def test_variants_are_new_distinct_and_at_most_copies_per_text():
    aug = TransferAugment(copies=4, p_mask=0.2, p_replace=0.2, p_ngram=0.3, seed=0)
    out = aug(TEXTS)
    assert not set(out) & set(TEXTS)
    assert len(out) == len(set(out))
    for t in TEXTS:
        assert len(aug([t])) <= 4
    # a one-word text drawing replacements from itself has one possible new variant: the mask
    assert set(TransferAugment(copies=4, p_mask=0.5)(["ok"])) <= {"[MASK]"}


def test_masking_alone_masks_every_word_when_p_is_one():
    out = TransferAugment(copies=3, p_mask=1.0, p_replace=0.0, p_ngram=0.0, mask_token="<m>")(TEXTS)
    # every variant of a text is the same all-mask string, so duplicates collapse to one per text
    assert out == [" ".join(["<m>"] * len(t.split())) for t in TEXTS]


def test_ngram_sampling_cuts_a_contiguous_window_of_at_most_max_words():
    aug = TransferAugment(copies=6, p_mask=0.0, p_replace=0.0, p_ngram=1.0, max_ngram=3)
    for t in TEXTS[:2] + TEXTS[4:]:
        words = t.split()
        windows = {" ".join(words[i : i + n]) for n in (1, 2, 3) for i in range(len(words) - n + 1)}
        got = aug([t])
        assert got and set(got) <= windows


def test_replacement_draws_words_of_the_corpus_and_keeps_the_length():
    corpus = {w for t in TEXTS for w in t.split()}
    out = TransferAugment(copies=3, p_mask=0.0, p_replace=1.0, p_ngram=0.0, seed=3)(TEXTS)
    assert len(out) >= 3
    lengths = {len(t.split()) for t in TEXTS}
    for v in out:
        assert len(v.split()) in lengths and set(v.split()) <= corpus
    first = TransferAugment(copies=3, p_mask=0.0, p_replace=1.0, p_ngram=0.0, seed=3)(TEXTS[:1])
    assert all(len(v.split()) == len(TEXTS[0].split()) for v in first)


def test_mask_rate_matches_p_mask():
    words = [f"w{i}" for i in range(400)]
    out = TransferAugment(copies=5, p_mask=0.3, p_replace=0.0, p_ngram=0.0, seed=0)([" ".join(words)])
    masked = sum(v.split().count("[MASK]") for v in out) / (5 * 400)
    assert len(out) == 5 and abs(masked - 0.3) < 0.03  # 2000 Bernoulli(0.3) draws: sd 0.01


@pytest.mark.parametrize(
    "bad",
    [{"copies": 0}, {"p_mask": 1.5}, {"p_mask": 0.6, "p_replace": 0.6}, {"max_ngram": 0}, {"p_ngram": -0.1}],
)
def test_bad_settings_are_refused(bad):
    with pytest.raises(ConfigError, match="transfer"):
        TransferAugment(**bad)


def test_unknown_transfer_keys_are_refused():
    with pytest.raises(ConfigError, match="unknown transfer key"):
        TransferAugment.from_dict({"copies": 2, "p_drop": 0.1})


# -- the data module -----------------------------------------------------------------------------------------------
WORDS = "good great fine fun bad awful dull poor movie film plot acting the a was is very not [MASK]".split()


def toy_tokenizer(texts):
    return [[1, *(3 + WORDS.index(w) for w in t.split()), 2] for t in texts]


def toy_data(n=64):
    g = torch.Generator().manual_seed(0)
    texts, labels, groups = [], [], []
    for i in range(n):
        pool = WORDS[:4] if i % 2 else WORDS[4:8]
        words = [pool[int(j)] for j in torch.randint(0, 4, (int(torch.randint(2, 7, (1,), generator=g)),), generator=g)]
        texts.append(" ".join(["the", "movie", "was", *words]))
        labels.append(i % 2)
        groups.append(f"m{i // 4}")
    return D.TextData("toy", texts[:48], torch.tensor(labels[:48]), texts[48:], torch.tensor(labels[48:]),
                      ["neg", "pos"], groups[:48])  # fmt: skip


def test_transfer_set_comes_from_the_training_split_only_and_is_unlabeled():
    data = toy_data()
    plain = D.TextDataModule(data, toy_tokenizer, batch_size=8, max_length=16, val_size=0.25, seed=0)
    aug = TransferAugment(copies=2, seed=0)
    dm = D.TextDataModule(data, toy_tokenizer, batch_size=8, max_length=16, val_size=0.25, seed=0, augment=aug)
    train, y = dm.split("train")
    n = len(plain.split("train")[0])
    assert train[:n] == plain.split("train")[0] and torch.equal(y[:n], plain.split("train")[1])
    assert dm.split("val")[0] == plain.split("val")[0] and dm.split("test")[0] == plain.split("test")[0]
    assert train[n:] == aug(plain.split("train")[0])  # made from train texts alone, never val or test
    assert len(train) > n and bool((y[n:] == -1).all())
    assert sum(len(b.y) for b in dm.train_batches(0)) == len(train)


def test_length_sorted_prediction_equals_prediction_in_order():
    data = toy_data()
    dm = D.TextDataModule(data, toy_tokenizer, batch_size=8, max_length=16, val_size=0.0, eval_batch_size=5)
    torch.manual_seed(0)
    model = TextCNN(32, 2, embed_dim=8, channels=4).eval()
    batches = list(dm.eval_batches("train", by_length=True))
    lengths = [int(b.x.attention_mask.sum(1).max()) for b in batches]
    assert lengths == sorted(lengths)  # shortest batches first
    assert torch.allclose(P.predict_split(model, dm, "train"), predict(model, dm.eval_batches("train"))[0], atol=1e-6)
    in_order = sentence_embeddings(model, dm.eval_batches("train"))
    assert torch.allclose(sentence_embeddings(model, dm.eval_batches("train", by_length=True)), in_order, atol=1e-6)


def test_teacher_logits_are_cached_by_weights_and_tokens(tmp_path, monkeypatch):
    data = toy_data()
    dm = D.TextDataModule(data, toy_tokenizer, batch_size=8, max_length=16, val_size=0.0)
    torch.manual_seed(0)
    model = TextCNN(32, 2, embed_dim=8, channels=4).eval()
    first = P.teacher_logits(model, dm, "train", tmp_path)
    assert len(list((tmp_path / "text_logits").iterdir())) == 1

    def boom(*a, **k):
        raise AssertionError("the cached logits should have been read")

    monkeypatch.setattr(P, "predict_split", boom)
    assert torch.equal(P.teacher_logits(model, dm, "train", tmp_path), first)
    monkeypatch.undo()
    with torch.no_grad():
        model.head.bias += 1.0  # other weights: another key, computed afresh
    second = P.teacher_logits(model, dm, "train", tmp_path)
    assert torch.allclose(second, first + 1.0, atol=1e-5)
    assert len(list((tmp_path / "text_logits").iterdir())) == 2
    for f in (tmp_path / "text_logits").iterdir():  # a truncated file is recomputed, not served
        f.write_bytes(f.read_bytes()[:20])
    assert torch.allclose(P.teacher_logits(model, dm, "train", tmp_path), second, atol=1e-6)


def test_paired_latency_alternates_and_takes_median_ratios():
    calls = []
    t_ms = iter([10.0, 20.0, 30.0, 8.0, 8.0, 8.0])  # the teacher's rounds: b1 ×3, then b32 ×3
    s_ms = iter([5.0, 5.0, 30.0, 2.0, 4.0, 1.0])

    def teacher(bs, n):
        calls.append(("t", bs, n))
        return next(t_ms)

    def student(bs, n):
        calls.append(("s", bs, n))
        return next(s_ms)

    out = P.paired_latency(teacher, student, (1, 32), rounds=3, repeats=7)
    assert [c[0] for c in calls] == ["t", "s"] * 6 and {c[2] for c in calls} == {7}
    assert out["latency_ms_b1"] == 5.0 and out["teacher_latency_ms_b1"] == 20.0
    assert out["speedup_b1"] == 2.0  # ratios 2, 4, 1 -> median 2 (not 20 / 5 = 4)
    assert out["speedup_b32"] == 4.0 and out["latency_ms_b32"] == 2.0  # ratios 4, 2, 8

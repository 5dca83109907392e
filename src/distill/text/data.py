"""Text data: readers (CSV / JSONL / Hugging Face ``datasets`` on disk / Rotten Tomatoes), tokenisation done once
and cached, and :class:`TextDataModule` — the text counterpart of :class:`~distill.data.module.DataModule`.

Batches are padded dynamically (to the longest sequence of the batch, not a global maximum) and drawn from
length buckets, so short snippets are not padded to the length of the longest review in the set.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from distill.artifacts import atomic_write
from distill.errors import DataError
from distill.text.corpus import (  # the texts and their readers: importable from here, as before
    TextBatch,
    TextData,
    TokenBatch,
    group_split,
    load_text_files,  # noqa: F401
    read_records,  # noqa: F401
    records_to_texts,  # noqa: F401
    rotten_tomatoes,  # noqa: F401
    rotten_tomatoes_path,  # noqa: F401
    text_hash,
)

# -- tokenisation -------------------------------------------------------------------------------------------------
_MEMORY: dict[str, list[list[int]]] = {}


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """A short hash of the tokenizer's vocabulary and settings (changing either changes every cache key)."""
    try:
        state = tokenizer.backend_tokenizer.to_str()
    except AttributeError:
        state = json.dumps(sorted(tokenizer.get_vocab().items()))
    return hashlib.sha256((type(tokenizer).__name__ + state).encode()).hexdigest()[:16]


def tokenize_cached(
    tokenizer: Any | Callable[[list[str]], list[list[int]]],
    texts: Sequence[str],
    max_length: int,
    cache_dir: str | Path | None = None,
) -> list[list[int]]:
    """Token ids of every text (special tokens included, truncated to ``max_length``), computed once.

    Cached in memory and, with ``cache_dir``, on disk as safetensors keyed by (tokenizer, texts, max_length).
    ``tokenizer`` is a Hugging Face tokenizer or a plain function ``texts -> ids``.
    """
    fp = tokenizer_fingerprint(tokenizer) if not _is_plain_fn(tokenizer) else getattr(tokenizer, "__name__", "fn")
    key = f"{fp}-{text_hash(texts)}-{max_length}"
    if not texts:
        return []
    if key in _MEMORY:
        return _MEMORY[key]
    path = Path(cache_dir) / f"tokens-{key}.safetensors" if cache_dir else None
    if path is not None and path.is_file():
        t = load_file(str(path))
        flat, offsets = t["ids"].tolist(), t["offsets"].tolist()
        ids = [flat[a:b] for a, b in itertools.pairwise(offsets)]
    else:
        if _is_plain_fn(tokenizer):
            ids = [list(s[:max_length]) for s in tokenizer(list(texts))]
        else:
            ids = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
        if path is not None:
            lengths = torch.tensor([0] + [len(s) for s in ids]).cumsum(0)
            flat_t = torch.tensor([i for s in ids for i in s], dtype=torch.int64)
            atomic_write(path, lambda tmp: save_file({"ids": flat_t, "offsets": lengths}, tmp))
    _MEMORY[key] = ids
    return ids


def _is_plain_fn(tok: Any) -> bool:
    return callable(tok) and not hasattr(tok, "get_vocab")


def pad_batch(seqs: Sequence[Sequence[int]], pad_id: int = 0) -> TokenBatch:
    """Right-pad to the longest sequence of the batch (dynamic padding)."""
    length = max(1, max(len(s) for s in seqs))
    ids = torch.full((len(seqs), length), pad_id, dtype=torch.int64)
    mask = torch.zeros((len(seqs), length), dtype=torch.int64)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.int64)
        mask[i, : len(s)] = 1
    return TokenBatch(ids, mask)


def bucketed_order(lengths: Sequence[int], batch_size: int, generator: torch.Generator, pool: int = 50) -> list[Tensor]:
    """Batches of indices with similar lengths: shuffle, sort within pools of ``pool`` batches, shuffle batches."""
    perm = torch.randperm(len(lengths), generator=generator)
    lens = torch.tensor(lengths)
    batches: list[Tensor] = []
    step = batch_size * pool
    for start in range(0, len(perm), step):
        chunk = perm[start : start + step]
        chunk = chunk[torch.argsort(lens[chunk], stable=True)]
        batches.extend(chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size))
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


class TextDataModule:
    """Train/val/test texts tokenised once, yielding padded :class:`TextBatch` es with the DataModule interface.

    The validation split is carved from the training texts by group (movie) when groups are known, else by a
    seeded permutation. ``unlabeled=True`` adds ``data.unlabeled`` to the training batches with label ``-1``;
    ``augment`` (a :class:`~distill.text.augment.TransferAugment`) adds a transfer set made from the training texts
    (never from val or test), also with label ``-1``: the teacher labels it, the student learns from its soft targets.
    """

    def __init__(
        self,
        data: TextData,
        tokenizer: Any,
        batch_size: int = 32,
        max_length: int = 64,
        val_size: float = 0.1,
        seed: int = 0,
        eval_batch_size: int = 128,
        bucket: bool = True,
        unlabeled: bool = False,
        cache_dir: str | Path | None = None,
        pad_id: int | None = None,
        augment: Any = None,
    ) -> None:
        if batch_size < 1 or max_length < 2:
            raise DataError(f"batch_size must be >= 1 and max_length >= 2, got {batch_size} and {max_length}")
        n = len(data.train_texts)
        if val_size > 0:
            groups = data.train_groups or [str(i) for i in range(n)]
            train_idx, val_idx = group_split(groups, val_size, seed + 1)
        else:
            train_idx, val_idx = list(range(n)), []
        self.data, self.tokenizer = data, tokenizer
        self.batch_size, self.eval_batch_size, self.max_length = batch_size, eval_batch_size, max_length
        self.seed, self.bucket = seed, bucket
        self.rank, self.world_size = 0, 1
        self.pad_id = pad_id if pad_id is not None else (getattr(tokenizer, "pad_token_id", None) or 0)
        self.texts = {
            "train": [data.train_texts[i] for i in train_idx],
            "val": [data.train_texts[i] for i in val_idx],
            "test": list(data.test_texts),
        }
        self.labels = {"train": data.y_train[train_idx], "val": data.y_train[val_idx], "test": data.y_test}
        extra = list(data.unlabeled) if unlabeled else []
        if augment is not None:
            mask = getattr(tokenizer, "mask_token", None)
            if mask and mask != augment.mask_token:
                augment = dataclasses.replace(augment, mask_token=mask)
            extra += augment(self.texts["train"])
        if extra:
            self.texts["train"] += extra
            self.labels["train"] = torch.cat([self.labels["train"], torch.full((len(extra),), -1)])
        self.ids = {k: tokenize_cached(tokenizer, v, max_length, cache_dir) for k, v in self.texts.items()}

    @property
    def num_classes(self) -> int:
        return self.data.num_classes

    @property
    def input_shape(self) -> tuple[int]:
        return (self.max_length,)

    def steps_per_epoch(self) -> int:
        return max(1, -(-len(self.ids["train"]) // self.batch_size) // self.world_size)

    def shard(self, rank: int, world_size: int) -> TextDataModule:
        """Make this module yield rank ``rank``'s share of the batches of every epoch (DDP); returns ``self``."""
        if not 0 <= rank < world_size:
            raise DataError(f"rank {rank} is outside world_size {world_size}")
        self.rank, self.world_size = rank, world_size
        return self

    def train_batches(self, epoch: int, device: torch.device | str = "cpu", cache: Any = None) -> Iterator[TextBatch]:
        """Shuffled, length-bucketed batches; the order depends only on (seed, epoch).

        ``cache``: anything with ``logits_for(epoch, index)`` (a :class:`~distill.engine.cache.TeacherCache` built
        without augmentation) — its logits ride along as ``teacher_logits``.
        """
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        ids, y = self.ids["train"], self.labels["train"]
        if self.bucket:
            order = bucketed_order([len(s) for s in ids], self.batch_size, g)
        else:
            perm = torch.randperm(len(ids), generator=g)
            order = [perm[i : i + self.batch_size] for i in range(0, len(perm), self.batch_size)]
        if self.world_size > 1:  # every rank takes an equal number of whole batches
            per = len(order) // self.world_size
            order = order[self.rank : per * self.world_size : self.world_size]
        for idx in order:
            x = pad_batch([ids[i] for i in idx.tolist()], self.pad_id)
            t = cache.logits_for(epoch, idx).to(device) if cache is not None else None
            yield TextBatch(x.to(device), y[idx].to(device), idx, t)

    def eval_batches(
        self, split: str, device: torch.device | str = "cpu", by_length: bool = False
    ) -> Iterator[TextBatch]:
        """Batches of ``split`` in order (``index`` gives the positions); ``by_length``: shortest texts first, so
        each batch pads little (the caller puts the outputs back in place by ``index``)."""
        self.split(split)
        ids, y = self.ids[split], self.labels[split]
        order = torch.arange(len(ids))
        if by_length:
            order = torch.argsort(torch.tensor([len(s) for s in ids]), stable=True)
        for start in range(0, len(ids), self.eval_batch_size):
            idx = order[start : start + self.eval_batch_size]
            x = pad_batch([ids[i] for i in idx.tolist()], self.pad_id)
            yield TextBatch(x.to(device), y[idx].to(device), idx)

    def split(self, name: str) -> tuple[list[str], Tensor]:
        if name not in self.texts:
            raise DataError(f"unknown split {name!r}; expected one of {sorted(self.texts)}")
        return self.texts[name], self.labels[name]

    def mean_length(self, split: str = "test") -> float:
        """Mean number of tokens per text of ``split`` (the sequence length to time models at)."""
        ids = self.ids[split]
        return sum(len(s) for s in ids) / max(1, len(ids))

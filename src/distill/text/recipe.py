"""The text recipe (see ``configs/text.yaml``; its optimiser sections are :class:`~distill.settings.OptimSettings`,
read like an image recipe's ``train``): its sections, the teacher it names and what a run
reads, and the check of its students before anything trains (see :mod:`distill.text.pipeline`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from distill import config as C
from distill.errors import ConfigError
from distill.settings import OptimSettings
from distill.text.augment import TransferAugment
from distill.text.distillers import TEXT_DISTILLERS
from distill.text.models import (
    minilm_path,
)
from distill.trust import verify_model


@dataclass
class TextRecipe:
    """What ``configs/text.yaml`` holds (strict keys). ``train`` and ``teacher_train`` are the image recipes'
    optimiser section (:class:`~distill.settings.OptimSettings`); a mapping given for them (a recipe's section, or
    a Python caller's dict) is read and checked like an image recipe's ``train``."""

    seed: int = 0
    data: dict[str, Any] = field(default_factory=lambda: {"name": "rotten_tomatoes"})
    max_length: int = 64
    batch_size: int = 32
    teacher: dict[str, Any] = field(default_factory=lambda: {"model": "minilm"})
    teacher_train: OptimSettings = field(
        default_factory=lambda: OptimSettings(epochs=1, optimizer="adamw", lr=5e-5, weight_decay=0.01)
    )
    students: list[dict[str, Any]] = field(default_factory=list)
    train: OptimSettings = field(default_factory=lambda: OptimSettings(epochs=2, optimizer="adamw", lr=1e-4))
    task: str = "text"  # what tells `distill run/train/distill` that this is a text recipe
    cache_dir: str = "benchmarks/cache"
    threads: int | None = None
    transfer: dict[str, Any] = field(default_factory=dict)  # TransferAugment settings for students with transfer

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> TextRecipe:
        unknown = sorted(set(raw) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"unknown recipe key(s) {unknown}; expected {sorted(cls.__dataclass_fields__)}")
        return cls(**raw)

    def __post_init__(self) -> None:
        for name in ("train", "teacher_train"):
            value = getattr(self, name)
            if not isinstance(value, OptimSettings):
                setattr(self, name, C.from_dict(OptimSettings, value, name))


def optim_key(s: OptimSettings) -> dict[str, Any]:
    """The settings of ``s`` that differ from :class:`OptimSettings`' defaults, in field order: what a cached
    fine-tuned teacher is keyed by (the key a section naming just those settings, in that order, had as a plain
    mapping, so the caches of the shipped recipe and ``benchmarks/text.py`` stay valid)."""
    default = asdict(OptimSettings())
    return {k: v for k, v in asdict(s).items() if v != default[k]}


def student_optim(recipe: TextRecipe, i: int) -> OptimSettings:
    """The optimiser settings student ``i`` trains with: the recipe's ``train`` with the student's own changes."""
    s = recipe.students[i]
    try:
        return C.optim_with(recipe.train, s.get("train") or {}, f"students.{i}.train")
    except ConfigError as e:
        raise ConfigError(f"student {s.get('name', '?')!r}: bad train settings ({e})") from e


TEACHER_KEYS = ("model", "finetune", "checkpoint", "public_key", "patience")


def teacher_dir(spec: dict[str, Any]) -> Path:
    """The directory the tokenizer comes from: a saved distill teacher's ``tokenizer/``, or the HF model folder."""
    unknown = sorted(set(spec) - set(TEACHER_KEYS))
    if unknown:
        raise ConfigError(f"unknown teacher key(s) {unknown}; expected {list(TEACHER_KEYS)}")
    if spec.get("checkpoint"):
        return Path(spec["checkpoint"]) / "tokenizer"
    model = spec.get("model", "minilm")
    return minilm_path() if model == "minilm" else Path(model)


def verify_teacher(spec: dict[str, Any]) -> None:
    """Check the teacher settings before anything of the teacher is read: unknown keys, and, with ``public_key``
    and ``checkpoint``, the signature of the saved teacher's whole directory (``tokenizer/`` included).

    ``public_key`` without ``checkpoint`` checks nothing: the teacher is then fine-tuned (or loaded from a Hugging
    Face folder), as in an image recipe whose teacher is trained.
    """
    if not isinstance(spec, dict):
        raise ConfigError(f"teacher must be a mapping (model, finetune, checkpoint, public_key), got {spec!r}")
    teacher_dir(spec)  # refuses unknown keys
    patience = spec.get("patience")
    if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int) or patience < 1):
        raise ConfigError(
            f"teacher.patience must be an integer >= 1 (epochs without a better validation), got {patience!r}"
        )
    checkpoint, key = spec.get("checkpoint"), spec.get("public_key")
    for name, value in (("checkpoint", checkpoint), ("public_key", key)):
        if value is not None and not isinstance(value, str | Path):
            raise ConfigError(f"teacher.{name} must be a path, got {type(value).__name__} {value!r}")
    if checkpoint and key is not None:
        verify_model(Path(checkpoint), key)


def text_inputs(recipe: TextRecipe) -> list[tuple[str, str | Path | None]]:
    """What a text run reads (teacher, key, data files, cache): ``--overwrite`` must never delete them."""
    t, d = recipe.teacher, recipe.data
    model = t.get("model", "minilm")
    return [
        ("the teacher", t.get("checkpoint")),
        ("the public key", t.get("public_key")),
        ("the teacher model", model if isinstance(model, str) and model != "minilm" else None),
        *((f"the data file ({k})", d[k]) for k in ("path", "train", "test") if isinstance(d.get(k), str)),
        ("the cache", recipe.cache_dir),
    ]


def check_students(recipe: TextRecipe) -> tuple[list[str], TransferAugment | None]:
    """The students' names and the transfer-set settings (when a student asks for it); refuses a bad recipe."""
    for i, s in enumerate(recipe.students):
        unknown = sorted(set(s) - {"name", "student", "method", "params", "transfer", "train"})
        if unknown or not isinstance(s.get("student"), dict):
            raise ConfigError(
                f"a student needs 'student: {{model: ...}}' and takes name, method, params, transfer, train; "
                f"got {sorted(s)}"
            )
        student_optim(recipe, i)  # unknown or bad training settings fail here, not after the teacher's fine-tuning
        kind = s["student"].get("model")
        if kind not in ("layers", "cnn", "bilstm"):
            raise ConfigError(f"unknown text student {kind!r}; expected 'layers', 'cnn' or 'bilstm'")
        TEXT_DISTILLERS.get(s.get("method", "text_kd"))  # an unknown method lists the known ones
    names = [s.get("name", s.get("method", "text_kd")) for s in recipe.students]
    if len(set(names)) != len(names):
        raise ConfigError(f"student names must be unique, got {names}")
    if not any(s.get("transfer") for s in recipe.students):
        return names, None
    return names, TransferAugment.from_dict({"seed": recipe.seed, **recipe.transfer})

"""Recipes: a typed schema of dataclasses, read from YAML with ``safe_load``, strict keys, dotted overrides.

Only :mod:`distill.api` sees these objects; it turns them into keyword arguments for the library.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from distill.engine.cache import CacheSettings
from distill.engine.trainer import OptimSettings
from distill.errors import ConfigError


@dataclass
class DataConfig:
    name: str = "fashion_mnist"
    root: str | None = None  # a directory with the data; default: the dataset's usual places
    download: bool = False  # let torchvision download it when it is not found (needs internet)
    val_size: float = 0.1  # a fraction (< 1) or a count of training samples held out for validation
    batch_size: int = 128
    eval_batch_size: int = 1024
    augment: bool = True
    train_subset: int | None = None  # use only this many (seeded) training samples
    test_subset: int | None = None
    options: dict[str, Any] = field(default_factory=dict)  # source-specific arguments, e.g. {target: price} for csv


@dataclass
class ModelConfig:
    model: str = "cnn"
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class TeacherConfig(ModelConfig):
    checkpoint: str | None = None  # a model directory (model.json + model.safetensors) to load instead of training
    public_key: str | None = None  # when set, the checkpoint must carry a valid signature by this ed25519 key
    ensemble: list[str] = field(default_factory=list)  # several saved teachers (model directories) distilled at once
    train: OptimSettings = field(default_factory=OptimSettings)


@dataclass
class StudentConfig(ModelConfig):
    # Start from the teacher's weights: false | true (= match) | match | every_kth | important_channels
    # (see distill.models.transfer).
    init_from_teacher: bool | str = False

    def __post_init__(self) -> None:
        modes = ("none", "match", "every_kth", "important_channels")
        if not isinstance(self.init_from_teacher, bool) and self.init_from_teacher not in modes:
            raise ConfigError(f"init_from_teacher must be true, false or one of {list(modes)}, got "
                              f"{self.init_from_teacher!r}")  # fmt: skip


@dataclass
class FlowConfig:
    """Train -> validation fine-tune -> test: after distilling on the training split, fine-tune every student on
    the validation split; the test split is only evaluated. The report gives each stage's accuracy."""

    finetune_on_val: bool = False
    finetune_epochs: int = 2
    finetune_lr: float = 0.005
    finetune_method: str = "scratch"  # cross-entropy on the labels; or a method (e.g. kd) to keep the teacher's signal
    finetune_params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.finetune_epochs < 1:
            raise ConfigError(f"finetune_epochs must be >= 1, got {self.finetune_epochs}")
        if not self.finetune_lr > 0:
            raise ConfigError(f"finetune_lr must be > 0, got {self.finetune_lr}")


@dataclass
class MethodConfig:
    name: str = "kd"
    params: dict[str, Any] = field(default_factory=dict)
    label: str | None = None  # display name (default: the method name); must be unique in a recipe


@dataclass
class BenchConfig:
    latency: bool = True
    batch_sizes: list[int] = field(default_factory=lambda: [1, 256])
    repeats: int = 20
    threads: int | None = None  # torch threads while timing (default: torch's own)


@dataclass
class TrackingConfig:
    tensorboard: bool = True  # per-epoch scalars under <model dir>/tb/
    mlflow: bool | str | None = None  # null: off; true: sqlite:///<run>/mlflow.db; or an MLflow tracking URI


@dataclass
class Config:
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: str | None = None  # null | bf16 | fp16 (CUDA only)
    channels_last: bool = False
    teacher_channels_last: bool | None = None  # null: the same as channels_last
    compile: bool = False  # torch.compile the student (pays a compile time up front)
    cache: CacheSettings = field(default_factory=CacheSettings)  # teacher-output cache: off | views | fixed
    select: str = "last"  # which student weights to keep: the last epoch or the best validation epoch
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    train: OptimSettings = field(default_factory=OptimSettings)
    methods: list[MethodConfig] = field(default_factory=lambda: [MethodConfig("scratch"), MethodConfig("kd")])
    bench: BenchConfig = field(default_factory=BenchConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    flow: FlowConfig = field(default_factory=FlowConfig)

    def __post_init__(self) -> None:
        if self.select not in ("last", "best"):
            raise ConfigError(f"select must be 'last' or 'best', got {self.select!r}")
        labels = [m.label or m.name for m in self.methods]
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            raise ConfigError(f"methods {dup} appear twice; give each a distinct 'label'")
        if self.data.val_size < 0:
            raise ConfigError(f"data.val_size must be >= 0, got {self.data.val_size}")
        if self.data.batch_size < 1:
            raise ConfigError(f"data.batch_size must be >= 1, got {self.data.batch_size}")
        if self.cache.mode == "fixed" and self.data.augment:
            raise ConfigError(
                "cache.mode=fixed caches one teacher output per sample, which with random augmentation would pair "
                "the student's view with the teacher's output on another image; use cache.mode=views (replays the "
                "recorded views) or set data.augment=false"
            )


def from_dict(cls: type, raw: Any, path: str = "") -> Any:
    """Build dataclass ``cls`` from ``raw``, refusing unknown keys (naming the nearest) and wrong types."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{path or 'the recipe'} must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in raw.items():
        where = f"{path}.{key}" if path else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=2, cutoff=0.5)
            hint = (
                f" Did you mean {' or '.join(repr((f'{path}.' if path else '') + c) for c in close)}?" if close else ""
            )
            raise ConfigError(f"unknown key {where!r}.{hint} Valid keys here: {', '.join(names)}")
        kwargs[key] = _coerce(hints[key], value, where)
    try:
        return cls(**kwargs)
    except ConfigError as e:  # a range check in __post_init__: say where
        raise ConfigError(f"{path}: {e}" if path else str(e)) from None
    except TypeError as e:  # a dataclass with required fields
        raise ConfigError(f"{path or 'recipe'}: {e}") from e


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin in (list, tuple, typing.get_origin(typing.Sequence[int])) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        (item,) = typing.get_args(tp) or (Any,)
        return [_coerce(item, v, f"{where}.{i}") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {tp}")


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=0.1"`` -> (["train", "lr"], 0.1); the value is read as YAML (``[1, 2]``, ``null``, ``true``)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.path=value")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"override {text!r} has no key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({e})") from e
    return key.strip().split("."), value


def apply_override(raw: dict, keys: list[str], value: Any) -> None:
    node: Any = raw
    for i, k in enumerate(keys[:-1]):
        if isinstance(node, list):
            node = _list_item(node, k, keys[: i + 1])
        else:
            node = node.setdefault(k, {})
            if not isinstance(node, (dict, list)):
                raise ConfigError(f"cannot set {'.'.join(keys)}: {'.'.join(keys[: i + 1])} is not a mapping")
    last = keys[-1]
    if isinstance(node, list):
        idx = int(last) if last.isdigit() else None
        if idx is None or idx >= len(node):
            raise ConfigError(f"cannot set {'.'.join(keys)}: index {last} is out of range (the list has {len(node)})")
        node[idx] = value
    else:
        node[last] = value


def _list_item(node: list, k: str, keys: list[str]) -> Any:
    if not k.isdigit() or int(k) >= len(node):
        raise ConfigError(f"{'.'.join(keys)}: expected a list index below {len(node)}")
    return node[int(k)]


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe {path} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"recipe {path} is not valid YAML{where}: {getattr(e, 'problem', e)}") from e
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"recipe {path} must be a YAML mapping at the top level, got {type(raw).__name__}")
    return raw


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a recipe (or the defaults when ``path`` is None) and apply ``key.path=value`` overrides."""
    raw = read_yaml(path) if path else {}
    for text in overrides:
        apply_override(raw, *parse_override(text))
    return from_dict(Config, raw)


def to_dict(cfg: Any) -> Any:
    return dataclasses.asdict(cfg)


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)

"""Recipes: a typed schema of dataclasses, read from YAML with ``safe_load``, strict keys, dotted overrides.

The workflow (:mod:`distill.api`, and compress's own recipe) turns these objects into keyword arguments for the
library; the one other reader is :func:`distill.data.module.load_datamodule` (the ``data`` section). A low layer:
it imports only :mod:`distill.settings` and the errors, so the data and method registries can check values with it.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from distill.errors import ConfigError
from distill.settings import CacheSettings, OptimSettings

MAX_SEED = 2**32 - 1  # numpy's seed range
MAX_THREADS = 4096
FLOAT32_MAX = 3.4028234663852886e38  # what training computes in


def _require(name: str, value: Any, ok: bool, expected: str) -> None:
    """Refuse ``value`` of setting ``name`` unless ``ok``; a float must also be finite (NaN passes no comparison
    check, and inf passes ``> 0``)."""
    if not ok or (isinstance(value, float) and not math.isfinite(value)):
        raise ConfigError(f"{name} must be {expected}, got {_show(value)}")


def _show(value: Any, limit: int = 60) -> str:
    """``repr`` of a user value, shortened: a 400-digit number or a long string must not flood the error line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass
class DataConfig:
    name: str = "fashion_mnist"
    root: str | None = None  # a directory with the data; default: the dataset's usual places
    download: bool = False  # let torchvision download it when it is not found (needs internet)
    # A fraction (< 1) or a whole count of training samples held out for validation. 0: no validation split; the
    # per-epoch metrics are then taken on the test split, so select: best and flow.finetune_on_val refuse it.
    val_size: float = 0.1
    # The seed of the train/validation split (default: the run's seed). Fix it to a loaded teacher's seed so that
    # runs with other seeds do not validate on images the teacher was trained on.
    split_seed: int | None = None
    batch_size: int = 128
    eval_batch_size: int = 1024
    augment: bool = True
    train_subset: int | None = None  # use only this many (seeded) training samples; more than there are: all
    test_subset: int | None = None
    # Only this fraction of the training images keeps its label (the same fraction of every class, drawn with the
    # seed); the rest is a transfer set that methods with a teacher learn from by its outputs alone. Methods without
    # a teacher (scratch) train on the labelled images only.
    labeled_fraction: float = 1.0
    options: dict[str, Any] = field(default_factory=dict)  # source-specific arguments, e.g. {target: price} for csv

    def __post_init__(self) -> None:
        if clash := sorted(set(self.options) & {"root", "download"}):  # they are settings of their own
            raise ConfigError(f"options.{clash[0]}: set data.{clash[0]} instead (it is not a source option)")
        v = self.val_size
        _require("val_size", v, v >= 0 and (v < 1 or float(v).is_integer()), "a fraction in [0, 1) or a whole count")
        _require("batch_size", self.batch_size, self.batch_size >= 1, ">= 1")
        _require("eval_batch_size", self.eval_batch_size, self.eval_batch_size >= 1, ">= 1")
        ss = self.split_seed
        _require("split_seed", ss, ss is None or 0 <= ss <= MAX_SEED, f"null (the run's seed) or 0 to {MAX_SEED}")
        f = self.labeled_fraction
        _require("labeled_fraction", f, 0 < f <= 1, "a fraction in (0, 1] of the training images that keep their label")
        for name in ("train_subset", "test_subset"):
            n = getattr(self, name)
            _require(name, n, n is None or n >= 1, "null (the whole split) or a count >= 1")


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
        _require("finetune_epochs", self.finetune_epochs, self.finetune_epochs >= 1, ">= 1")
        _require("finetune_lr", self.finetune_lr, self.finetune_lr > 0, "> 0")


@dataclass
class MethodConfig:
    name: str = "kd"
    params: dict[str, Any] = field(default_factory=dict)
    label: str | None = None  # display name (default: the method name); must be unique in a recipe
    # This method's changes to the recipe's `train` settings, e.g. {epochs: 200} for scratch on a few labelled
    # images, which needs more epochs than students that see every image
    train: dict[str, Any] = field(default_factory=dict)


@dataclass
class BenchConfig:
    latency: bool = True
    batch_sizes: list[int] = field(default_factory=lambda: [1, 256])
    repeats: int = 20
    threads: int | None = None  # torch threads while timing (default: torch's own)

    def __post_init__(self) -> None:
        for i, bs in enumerate(self.batch_sizes):
            _require(f"batch_sizes.{i}", bs, bs >= 1, ">= 1")
        _require("repeats", self.repeats, self.repeats >= 1, ">= 1")
        _require("threads", self.threads, self.threads is None or 1 <= self.threads <= MAX_THREADS,
                 f"null (torch's default) or from 1 to {MAX_THREADS}")  # fmt: skip


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
        _require("seed", self.seed, 0 <= self.seed <= MAX_SEED, f"an integer from 0 to {MAX_SEED}")
        if self.select not in ("last", "best"):
            raise ConfigError(f"select must be 'last' or 'best', got {self.select!r}")
        for i, m in enumerate(self.methods):
            method_optim(self, m, f"methods.{i}.train")  # refuse a bad override now, not after the teacher
        labels = [m.label or m.name for m in self.methods]
        dup = sorted({x for x in labels if labels.count(x) > 1})
        if dup:
            raise ConfigError(f"methods {dup} appear twice; give each a distinct 'label'")
        needs_val = [what for what, on in (("select=best", self.select == "best"),
                                           ("flow.finetune_on_val", self.flow.finetune_on_val)) if on]  # fmt: skip
        if needs_val and self.data.val_size == 0:
            raise ConfigError(
                f"{' and '.join(needs_val)} {'needs' if len(needs_val) == 1 else 'need'} a validation split, but "
                "data.val_size=0 holds none out; set data.val_size to a fraction (e.g. 0.1) or a count of training "
                "samples"
            )
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
    """``value`` checked against annotation ``tp`` (ints are accepted for floats, which must be finite)."""
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
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {_show(value)}")
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin in (list, tuple, typing.get_origin(typing.Sequence[int])) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a list, got {_show(value)}")
        args = typing.get_args(tp)
        item = args[0] if args else Any  # tuple[int, ...] and Sequence[int] alike
        return [_coerce(item, v, f"{where}.{i}") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a mapping, got {_show(value)}")
        key_tp, value_tp = typing.get_args(tp) or (Any, Any)
        out = {}
        for k, v in value.items():
            if key_tp is str and not isinstance(k, str):
                raise ConfigError(f"{where}: keys must be names (strings), got {_show(k)}")
            out[k] = _coerce(value_tp, v, f"{where}.{k}")
        return out
    if tp is Any:
        _check_finite(value, where)
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {_show(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {_show(value)}")
        _check_finite(value, where, number=True)
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {_show(value)}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {_show(value)}")
        return value
    raise _Unsupported(f"{where}: unsupported type {tp}")


class _Unsupported(ConfigError):
    """An annotation the recipe checker does not know (a schema bug in a dataclass; skipped by check_value)."""


def _check_finite(value: Any, where: str, number: bool = False) -> None:
    """Refuse NaN and infinity (YAML's ``.nan``/``.inf``, or ``1.0e+999``) anywhere in ``value``: no setting means
    "unbounded" by infinity, and NaN passes every range check. Training computes in float32, so a float (or, where
    a ``number`` is expected, an int) beyond float32's range is infinite there and refused too."""
    if isinstance(value, dict):
        for k, v in value.items():
            _check_finite(v, f"{where}.{k}", number)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_finite(v, f"{where}.{i}", number)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            finite = math.isfinite(value)
        except OverflowError:  # an int beyond any float
            finite = False
        if not finite:
            raise ConfigError(f"{where} must be a finite number, got {_show(value)}")
        if (number or isinstance(value, float)) and abs(value) > FLOAT32_MAX:
            raise ConfigError(f"{where} must be a number within ±{FLOAT32_MAX:.3g} (float32), got {_show(value)}")


def check_value(annotation: Any, value: Any, where: str) -> None:
    """Check a keyword argument against its annotation (a type, or a string from ``from __future__ import
    annotations``) the way recipe values are checked; an annotation naming other types checks finiteness only.

    For the ``**kwargs``-like parts of a recipe (method params, data options): their functions' signatures are the
    schema.
    """
    if isinstance(annotation, str):
        try:
            annotation = eval(annotation, {"__builtins__": {}}, _ANNOTATION_NAMES)  # our own annotations, names only
        except Exception:  # a type we do not check (nn.Module, Path ...)
            annotation = Any
    if annotation is inspect.Parameter.empty:
        annotation = Any
    try:
        _coerce(annotation, value, where)
    except _Unsupported:
        _check_finite(value, where)


_ANNOTATION_NAMES = {
    "int": int,
    "float": float,
    "bool": bool,
    "str": str,
    "None": None,
    "list": list,
    "tuple": tuple,
    "dict": dict,
    "Any": Any,
    "Sequence": typing.Sequence,
}


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.lr=0.1"`` -> (["train", "lr"], 0.1); the value is read as YAML (``[1, 2]``, ``null``, ``true``)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key.path=value")
    key, raw = text.split("=", 1)
    if not key.strip():
        raise ConfigError(f"override {text!r} has no key")
    try:
        value = yaml_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: the value is not valid YAML ({_yaml_problem(e)})") from e
    return key.strip().split("."), value


def apply_override(raw: dict, keys: list[str], value: Any) -> None:
    node: Any = raw
    for i, k in enumerate(keys[:-1]):
        node = _list_item(node, k, keys[: i + 1]) if isinstance(node, list) else node.setdefault(k, {})
        if not isinstance(node, (dict, list)):
            raise ConfigError(
                f"cannot set {'.'.join(keys)}: {'.'.join(keys[: i + 1])} is {_show(node)}, not a mapping or a list"
            )
    last = keys[-1]
    if isinstance(node, list):
        if not last.isdigit():
            where = ".".join(keys[:-1]) or "the recipe"
            raise ConfigError(f"cannot set {'.'.join(keys)}: {where} is a list; name an item by its number (0, 1 ...)")
        if int(last) >= len(node):
            raise ConfigError(f"cannot set {'.'.join(keys)}: index {last} is out of range (the list has {len(node)})")
        node[int(last)] = value
    else:
        node[last] = value


def _list_item(node: list, k: str, keys: list[str]) -> Any:
    if not k.isdigit() or int(k) >= len(node):
        raise ConfigError(f"{'.'.join(keys)}: expected a list index below {len(node)}")
    return node[int(k)]


class RecipeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` (no tags, no objects) that also refuses a key given twice in one mapping, which plain
    YAML loading resolves silently in favour of the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, yaml.Mark] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may repeat keys on purpose
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the base class says so
                continue
            if first is not None:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {_show(key)} appears twice (first at line {first.line + 1}); keep one",
                    key_node.start_mark,
                )  # fmt: skip
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep)


def yaml_load(text: str) -> Any:
    """``yaml.safe_load`` that refuses duplicate keys (see :class:`RecipeLoader`)."""
    return yaml.load(text, Loader=RecipeLoader)  # a SafeLoader subclass: safe_load plus one check


def _yaml_problem(e: yaml.YAMLError) -> str:
    """A YAML error's problem on one line (``str(e)`` spans several, with the file and a caret)."""
    return " ".join(str(getattr(e, "problem", None) or e).split())


def read_yaml(path: str | Path) -> dict:
    """Read a recipe file: a UTF-8 YAML mapping without tags or duplicate keys."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe {path} does not exist")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(
            f"recipe {path} is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); save it as UTF-8"
        ) from e
    except OSError as e:
        raise ConfigError(f"cannot read recipe {path}: {e.strerror or e}") from e
    try:
        raw = yaml_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"recipe {path} is not valid YAML{where}: {_yaml_problem(e)}") from e
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


def method_optim(cfg: Config, m: MethodConfig, where: str = "train") -> OptimSettings:
    """The optimiser settings method ``m`` trains with: the recipe's ``train`` with the method's own changes."""
    if not m.train:
        return cfg.train
    return from_dict(OptimSettings, {**dataclasses.asdict(cfg.train), **m.train}, where)

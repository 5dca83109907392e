"""The recipe schema: one dataclass per section, each checking its own values (part of :mod:`distill.config`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from distill.config.typed import MAX_SEED, MAX_THREADS, _require, from_dict
from distill.errors import ConfigError
from distill.settings import CacheSettings, OptimSettings, check_mlflow


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

    def __post_init__(self) -> None:
        check_mlflow(self.mlflow, "mlflow")  # a bad URI now, not as a traceback from MLflow after the teacher


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


def optim_with(base: OptimSettings, changes: dict[str, Any], where: str = "train") -> OptimSettings:
    """``base`` with some of its settings changed (a method's or a text student's own ``train``), checked like a
    recipe's ``train`` section: the one place a partial optimiser section becomes :class:`OptimSettings`."""
    if not isinstance(changes, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(changes).__name__}")
    if not changes:
        return base
    return from_dict(OptimSettings, {**dataclasses.asdict(base), **changes}, where)


def method_optim(cfg: Config, m: MethodConfig, where: str = "train") -> OptimSettings:
    """The optimiser settings method ``m`` trains with: the recipe's ``train`` with the method's own changes."""
    return optim_with(cfg.train, m.train, where)

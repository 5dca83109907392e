"""``distill compress``: input model → prune → distil to recover → int8 → ONNX, measuring every stage.

Every stage is optional. Each writes a model directory under the output directory (``pruned/``, ``recovered/``,
``quantized/``, ``export/``) and one row of ``report.json`` / ``report.md``: test accuracy (and its drop from the
input, in points), parameters, size on disk, CPU latency at the bench batch sizes and the speed-up over the input.
The recovery stage distils the pruned model from the unpruned input (any registered method), so the teacher is
the model being compressed unless ``recover.teacher`` names another model directory.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from distill import config as C
from distill.artifacts import versions, write_json, write_manifest
from distill.compress import export as E
from distill.compress import prune as P
from distill.compress import quantize as Q
from distill.data.module import load_datamodule
from distill.distillers.base import build_distiller
from distill.engine.callbacks import MetricsLogger, ProgressBar
from distill.engine.setup import resolve_device, seed_everything
from distill.engine.trainer import OptimSettings, Trainer
from distill.errors import CheckpointError, ConfigError
from distill.models.preprocess import differs
from distill.report.bench import count_params, latency_ms, size_on_disk
from distill.report.markdown import format_cell as _fmt
from distill.report.metrics import classification_metrics, predict
from distill.trust import verify_model
from distill.workflow import rundir


@dataclass
class PruneStage:
    enabled: bool = True
    kind: str = "structured"  # structured (channels; smaller, faster) | unstructured (zeroed weights)
    ratio: float = 0.5  # fraction of channels (structured) or weights (unstructured) to remove, in [0, 1)
    importance: str = "l1"  # structured: l1 | l2 | taylor | random
    scope: str = "layer"  # layer | global: rank channels/weights within each layer or across all of them
    steps: int = 1  # reach ratio in this many steps (with recovery epochs between them when recover is on)
    schedule: str = "linear"  # unstructured: linear | cubic
    ignore: list[str] = field(default_factory=list)  # extra layers to keep whole (the classifier always is)
    target_params: int | None = None  # structured: prune until at most this many parameters ...
    target_latency_ms: float | None = None  # ... or this CPU latency at latency_batch (instead of ratio)
    latency_batch: int = 1
    max_ratio: float = 0.9
    taylor_batches: int = 4


@dataclass
class RecoverStage:
    enabled: bool = True
    method: str = "kd"
    params: dict[str, Any] = field(default_factory=lambda: {"alpha": 0.9, "temperature": 4.0})
    teacher: str | None = None  # a model directory; default: the input (unpruned) model
    train: OptimSettings = field(default_factory=lambda: OptimSettings(epochs=5, lr=0.01))


@dataclass
class QuantizeStage:
    enabled: bool = True
    mode: str = "static"  # static (convnets) | dynamic (Linear layers) | qat (distillation with fake quantization)
    backend: str = "x86"
    calibration_images: int = 1024  # training images (un-augmented) that calibrate static quantization
    train: OptimSettings = field(default_factory=lambda: OptimSettings(epochs=1, lr=1e-3, weight_decay=0.0))


@dataclass
class ExportStage:
    enabled: bool = True
    exporter: str = "dynamo"  # dynamo | torchscript
    opset: int | None = None
    atol: float = 1e-4  # max |onnxruntime - PyTorch| on real test inputs
    int8: bool = True  # also write an onnxruntime-quantized int8 model


@dataclass
class CompressConfig:
    seed: int = 0
    device: str = "auto"
    data: C.DataConfig = field(default_factory=C.DataConfig)
    bench: C.BenchConfig = field(default_factory=C.BenchConfig)
    prune: PruneStage = field(default_factory=PruneStage)
    recover: RecoverStage = field(default_factory=RecoverStage)
    quantize: QuantizeStage = field(default_factory=QuantizeStage)
    export: ExportStage = field(default_factory=ExportStage)


def load_recipe(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> CompressConfig:
    """A compress recipe (strict keys, ``key.path=value`` overrides); the defaults when ``path`` is None."""
    raw = C.read_yaml(path) if path else {}
    for text in overrides:
        C.apply_override(raw, *C.parse_override(text))
    return C.from_dict(CompressConfig, raw)


def load_input(directory: str | Path, public_key: str | Path | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """A float image model directory (plain or pruned), checked before anything is built.

    Refuses a missing directory, a text model, an already quantized model and, with ``public_key``, a directory
    without a valid signature by that key (see :mod:`distill.trust`; checked before ``model.json`` is read).
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"model directory {directory} does not exist")
    if public_key is not None:
        verify_model(directory, public_key)
    spec = P.read_spec(directory)
    task = spec.get("task", "image")
    if task != "image":
        raise CheckpointError(
            f"{directory} is a {task} model (model.json task: {task!r}); distill compress works on image models only"
        )
    if "quantization" in spec:
        raise CheckpointError(f"{directory} is already quantized; compress its float model instead")
    return P.load_pruned(directory)


def check_settings(cfg: CompressConfig) -> None:
    """Refuse bad settings before anything is loaded: ratios, kinds, modes, exporters, backends."""
    p = cfg.prune
    if p.enabled:
        if p.kind not in ("structured", "unstructured"):
            raise ConfigError(f"prune.kind must be 'structured' or 'unstructured', got {p.kind!r}")
        P.check_ratio("prune.ratio", p.ratio)
        P.check_ratio("prune.max_ratio", p.max_ratio)
        if p.scope not in ("layer", "global"):
            raise ConfigError(f"prune.scope must be 'layer' or 'global', got {p.scope!r}")
        if p.importance not in P.IMPORTANCES:
            raise ConfigError(f"unknown prune.importance {p.importance!r}; expected one of {list(P.IMPORTANCES)}")
        P.sparsity_schedule(p.ratio, p.steps, p.schedule)
        if p.kind == "structured":
            P.require_torch_pruning()
    Q.check_mode(cfg.quantize.mode)
    if cfg.quantize.enabled:
        Q.set_backend(cfg.quantize.backend)
        if cfg.quantize.calibration_images < 1:
            raise ConfigError(f"quantize.calibration_images must be >= 1, got {cfg.quantize.calibration_images}")
    if cfg.export.enabled:
        if cfg.export.exporter not in E.EXPORTERS:
            raise ConfigError(f"unknown export.exporter {cfg.export.exporter!r}; expected one of {list(E.EXPORTERS)}")
        E._require("onnxruntime")
        E._require("onnx")
    if any(b < 1 for b in cfg.bench.batch_sizes):
        raise ConfigError(f"bench.batch_sizes must be >= 1, got {cfg.bench.batch_sizes}")


def check_model(cfg: CompressConfig, model: nn.Module, input_shape: tuple[int, ...], num_classes: int) -> None:
    """Refuse what only the model can tell: unknown layers to ignore, the recovery method's parameters."""
    if cfg.prune.enabled:
        P.resolve_layers(model, cfg.prune.ignore)
    if cfg.recover.enabled:
        probe = copy.deepcopy(model)
        build_distiller(
            cfg.recover.method, probe, copy.deepcopy(model), input_shape, 1, num_classes, **cfg.recover.params
        ).close()


def compress(
    model_dir: str | Path,
    recipe: str | Path | CompressConfig | None = None,
    out: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    overwrite: bool = False,
    public_key: str | Path | None = None,
) -> dict[str, Any]:
    """Run the enabled stages on the model in ``model_dir``; returns the report (also written to ``out``).

    With ``public_key``, the input model and ``recover.teacher`` must carry a valid signature by that key.
    """
    cfg = recipe if isinstance(recipe, CompressConfig) else load_recipe(recipe, overrides)
    inputs = _inputs(model_dir, recipe, cfg, public_key)
    if out is not None:
        _prepare_out(Path(out), overwrite, inputs, check_only=True)  # refuses now, before minutes of loading
    t_start = time.perf_counter()
    check_settings(cfg)
    model, spec = load_input(model_dir, public_key)
    other_teacher = load_input(cfg.recover.teacher, public_key)[0] if cfg.recover.teacher else None
    shape = spec.get("preprocessing", {}).get("input_shape") or [spec["in_channels"], 28, 28]
    check_model(cfg, model, tuple(shape), spec["num_classes"])
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)
    data, dm = load_datamodule(cfg.data, cfg.seed)
    if spec["num_classes"] != data.num_classes or spec["in_channels"] != data.in_channels:
        raise CheckpointError(
            f"{model_dir} was made for {spec['num_classes']} classes x {spec['in_channels']} channels, but "
            f"{data.name} has {data.num_classes} classes x {data.in_channels} channels"
        )
    _name_preprocessing(model_dir, spec, data)
    out = Path(out) if out else Path("runs") / f"compress-{time.strftime('%Y%m%d-%H%M%S')}"
    _prepare_out(out, overwrite, inputs)
    (out / "recipe.yaml").write_text(_dump(cfg))

    run = _Run(cfg, dm, data, device, out)
    teacher = other_teacher if other_teacher is not None else copy.deepcopy(model)
    run.teacher_logits = run.test_logits(model)
    run.add("input", model, Path(model_dir) / "model.safetensors", source=str(model_dir))
    current, cur_spec = copy.deepcopy(model).requires_grad_(True), spec

    if cfg.prune.enabled:
        current, cur_spec, info = run.prune(current, spec, teacher)
        run.add("pruned", current, P.save_pruned(out / "pruned", current, cur_spec), **info)
        cur_spec = P.read_spec(out / "pruned")
    if cfg.recover.enabled:
        info = run.recover(current, teacher, cfg.recover.train, out / "recovered", "recover")
        P.make_permanent(current)
        run.add("recovered", current, P.save_pruned(out / "recovered", current, cur_spec), **info)
        cur_spec = P.read_spec(out / "recovered")
    current = current.cpu().eval()
    if cfg.quantize.enabled:
        run.quantize(current, teacher, cur_spec)
    if cfg.export.enabled:
        run.export(current)

    report = run.report(time.perf_counter() - t_start, spec)
    write_json(out / "report.json", report)
    (out / "report.md").write_text(markdown(report))
    write_manifest(out, {"config": C.to_dict(cfg), "metrics": {r["stage"]: r["accuracy"] for r in report["stages"]}})
    report["out"] = str(out)
    return report


def _name_preprocessing(model_dir: str | Path, spec: dict[str, Any], data: Any) -> None:
    """Say (one line on stderr) when the model's recorded preprocessing is not the data's: compress feeds it the
    data's batches as they are, unlike a loaded teacher (see :mod:`distill.models.preprocess`)."""
    import sys

    note = differs(spec, data)
    if note:
        detail = note.split(": its input is ", 1)[-1].split(" (from its", 1)[0]
        print(f"compress: {model_dir} was made for other inputs than {data.name}'s and is fed them as they are "
              f"(loaded as a teacher, its input would be {detail})", file=sys.stderr)  # fmt: skip


def _inputs(
    model_dir: str | Path, recipe: Any, cfg: CompressConfig, public_key: str | Path | None
) -> list[tuple[str, str | Path | None]]:
    """What a compress run reads: ``--overwrite`` must never delete them."""
    return [
        ("the input model", model_dir),
        ("the recipe", recipe if isinstance(recipe, (str, Path)) else None),
        ("the recovery teacher", cfg.recover.teacher),
        ("the data root", cfg.data.root),
        ("the public key", public_key),
    ]


def _prepare_out(
    out: Path, overwrite: bool, inputs: list[tuple[str, str | Path | None]] | None = None, check_only: bool = False
) -> None:
    """Create (or, with ``overwrite``, replace) the output directory; see :mod:`distill.workflow.rundir`."""
    step = rundir.check if check_only else rundir.prepare
    step(out, kind="compress", overwrite=overwrite, inputs=inputs or ())


def _dump(cfg: CompressConfig) -> str:
    import yaml

    return yaml.safe_dump(C.to_dict(cfg), sort_keys=False)


class _Run:
    """The state shared by the stages of one compress run: data, device, output directory, report rows."""

    def __init__(self, cfg: CompressConfig, dm: Any, data: Any, device: torch.device, out: Path) -> None:
        self.cfg, self.dm, self.data, self.device, self.out = cfg, dm, data, device, out
        self.input_shape = tuple(dm.input_shape)
        self.rows: list[dict[str, Any]] = []
        self.teacher_logits: Tensor | None = None

    # -- measurement ---------------------------------------------------------------------------------------------
    def test_logits(self, model: nn.Module) -> Tensor:
        dev = self.device if not _is_int8(model) else torch.device("cpu")
        logits, self.y_test = predict(model.to(dev), self.dm.eval_batches("test", dev), dev)
        model.cpu()
        return logits

    def add(
        self, stage: str, model: nn.Module, weights: Path | None, logits: Tensor | None = None, **extra: Any
    ) -> None:
        logits = self.test_logits(model) if logits is None else logits
        m = classification_metrics(logits, self.y_test, self.teacher_logits)
        row: dict[str, Any] = {"stage": stage, "runtime": extra.pop("runtime", "torch"), "accuracy": m["acc"]}
        row["agreement"] = m.get("agreement")
        row["params"] = extra.pop("params", None) or count_params(model)
        if not _is_int8(model):  # unstructured pruning shows here, not in params
            row["zero_params"] = sum(int((p == 0).sum()) for p in model.parameters())
        row["size_bytes"] = extra.pop("size_bytes", None) or (size_on_disk(weights) if weights else None)
        b = self.cfg.bench
        for bs in b.batch_sizes if b.latency and model is not None else ():
            row[f"latency_ms_b{bs}"] = latency_ms(model, self.input_shape, bs, repeats=b.repeats, threads=b.threads)
        if weights is not None:
            row["dir"] = str(Path(weights).parent)
        row.update(extra)
        self.rows.append(row)

    def calibration(self) -> list[Tensor]:
        n, bs, xs = self.cfg.quantize.calibration_images, self.cfg.data.batch_size, []
        for batch in self.dm.eval_batches("train", "cpu"):
            xs.extend(batch.x.split(bs))
            if sum(len(x) for x in xs) >= n:
                break
        kept, total = [], 0
        for x in xs:
            kept.append(x[: n - total])
            total += len(kept[-1])
            if total >= n:
                break
        return kept

    # -- stages --------------------------------------------------------------------------------------------------
    def prune(self, model: nn.Module, spec: dict, teacher: nn.Module) -> tuple[nn.Module, dict, dict[str, Any]]:
        p, rc = self.cfg.prune, self.cfg.recover
        between = None
        if rc.enabled and p.steps > 1 and p.target_params is None and p.target_latency_ms is None:
            # iterative pruning: fine-tune between steps; the last step's recovery is the recover stage
            def between(k: int) -> None:
                if k < p.steps - 1:
                    self.recover(model, teacher, rc.train, None, f"recover step {k + 1}")

        model.to(self.device)
        if p.kind == "unstructured":
            info = P.unstructured_prune(
                model, p.ratio, scope=p.scope, steps=p.steps, schedule=p.schedule, ignore=p.ignore,
                between=between, permanent=not rc.enabled,
            )  # fmt: skip
        else:
            x = next(iter(self.dm.eval_batches("train", self.device))).x
            grads = [(b.x, b.y) for b in itertools.islice(self.dm.train_batches(0, self.device), p.taylor_batches)]
            info = P.structured_prune(
                model, x[: self.cfg.data.batch_size], ratio=p.ratio, importance=p.importance, ignore=p.ignore,
                global_pruning=p.scope == "global", steps=p.steps, target_params=p.target_params,
                target_latency_ms=p.target_latency_ms, latency_batch=p.latency_batch, max_ratio=p.max_ratio,
                grad_batches=grads if p.importance == "taylor" else (), between=between,
            )  # fmt: skip
        model.cpu()
        return model, spec, {"prune": info}

    def recover(
        self, student: nn.Module, teacher: nn.Module, optim: OptimSettings, out: Path | None, label: str
    ) -> dict:
        rc, dm = self.cfg.recover, self.dm
        student.requires_grad_(True)
        distiller = build_distiller(
            rc.method, student, teacher, dm.input_shape, len(dm.x_train), dm.num_classes, **rc.params
        )
        callbacks: list[Any] = [ProgressBar(label)]
        if out is not None:
            callbacks.append(MetricsLogger(out / "metrics.jsonl"))
        t0 = time.perf_counter()
        state = Trainer(distiller, dm, optim, device=self.device, callbacks=callbacks).fit()
        distiller.close()
        student.cpu()
        teacher.cpu()
        return {"recover": {"method": rc.method, "params": rc.params, "epochs": state.epoch,
                            "train_seconds": time.perf_counter() - t0}}  # fmt: skip

    def quantize(self, model: nn.Module, teacher: nn.Module, spec: dict) -> None:
        q = self.cfg.quantize
        calib = self.calibration()
        if q.mode == "static":
            result = Q.quantize_static(model, calib, q.backend)
        elif q.mode == "dynamic":
            result = Q.quantize_dynamic(model, q.backend)
        else:
            prepared = Q.prepare_qat(model, calib[0], q.backend)
            saved = self.device
            self.device = torch.device("cpu")  # fake-quantized training runs on the CPU, where int8 runs
            info = self.recover(prepared, teacher, q.train, self.out / "quantized", "qat")
            self.device = saved
            result = Q.finish_qat(prepared, q.backend, info["recover"])
        weights = Q.save_quantized(self.out / "quantized", result, spec)
        reloaded, _ = Q.load_quantized(self.out / "quantized")
        x = calib[0][:64]
        with torch.no_grad():
            diff = float((reloaded(x) - result.model(x)).abs().max())
        self.add(
            "quantized", result.model, weights, runtime=f"torch int8 ({q.backend}, {q.mode})",
            params=sum(p.numel() for p in model.parameters()), size_bytes=Q.int8_bytes(result.model),
            stored_bytes=weights.stat().st_size, reload_max_abs_diff=diff, quantization=result.info,
        )  # fmt: skip

    def export(self, model: nn.Module) -> None:
        ex, b = self.cfg.export, self.cfg.bench
        test_x = next(iter(self.dm.eval_batches("test", "cpu"))).x[:256]
        path = E.export_onnx(
            model, self.out / "export" / "model.onnx", test_x[:2], exporter=ex.exporter, opset=ex.opset
        )
        check = E.check_onnx(path, model, test_x, ex.atol)
        files = [("onnx", path, {"check": check})]
        if ex.int8:
            q8 = E.quantize_onnx(path, self.out / "export" / "model.int8.onnx", self.calibration())
            files.append(("onnx_int8", q8, {}))
        params = sum(p.numel() for p in model.parameters())
        for stage, f, extra in files:
            logits, _ = E.ort_predict(f, self.dm.eval_batches("test", "cpu"), threads=b.threads)
            lat = {
                f"latency_ms_b{bs}": E.ort_latency_ms(f, self.input_shape, bs, repeats=b.repeats, threads=b.threads)
                for bs in (b.batch_sizes if b.latency else ())
            }
            row_extra = {"runtime": "onnxruntime", "params": params, "size_bytes": f.stat().st_size, **extra}
            self._add_onnx(stage, f, logits, lat, row_extra)

    def _add_onnx(self, stage: str, f: Path, logits: Tensor, lat: dict, extra: dict) -> None:
        m = classification_metrics(logits, self.y_test, self.teacher_logits)
        row = {"stage": stage, "runtime": extra.pop("runtime"), "accuracy": m["acc"], "agreement": m.get("agreement")}
        self.rows.append({**row, **extra, **lat, "file": str(f)})

    def report(self, seconds: float, spec: dict) -> dict[str, Any]:
        base = self.rows[0]
        for row in self.rows:
            row["acc_drop"] = 100.0 * (base["accuracy"] - row["accuracy"])
            for bs in self.cfg.bench.batch_sizes:
                k = f"latency_ms_b{bs}"
                if k in row and k in base and row[k]:
                    row[f"speedup_b{bs}"] = base[k] / row[k]
        return {
            "kind": "compress",
            "model": {k: spec.get(k) for k in ("model", "kwargs", "num_classes", "in_channels")},
            "dataset": {"name": self.data.name, "test": len(self.data.x_test), "fingerprint": self.data.fingerprint()},
            "stages": self.rows,
            "seconds": seconds,
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
            "versions": {**versions(), **_extra_versions()},
            "threads": self.cfg.bench.threads or torch.get_num_threads(),
            "config": dataclasses.asdict(self.cfg),
        }


def _is_int8(model: nn.Module) -> bool:
    return any(type(m).__module__.startswith("torch.ao.nn.quantized") for m in model.modules())


def _extra_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for name in ("torch-pruning", "onnx", "onnxruntime", "onnxscript"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


COLUMNS = [
    ("stage", "stage", "{}"),
    ("runtime", "runtime", "{}"),
    ("accuracy", "test acc", "{:.4f}"),
    ("acc_drop", "drop (pts)", "{:+.2f}"),
    ("params", "params", "{:,}"),
    ("size_bytes", "size (KB)", "size"),
]


def markdown(report: dict[str, Any]) -> str:
    """The stages as a Markdown table, with the setting they were measured in."""
    rows = report["stages"]
    sizes = sorted({int(k.rpartition("_b")[2]) for r in rows for k in r if k.startswith("latency_ms_b")})
    timing = [(f"latency_ms_b{b}", f"latency b{b} (ms)", "{:.3f}" if b < 16 else "{:.2f}") for b in sizes]
    speed = [(f"speedup_b{b}", f"speed-up b{b}", "{:.2f}x") for b in sizes]
    cols = [c for c in [*COLUMNS, *timing, *speed] if any(c[0] in r for r in rows)]
    m, v = report["model"], report["versions"]
    lines = [
        f"# distill compress — {m['model']} {m.get('kwargs') or ''} on {report['dataset']['name']}",
        "",
        f"{report['dataset']['test']:,} test images; {report['seconds']:.0f} s on {v['platform']}, torch {v['torch']}, "
        f"{report['threads']} thread(s), {report['date']}.",
        "",
        "| " + " | ".join(c[1] for c in cols) + " |",
        "|" + "|".join("---" for _ in cols) + "|",
        *["| " + " | ".join(_fmt(r.get(k), f) for k, _, f in cols) + " |" for r in rows],
        "",
        "Drop: accuracy points lost against the input model. Latency: median CPU forward time; speed-up is against "
        "the input model in PyTorch. Size: the weights file; for int8 in PyTorch, the int8 weights' bytes.",
        "",
    ]
    return "\n".join(lines)

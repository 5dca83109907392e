"""One compress run's stages (prune, recover, quantize, export) and the row each adds to the report (see
:mod:`distill.compress.pipeline`).

Every stage is registered in :data:`COMPRESS_STAGES` with :func:`register_stage`, which declares its position in
the run, when it applies (by default: its recipe section's ``enabled`` flag), what it needs and produces, and the
report rows it adds; :func:`run_stages` runs the ones that apply in their order. A new compression step is one
function registered here (or in any module imported before the run) — the pipeline needs no change.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from distill.artifacts import versions
from distill.compress import export as E
from distill.compress import prune as P
from distill.compress import quantize as Q
from distill.compress.recipe import CompressConfig
from distill.distillers.base import build_distiller
from distill.engine.callbacks import MetricsLogger, ProgressBar
from distill.engine.trainer import OptimSettings, Trainer
from distill.registry import Registry
from distill.report.bench import count_params, latency_ms, size_on_disk
from distill.report.metrics import classification_metrics, predict


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


# -- the registered stages -----------------------------------------------------------------------------------------


@dataclasses.dataclass
class Carry:
    """What the stages hand on: the model being compressed, its ``model.json`` spec, the recovery teacher."""

    model: nn.Module
    spec: dict[str, Any]
    teacher: nn.Module
    frozen: bool = False  # set once the model is on the CPU in eval mode (see ``CompressStage.needs``)


# what a stage may need and produce: Carry's fields; "frozen model" is the model on the CPU in eval mode, which the
# run makes it (once, for good) before the first stage that needs it
CARRIED = ("model", "frozen model", "spec", "teacher")
StageFn = Callable[[_Run, Carry], None]


@dataclasses.dataclass(frozen=True)
class CompressStage:
    """One registered step of ``distill compress`` (see :func:`register_stage`)."""

    name: str
    order: int
    fn: StageFn
    applies: Callable[[CompressConfig], bool]
    needs: tuple[str, ...]
    produces: tuple[str, ...]
    rows: tuple[str, ...]

    def run(self, run: _Run, carry: Carry) -> None:
        if "frozen model" in self.needs and not carry.frozen:
            carry.model, carry.frozen = carry.model.cpu().eval(), True
        self.fn(run, carry)


COMPRESS_STAGES: Registry[CompressStage] = Registry("compress stage")


def register_stage(
    name: str,
    order: int,
    needs: tuple[str, ...] = ("model",),
    produces: tuple[str, ...] = (),
    rows: tuple[str, ...] = (),
    applies: Callable[[CompressConfig], bool] | None = None,
) -> Callable[[StageFn], StageFn]:
    """Decorator: ``@register_stage("prune", order=10, ...)`` on ``fn(run, carry)``, which reads and updates the
    :class:`Carry` and adds its report rows through ``run`` (``rows``: the ones it may add, e.g. ``onnx_int8``).

    Stages run in ascending ``order`` (the built-ins: prune 10, recover 20, quantize 30, export 40). ``applies``
    says from the recipe whether the stage runs; by default, when the recipe section named ``name`` is enabled.
    ``needs`` and ``produces`` name :data:`CARRIED` things: what the stage reads, and what it replaces.
    """
    for what in (*needs, *produces):
        if what not in CARRIED:
            raise ValueError(f"compress stage {name!r}: unknown {what!r}; a stage needs and produces {CARRIED}")
    if name in COMPRESS_STAGES:
        raise ValueError(f"compress stage {name!r} is registered twice")
    taken = {s.order: s.name for s in stage_order()}
    if order in taken:
        raise ValueError(f"compress stage {name!r}: order {order} is {taken[order]!r}'s")

    def when(cfg: CompressConfig) -> bool:
        return bool(getattr(cfg, name).enabled)

    def deco(fn: StageFn) -> StageFn:
        stage = CompressStage(name, order, fn, applies or when, tuple(needs), tuple(produces), tuple(rows))
        COMPRESS_STAGES.add(name, stage)
        return fn

    return deco


def stage_order() -> list[CompressStage]:
    """Every registered stage, in the order a run takes them."""
    return sorted((COMPRESS_STAGES.get(n) for n in COMPRESS_STAGES), key=lambda s: s.order)


def run_stages(run: _Run, carry: Carry) -> None:
    """Run the registered stages that apply to ``run``'s recipe, in their order."""
    for stage in stage_order():
        if stage.applies(run.cfg):
            stage.run(run, carry)


@register_stage("prune", 10, needs=("model", "spec", "teacher"), produces=("model", "spec"), rows=("pruned",))
def _prune(run: _Run, c: Carry) -> None:
    c.model, spec, info = run.prune(c.model, c.spec, c.teacher)
    run.add("pruned", c.model, P.save_pruned(run.out / "pruned", c.model, spec), **info)
    c.spec = P.read_spec(run.out / "pruned")


@register_stage("recover", 20, needs=("model", "spec", "teacher"), produces=("model", "spec"), rows=("recovered",))
def _recover(run: _Run, c: Carry) -> None:
    info = run.recover(c.model, c.teacher, run.cfg.recover.train, run.out / "recovered", "recover")
    P.make_permanent(c.model)
    run.add("recovered", c.model, P.save_pruned(run.out / "recovered", c.model, c.spec), **info)
    c.spec = P.read_spec(run.out / "recovered")


@register_stage("quantize", 30, needs=("frozen model", "spec", "teacher"), rows=("quantized",))
def _quantize(run: _Run, c: Carry) -> None:
    run.quantize(c.model, c.teacher, c.spec)


@register_stage("export", 40, needs=("frozen model",), rows=("onnx", "onnx_int8"))
def _export(run: _Run, c: Carry) -> None:
    run.export(c.model)

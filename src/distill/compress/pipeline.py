"""``distill compress``: input model → prune → distil to recover → int8 → ONNX, measuring every stage.

The stages are registered in :data:`~distill.compress.stages.COMPRESS_STAGES` and run in their declared order;
every stage is optional. Each writes a model directory under the output directory (``pruned/``, ``recovered/``,
``quantized/``, ``export/``) and one row of ``report.json`` / ``report.md``: test accuracy (and its drop from the
input, in points), parameters, size on disk, CPU latency at the bench batch sizes and the speed-up over the input.
The recovery stage distils the pruned model from the unpruned input (any registered method), so the teacher is
the model being compressed unless ``recover.teacher`` names another model directory.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

from distill import config as C
from distill.artifacts import write_json, write_manifest
from distill.compress.recipe import (
    CompressConfig,
    ExportStage,
    PruneStage,
    QuantizeStage,
    RecoverStage,
    check_model,
    check_settings,
    load_input,
    load_recipe,
)
from distill.compress.stages import COMPRESS_STAGES, Carry, _Run, register_stage, run_stages
from distill.data.module import load_datamodule
from distill.engine.setup import resolve_device, seed_everything
from distill.errors import CheckpointError
from distill.models.preprocess import differs
from distill.report.markdown import format_cell as _fmt
from distill.workflow import rundir

# the recipe lives in distill.compress.recipe, the stages (and their registry) in distill.compress.stages
__all__ = [
    "COLUMNS",
    "COMPRESS_STAGES",
    "CompressConfig",
    "ExportStage",
    "PruneStage",
    "QuantizeStage",
    "RecoverStage",
    "check_model",
    "check_settings",
    "compress",
    "load_input",
    "load_recipe",
    "markdown",
    "register_stage",
]


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
    run_stages(run, Carry(copy.deepcopy(model).requires_grad_(True), spec, teacher))

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
        f"# distill compress — {' '.join(str(x) for x in (m['model'], m.get('kwargs')) if x)} on "
        f"{report['dataset']['name']}",
        "",
        f"{report['dataset']['test']:,} test samples; {report['seconds']:.0f} s on {v['platform']}, "
        f"torch {v['torch']}, {report['threads']} thread(s), {report['date']}.",
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

"""``report.html``: one self-contained page (figures embedded as PNG data URIs, no scripts, no network) comparing
the teacher and every student of one or more run directories, and the trials of a sweep.

Numbers in the tables come from each run's ``report.json`` (every cell carries the raw value in ``data-value``);
per-class accuracy, confusion matrices, agreement and calibration come from the test-set logits that
:func:`distill.api.run` saves beside each model (``test_logits.safetensors``); the "Inputs" section shows the few
test inputs it saves in the run directory (``examples.safetensors``, see :mod:`distill.report.examples`).

This module only reads files and renders them. What it cannot read, its caller may supply: ``rerun`` re-runs the
saved models of an older run (made before logits were saved) on its test split, and ``temperature`` gives a method's
default softening temperature when ``model.json`` records none (both are passed by :mod:`distill.api` and the
``distill report`` command; without them those parts of the page are left out).
"""

from __future__ import annotations

import time
from pathlib import Path

from distill.artifacts import atomic_write
from distill.report.collect import (
    PREDICTIONS,
    Model,
    Predictions,
    Rerun,
    Run,
    Sweep,
    Temperature,
    collect,
    collect_run,
    collect_sweep,
    load_predictions,
    save_predictions,
)
from distill.report.sections import (
    FORMATS,
    HEADS,
    architecture,
    cell,
    e,
    fmt,
    head,
    img,
    metrics_table,
    pareto_points,
    section_accuracy,
    section_agreement,
    section_calibration,
    section_confusion,
    section_cost,
    section_curves,
    section_examples,
    section_pareto,
    section_per_class,
    section_sweep,
    section_temperature,
    table,
)

__all__ = [
    "CSS",
    "FORMATS",
    "HEADS",
    "PREDICTIONS",
    "Model",
    "Predictions",
    "Rerun",
    "Run",
    "Sweep",
    "Temperature",
    "architecture",
    "build_html",
    "cell",
    "collect",
    "collect_run",
    "collect_sweep",
    "e",
    "fmt",
    "head",
    "img",
    "load_predictions",
    "metrics_table",
    "pareto_points",
    "save_predictions",
    "section_accuracy",
    "section_agreement",
    "section_calibration",
    "section_confusion",
    "section_cost",
    "section_curves",
    "section_examples",
    "section_pareto",
    "section_per_class",
    "section_sweep",
    "section_temperature",
    "table",
    "write_html",
]


CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1b1f24;background:#f6f7f9}
header{background:#1f2937;color:#fff;padding:18px 28px}header h1{margin:0 0 4px;font-size:22px}
header p{margin:0;color:#cbd5e1}nav{padding:8px 28px;background:#e5e7eb;position:sticky;top:0;z-index:1}
nav a{margin-right:14px;color:#1f2937;text-decoration:none;font-weight:500}main{padding:8px 28px 40px}
section{background:#fff;border-radius:8px;padding:14px 20px;margin:16px 0;box-shadow:0 1px 2px #0001}
h2{margin:4px 0 10px;font-size:18px}h3{font-size:15px;margin:14px 0 6px}
table{border-collapse:collapse;margin:6px 0 8px;font-size:13px}th,td{padding:4px 10px;border-bottom:1px solid #e5e7eb}
th{text-align:left;background:#f3f4f6;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
td.name{font-weight:600}table.compact td,table.compact th{padding:2px 8px}
figure{margin:8px 0}img{max-width:100%;height:auto}.grid{display:flex;flex-wrap:wrap;gap:12px}
.note{color:#555;font-size:12.5px}dl{display:grid;grid-template-columns:max-content auto;gap:2px 14px}
dt{font-weight:600}dd{margin:0}code{font-size:12px}footer{color:#666;font-size:12px;padding:0 28px 24px}
"""


def build_html(paths: list[Path], rerun: Rerun | None = None, temperature: Temperature | None = None) -> str:
    """The page for run and sweep directories ``paths`` (``rerun``, ``temperature``: see the module doc)."""
    runs, sweeps = collect(paths, rerun, temperature)
    sections: list[tuple[str, str, str]] = []
    if runs:
        sections += [
            ("accuracy", "Accuracy", section_accuracy(runs)),
            ("cost", "Size and speed", section_cost(runs)),
            ("curves", "Training curves", section_curves(runs)),
        ]
    sections.append(("pareto", "Accuracy vs cost", section_pareto(runs, sweeps)))
    if runs:
        sections += [
            ("per-class", "Per-class accuracy", section_per_class(runs)),
            ("confusion", "Confusion matrices", section_confusion(runs)),
            ("agreement", "Teacher–student agreement", section_agreement(runs)),
            ("calibration", "Calibration", section_calibration(runs)),
        ]
        temp = section_temperature(runs)
        if temp:
            sections.append(("temperature", "Teacher at T = 1 and at the training temperature", temp))
        examples = section_examples(runs)
        if examples:  # runs made before examples were saved have none
            sections.append(("examples", "Inputs: test examples", examples))
    for s in sweeps:
        sections.append((f"sweep-{s.name}", f"Sweep {s.name}", section_sweep(s)))
    nav = "".join(f'<a href="#{e(i)}">{e(t)}</a>' for i, t, _ in sections)
    body = "".join(f'<section id="{e(i)}"><h2>{e(t)}</h2>{b}</section>' for i, t, b in sections)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<link rel="icon" href="data:,"><title>{e(_title(runs, sweeps))}</title><style>{CSS}</style></head><body>'
        f"<header><h1>{e(_title(runs, sweeps))}</h1><p>{e(_subtitle(runs, sweeps))}</p></header>"
        f"<nav>{nav}</nav><main>{body}</main><footer>{_footer(runs)}</footer></body></html>\n"
    )


def _title(runs: list[Run], sweeps: list[Sweep]) -> str:
    names = sorted(
        {r.report["dataset"]["name"] for r in runs} | {s.data.get("dataset", {}).get("name", "") for s in sweeps} - {""}
    )
    return f"distill report — {', '.join(names) or 'runs'}"


def _subtitle(runs: list[Run], sweeps: list[Sweep]) -> str:
    bits = []
    for r in runs:
        ds = r.report["dataset"]
        bits.append(
            f"{r.name}: {ds['train']:,} training / {ds['test']:,} test samples, {ds['classes']} classes, "
            f"{len(r.models) - 1} student(s), {r.report.get('seconds', 0):.0f} s, {r.report.get('date', '')}"
        )
    bits += [f"sweep {s.name}: {len(s.data.get('trials', []))} trials" for s in sweeps]
    return " · ".join(bits)


def _footer(runs: list[Run]) -> str:
    v = runs[0].report.get("versions", {}) if runs else {}
    made = f"Made {time.strftime('%Y-%m-%d %H:%M:%S')} by distill"
    if v:
        made += f" {v.get('distill', '')} (torch {v.get('torch', '')}, {v.get('platform', '')})"
    return e(made + ". Self-contained: the figures are embedded, nothing is fetched.")


def write_html(
    paths: list[Path] | Path, out_file: Path, rerun: Rerun | None = None, temperature: Temperature | None = None
) -> Path:
    """Write the report of run/sweep directories ``paths`` to ``out_file`` (atomically); ``rerun`` and
    ``temperature`` supply what the files lack (see the module doc)."""
    paths = [paths] if isinstance(paths, (str, Path)) else list(paths)
    page = build_html([Path(p) for p in paths], rerun, temperature)
    out_file = Path(out_file)
    atomic_write(out_file, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
    return out_file

"""The sections of ``report.html`` and the formatting of their cells (see :mod:`distill.report.html`)."""

from __future__ import annotations

import html
import json
from typing import Any

import numpy as np

from distill.report import plots
from distill.report.collect import Model, Run, Sweep
from distill.report.examples import Examples, uint8_to_db

# -- formatting ----------------------------------------------------------------------------------------------------

FORMATS = {
    "accuracy": "{:.4f}",
    "top5": "{:.4f}",
    "nll": "{:.4f}",
    "ece": "{:.4f}",
    "agreement": "{:.4f}",
    "gap_recovered": "{:.1%}",
    "best_val_acc": "{:.4f}",
    "params": "{:,}",
    "size_bytes": "size",
    "latency_ms_b1": "{:.3f}",
    "train_seconds": "{:.1f}",
    "epochs": "{}",
}
HEADS = {
    "accuracy": "test acc",
    "top5": "top-5",
    "nll": "NLL",
    "ece": "ECE",
    "agreement": "agreement",
    "gap_recovered": "gap recovered",
    "best_val_acc": "best val acc",
    "params": "params",
    "size_bytes": "size (KB)",
    "train_seconds": "train (s)",
    "epochs": "epochs",
}


def fmt(key: str, value: Any) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "—"
    f = FORMATS.get(key)
    if f is None:
        f = "{:.2f}x" if key.startswith("speedup_") else "{:.2f}" if key.startswith("latency_") else "{}"
    if f == "size":
        return f"{value / 1024:,.1f}"
    try:
        return f.format(value)
    except (ValueError, TypeError):
        return str(value)


def head(key: str) -> str:
    if key.startswith("latency_ms_b"):
        return f"latency b{key[12:]} (ms)"
    if key.startswith("speedup_b"):
        return f"speed-up b{key[9:]}"
    return HEADS.get(key, key)


def e(text: Any) -> str:
    return html.escape(str(text))


def cell(key: str, value: Any) -> str:
    raw = json.dumps(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
    num = ' class="num"' if raw else ""
    return f'<td data-key="{e(key)}" data-value="{e(raw)}"{num}>{e(fmt(key, value))}</td>'


def table(heads: list[str], rows: list[list[str]], cls: str = "") -> str:
    th = "".join(f"<th>{e(h)}</th>" for h in heads)
    body = "".join("<tr>" + "".join(r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'


def metrics_table(runs: list[Run], keys: list[str], lead: tuple[str, ...] = ("method",)) -> str:
    """One row per model of every run; a column for each of ``keys`` that some model has."""
    models = [m for r in runs for m in r.models]
    keys = [k for k in keys if any(k in m.row for m in models)]
    rows = []
    for m in models:
        tds = [f'<td class="name">{e(m.name)}</td>']
        tds += [f"<td>{e(m.row.get(k, ''))}</td>" for k in lead]
        tds += [cell(k, m.row.get(k)) for k in keys]
        rows.append(tds)
    return table(["model", *lead, *map(head, keys)], rows)


def architecture(m: Model) -> str:
    kw = m.spec.get("kwargs") or {}
    args = ", ".join(f"{k}={v}" for k, v in kw.items())
    return f"{m.spec.get('model', m.row.get('model', '?'))}({args})"


def img(uri: str, alt: str) -> str:
    return f'<figure><img src="{uri}" alt="{e(alt)}"></figure>'


# -- sections ------------------------------------------------------------------------------------------------------


def section_accuracy(runs: list[Run]) -> str:
    keys = ["accuracy", "top5", "nll", "ece", "agreement", "gap_recovered", "best_val_acc", "epochs", "train_seconds"]
    return (
        metrics_table(runs, keys)
        + '<p class="note">Gap recovered: (student − scratch) / (teacher − scratch) on test accuracy; '
        "agreement: share of test samples where the student predicts the teacher's class.</p>"
    )


def section_cost(runs: list[Run]) -> str:
    models = [m for r in runs for m in r.models]
    lat = sorted({k for m in models for k in m.row if k.startswith("latency_ms_b")}, key=lambda k: int(k[12:]))
    spd = sorted({k for m in models for k in m.row if k.startswith("speedup_b")}, key=lambda k: int(k[9:]))
    keys = ["params", "size_bytes", *lat, *spd]
    rows = []
    for m in models:
        tds = [f'<td class="name">{e(m.name)}</td>', f"<td><code>{e(architecture(m))}</code></td>"]
        rows.append(tds + [cell(k, m.row.get(k)) for k in keys])
    bench = (runs[0].report.get("config") or {}).get("bench", {}) if runs else {}
    threads = bench.get("threads")
    return table(["model", "architecture", *map(head, keys)], rows) + (
        f'<p class="note">Latency: median CPU forward time in eval mode over at least '
        f"{e(bench.get('repeats', '?'))} passes and 0.3 s"
        f"{f', {threads} threads' if threads else ''}; size: the safetensors file on disk.</p>"
    )


def section_curves(runs: list[Run]) -> str:
    hist = {m.name: m.history for r in runs for m in r.models if m.history}
    if not hist:
        return '<p class="note">No metrics.jsonl found (a loaded teacher has none).</p>'
    return img(plots.training_curves(hist), "training curves") + img(plots.loss_parts(hist), "loss parts per epoch")


def pareto_points(runs: list[Run], sweeps: list[Sweep], key: str) -> list[dict[str, Any]]:
    pts = []
    for r in runs:
        for i, m in enumerate(r.models):
            kind = "teacher" if i == 0 else "student"
            pts.append({"name": m.name, "x": m.row.get(key), "y": m.row.get("accuracy"), "kind": kind})
    for s in sweeps:
        t = s.data.get("teacher") or {}
        pts.append({"name": f"{s.name}/teacher", "x": t.get(key), "y": t.get("accuracy"), "kind": "teacher"})
        for tr in s.data.get("trials", []):
            if tr.get("state") == "COMPLETE":
                pts.append(
                    {
                        "name": f"{s.name}/trial {tr['number']}",
                        "x": tr.get("params_count" if key == "params" else key),
                        "y": tr.get("accuracy"),
                        "kind": "trial",
                    }
                )
    return [p for p in pts if p["x"] is not None and p["y"] is not None]


def section_pareto(runs: list[Run], sweeps: list[Sweep]) -> str:
    parts = []
    axes = [
        ("latency_ms_b1", "CPU latency at batch 1 (ms)"),
        ("latency_ms_b256", "CPU latency at batch 256 (ms)"),
        ("params", "parameters"),
    ]
    for key, label in axes:
        pts = pareto_points(runs, sweeps, key)
        if len(pts) < 2:
            continue
        front = [pts[i]["name"] for i in plots.pareto_front([p["x"] for p in pts], [p["y"] for p in pts])]
        parts.append(
            f'<div class="fig">{img(plots.pareto_plot(pts, label), f"accuracy vs {label}")}'
            f'<p class="note" data-front="{e(key)}">Pareto front ({e(label)}): {e(", ".join(front))}</p></div>'
        )
    if not parts:
        return '<p class="note">Not enough measured models for a Pareto plot (latency disabled?).</p>'
    return '<div class="grid">' + "".join(parts) + "</div>"


def _per_run(runs: list[Run], body: Any) -> str:
    out = []
    for r in runs:
        title = f"<h3>{e(r.name)}</h3>" if len(runs) > 1 else ""
        if r.labels is None:
            out.append(f'{title}<p class="note">{e(r.note)}</p>')
        else:
            out.append(title + body(r))
    return "".join(out)


def _names(r: Run) -> list[str]:
    return [m.name for m in r.models]


def section_per_class(runs: list[Run]) -> str:
    def body(r: Run) -> str:
        accs = {}
        for m in r.models:
            pred = m.logits.argmax(1)
            accs[m.name] = np.array(
                [(pred[r.labels == k] == k).mean() if (r.labels == k).any() else np.nan for k in range(len(r.classes))]
            )
        rows = [
            [f'<td class="name">{e(c)}</td>', f'<td class="num">{int((r.labels == k).sum())}</td>']
            + [cell("accuracy", float(a[k])) for a in accs.values()]
            for k, c in enumerate(r.classes)
        ]
        tbl = table(["class", "test samples", *accs], rows, "compact") if len(r.classes) <= 30 else ""
        return img(plots.per_class_accuracy(r.classes, accs), "per-class accuracy") + tbl

    return _per_run(runs, body)


def section_confusion(runs: list[Run]) -> str:
    def body(r: Run) -> str:
        k = len(r.classes)
        mats = {}
        for m in r.models:
            mats[m.name] = np.bincount(r.labels * k + m.logits.argmax(1), minlength=k * k).reshape(k, k)
        return img(plots.confusion_matrices(r.classes, mats), "confusion matrices")

    return _per_run(runs, body)


def section_agreement(runs: list[Run]) -> str:
    tbl = metrics_table([Run(r.dir, r.name, r.report, r.models[1:], r.classes) for r in runs], ["agreement"])

    def body(r: Run) -> str:
        preds = [m.logits.argmax(1) for m in r.models]
        mat = np.array([[float((a == b).mean()) for b in preds] for a in preds])
        return img(plots.agreement_matrix(_names(r), mat), "pairwise agreement")

    return tbl + _per_run(runs, body)


def _softmax(z: np.ndarray, t: float = 1.0) -> np.ndarray:
    z = z / t
    p = np.exp(z - z.max(axis=-1, keepdims=True))
    return p / p.sum(axis=-1, keepdims=True)


def section_calibration(runs: list[Run]) -> str:
    tbl = metrics_table(runs, ["ece", "nll", "accuracy"])

    def body(r: Run) -> str:
        curves = {m.name: plots.reliability_bins(_softmax(m.logits), r.labels) for m in r.models}
        eces = {m.name: m.row.get("ece") for m in r.models}
        return img(plots.reliability_diagram(curves, eces), "reliability diagram")

    return (
        tbl + '<p class="note">ECE: the gap between confidence and accuracy over 15 equal-width confidence bins, '
        "weighted by the share of test samples in each bin (0 is perfectly calibrated).</p>" + _per_run(runs, body)
    )


def section_temperature(runs: list[Run]) -> str:
    out = []
    for r in runs:
        temps = sorted({m.temperature for m in r.models if m.temperature is not None})
        if not temps or r.labels is None:
            continue
        t_logits = r.models[0].logits
        probs = _softmax(t_logits)
        conf, pred = probs.max(1), probs.argmax(1)
        ok = np.flatnonzero(pred == r.labels)
        pool = ok if len(ok) else np.arange(len(r.labels))
        i = int(pool[np.argmin(np.abs(conf[pool] - np.median(conf[pool])))])  # a typical image, not an extreme one
        users = ", ".join(f"{m.name} (T = {m.temperature:g})" for m in r.models if m.temperature is not None)
        title = f"teacher on test image #{i} (true class: {r.classes[int(r.labels[i])]})"
        out.append(
            (f"<h3>{e(r.name)}</h3>" if len(runs) > 1 else "")
            + img(plots.temperature_example(r.classes, t_logits[i], temps, int(r.labels[i]), title), title)
            + f'<p class="note">Students trained with a temperature: {e(users)}. Softening spreads the teacher\'s '
            "probability over the wrong classes — the “dark knowledge” the student learns from.</p>"
        )
    return "".join(out)


def examples_figure(ex: Examples) -> str:
    """The figure of a run's saved test inputs and a note saying what they are."""
    titles = [ex.class_name(int(y)) for y in ex.labels]
    per = ex.info.get("per_class", 2)
    first = f"The first {per} test samples of each class (at most {ex.info.get('max_classes', 16)} classes)"
    if ex.kind == "log-mel":
        a = ex.info.get("axes") or {}
        top_db, hop_ms = float(a.get("top_db", 80.0)), float(a.get("hop_ms", 10.0))
        db = uint8_to_db(ex.inputs[:, 0], top_db)
        uri = plots.spectrogram_grid(db, titles, hop_ms / 1000, (-top_db, 0.0))
        band = f" ({a['fmin']:g}–{a['fmax']:g} Hz)" if "fmin" in a and "fmax" in a else ""
        note = (
            f"{first}, as the models see them: log-mel spectrograms, {ex.inputs.shape[2]} mel bands{band} from low "
            f"(bottom) to high, {ex.inputs.shape[3]} frames {hop_ms:g} ms apart; colour in dB re full scale "
            f"(uint8 q → dB = q · {top_db:g} / 255 − {top_db:g})."
        )
        return img(uri, "log-mel spectrograms of test samples") + f'<p class="note">{e(note)}</p>'
    uri = plots.image_grid(ex.inputs, titles)
    note = f"{first}, as stored (before normalisation and augmentation)."
    return img(uri, "test images") + f'<p class="note">{e(note)}</p>'


def section_examples(runs: list[Run]) -> str:
    """Each run's saved test inputs (:mod:`distill.report.examples`); empty when no run saved any."""
    if not any(r.examples is not None for r in runs):
        return ""
    out = []
    for r in runs:
        title = f"<h3>{e(r.name)}</h3>" if len(runs) > 1 else ""
        body = examples_figure(r.examples) if r.examples is not None else '<p class="note">No examples saved.</p>'
        out.append(title + body)
    return "".join(out)


def section_sweep(s: Sweep) -> str:
    d = s.data
    trials = d.get("trials", [])
    states: dict[str, int] = {}
    for t in trials:
        states[t.get("state", "?")] = states.get(t.get("state", "?"), 0) + 1
    facts = [
        ("study", d.get("study")),
        ("objective", d.get("objective")),
        ("directions", ", ".join(d.get("directions", []))),
        ("budget", json.dumps(d.get("budget")) if d.get("budget") else "none"),
        ("trials", ", ".join(f"{n} {k.lower()}" for k, n in sorted(states.items()))),
        ("teacher test acc", fmt("accuracy", (d.get("teacher") or {}).get("accuracy"))),
    ]
    out = "<dl>" + "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in facts) + "</dl>"
    best = set(d.get("best", []))
    auto = d.get("auto_student")
    if auto:
        chosen = auto.get("trial")
        msg = (
            f"smallest student within {auto['points']:g} points of the teacher: trial {chosen}"
            if chosen is not None
            else f"no student came within {auto['points']:g} points of the teacher"
        )
        out += f'<p class="auto-student"><strong>auto-student:</strong> {e(msg)}</p>'
    space = sorted({k for t in trials for k in (t.get("params") or {})})
    keys = ["val_acc", "accuracy", "params_count", "latency_ms_b1"]
    rows = []
    for t in trials:
        mark = " ★" if t["number"] in best else ""
        tds = [f'<td class="name">{e(t["number"])}{mark}</td>', f"<td>{e(t.get('state'))}</td>"]
        tds += [f'<td class="num">{e(_short((t.get("params") or {}).get(k)))}</td>' for k in space]
        tds += [
            cell(
                "accuracy" if k.endswith("acc") or k == "accuracy" else "params" if k == "params_count" else k, t.get(k)
            )
            for k in keys
        ]
        rows.append(tds)
    heads = ["trial", "state", *space, "val acc", "test acc", "params", "latency b1 (ms)"]
    return (
        out + table(heads, rows, "compact") + '<p class="note">★ best trial(s): the Pareto front of a '
        "multi-objective sweep, else the best value. Trials are scored on validation accuracy.</p>"
    )


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)

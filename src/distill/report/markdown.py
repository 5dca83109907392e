"""report.json, report.md and the terminal table of a run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from distill.artifacts import write_json
from distill.errors import DistillError

COLUMNS = [
    ("name", "model", "{}"),
    ("method", "method", "{}"),
    ("accuracy", "test acc", "{:.4f}"),
    ("params", "params", "{:,}"),
    ("size_bytes", "size (KB)", "size"),
    ("latency_ms_b1", "latency b1 (ms)", "{:.3f}"),
    ("latency_ms_b32", "latency b32 (ms)", "{:.2f}"),
    ("latency_ms_b256", "latency b256 (ms)", "{:.2f}"),
    ("speedup_b1", "speed-up b1", "{:.2f}x"),
    ("speedup_b32", "speed-up b32", "{:.2f}x"),
    ("speedup_b256", "speed-up b256", "{:.2f}x"),
    ("agreement", "agreement", "{:.4f}"),
    ("gap_recovered", "gap recovered", "{:.1%}"),
    ("train_seconds", "train (s)", "{:.0f}"),
]


def format_cell(value: Any, fmt: str) -> str:
    """One table cell: ``fmt`` is a format string, or ``size`` for bytes shown in KB; None shows as a dash."""
    if value is None:
        return "—"
    if fmt == "size":
        return f"{value / 1024:,.1f}"
    try:
        return fmt.format(value)
    except (ValueError, TypeError):
        return str(value)


def table_rows(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    entries = [report["teacher"], *report["students"]]
    cols = [c for c in COLUMNS if any(c[0] in e for e in entries)]
    return [c[1] for c in cols], [[format_cell(e.get(k), f) for k, _, f in cols] for e in entries]


def markdown(report: dict[str, Any]) -> str:
    head, rows = table_rows(report)
    ds = report["dataset"]
    lines = [
        f"# distill report — {ds['name']}",
        "",
        f"{ds['train']:,} training samples (validation carved from them), {ds['test']:,} test samples, "
        f"{ds['classes']} classes. Run took {report['seconds']:.0f} s on {report['versions']['platform']} "
        f"(torch {report['versions']['torch']}), {report['date']}.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join("---" for _ in head) + "|",
        *["| " + " | ".join(r) + " |" for r in rows],
        "",
        "Latency: median CPU forward time in eval mode. Gap recovered: (student − scratch) / (teacher − scratch).",
        "",
    ]
    return "\n".join(lines)


def write_reports(out: Path, report: dict[str, Any]) -> None:
    write_json(out / "report.json", report)
    (out / "report.md").write_text(markdown(report))


def print_table(report: dict[str, Any]) -> None:
    """A rich table on the terminal (plain Markdown when rich is missing)."""
    import sys

    head, rows = table_rows(report)
    if not sys.stdout.isatty():  # logs and pipes get Markdown, which no terminal width can squash
        print(markdown(report))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"distill — {report['dataset']['name']} ({report['seconds']:.0f} s)")
    for h in head:
        table.add_column(h, justify="left" if h in ("model", "method") else "right")
    for r in rows:
        table.add_row(*r)
    Console().print(table)


def load_report(run_dir: Path) -> dict[str, Any]:
    """A run's ``report.json``, checked for what the table reads: a file cut off while it was written (a full disk,
    a killed run) or one that is not a distill report is refused in one line."""
    path = Path(run_dir) / "report.json"
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DistillError(
            f"{path} is not valid JSON ({' '.join(str(e).split())}); it may have been cut off while being written: "
            "rerun the run (with --resume) to write it again"
        ) from e
    problem = _report_problem(report)
    if problem:
        raise DistillError(f"{path} is not a distill report: {problem}")
    return report


def _report_problem(report: Any) -> str | None:
    """What a report lacks for :func:`print_table` and :func:`markdown`, or None."""
    number = (int, float)
    if not isinstance(report, dict):
        return f"expected a JSON object, got {type(report).__name__}"
    for key, kind in (("dataset", dict), ("teacher", dict), ("students", list), ("versions", dict),
                      ("seconds", number), ("date", str)):  # fmt: skip
        if not isinstance(report.get(key), kind) or isinstance(report.get(key), bool):
            return f"{key!r} is missing or of the wrong type"
    for key, kind in (("name", str), ("train", int), ("test", int), ("classes", int)):
        if not isinstance(report["dataset"].get(key), kind):
            return f"'dataset.{key}' is missing or of the wrong type"
    if not all(isinstance(report["versions"].get(k), str) for k in ("platform", "torch")):
        return "'versions.platform' or 'versions.torch' is missing"
    entries = [report["teacher"], *report["students"]]
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            return f"a model entry is {type(entry).__name__}, not an object"
        for key, _, fmt in COLUMNS:
            value = entry.get(key)
            if fmt != "{}" and value is not None and (isinstance(value, bool) or not isinstance(value, number)):
                return f"{'teacher' if i == 0 else f'students.{i - 1}'}.{key} is {value!r}, not a number"
    return None

"""report.html: every section present, numbers equal to report.json, self-contained, and the ``distill report`` CLI.

``tiny_run()`` (also used by test_tracking and test_browser) makes one small synthetic run per test session, with
MLflow tracking on, so the pipeline runs once for all three files.
"""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from distill import api
from distill.cli import main
from distill.report import plots
from distill.report.html import PREDICTIONS, build_html, load_predictions

SECTIONS = ["accuracy", "cost", "curves", "pareto", "per-class", "confusion", "agreement", "calibration", "temperature"]
SECTIONS += ["examples"]  # the run's saved test inputs ("Inputs": tests/test_report_examples.py)
TINY = [
    "data.name=synthetic",
    "data.val_size=32",
    "data.batch_size=64",
    "train.epochs=2",
    "teacher.train.epochs=2",
    "teacher.kwargs={width: 4, blocks: 1}",
    "student.kwargs={width: 2, blocks: 1}",
    "methods=[{name: scratch}, {name: kd, params: {temperature: 4.0, alpha: 0.9}}]",
    "bench.repeats=2",
    "bench.batch_sizes=[1, 16]",
    "tracking.mlflow=true",
    "device=cpu",
]


@functools.cache
def tiny_run() -> Path:
    """One finished run (teacher, scratch, kd) with TensorBoard and MLflow outputs, made once per session."""
    root = Path(tempfile.mkdtemp(prefix="distill-report-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    api.run(Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml", root / "run", TINY)
    return root / "run"


@pytest.fixture(scope="module")
def run_dir() -> Path:
    return tiny_run()


class Cells(HTMLParser):
    """Collects ``<section id>``s, ``<img src>``s and table rows as {model name: {data-key: data-value}}."""

    def __init__(self) -> None:
        super().__init__()
        self.sections, self.images, self.rows, self.tables = [], [], [], []
        self._row, self._in_name, self._scripts = None, False, 0

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.sections.append(a.get("id"))
        elif tag == "img":
            self.images.append(a.get("src", ""))
        elif tag == "script":
            self._scripts += 1
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self._row = {"name": None, "cells": {}}
        elif tag == "td" and self._row is not None:
            if "name" in (a.get("class") or "") and self._row["name"] is None:
                self._in_name = True
            if "data-key" in a and a.get("data-value"):
                self._row["cells"][a["data-key"]] = json.loads(a["data-value"])

    def handle_data(self, data):
        if self._in_name:
            self._row["name"] = data
            self._in_name = False

    def handle_endtag(self, tag):
        if tag == "tr" and self._row is not None and self._row["name"] is not None:
            self.tables[-1].append(self._row)
            self._row = None


def parse(html: str) -> Cells:
    p = Cells()
    p.feed(html)
    return p


def test_run_writes_report_html_with_every_section(run_dir):
    html = (run_dir / "report.html").read_text()
    page = parse(html)
    assert page.sections == SECTIONS
    assert (run_dir / "report.md").is_file()  # kept for terminals
    assert page._scripts == 0
    assert len(page.images) >= 9
    assert all(src.startswith("data:image/png;base64,") and len(src) > 1000 for src in page.images)
    assert "http://" not in html and "https://" not in html  # nothing to fetch: opens offline
    for d in ["teacher", "students/scratch", "students/kd"]:
        assert (run_dir / d / PREDICTIONS).is_file()


def test_numbers_match_report_json(run_dir):
    report = json.loads((run_dir / "report.json").read_text())
    page = parse((run_dir / "report.html").read_text())
    accuracy, cost = page.tables[0], page.tables[1]
    expected = {r["name"]: r for r in [report["teacher"], *report["students"]]}
    assert [r["name"] for r in accuracy] == list(expected) == [r["name"] for r in cost]
    for table in (accuracy, cost):
        for row in table:
            want = expected[row["name"]]
            assert row["cells"], row
            for key, value in row["cells"].items():
                assert value == pytest.approx(want[key], rel=1e-12), (row["name"], key)
    kd = next(r for r in accuracy if r["name"] == "kd")["cells"]
    assert {"accuracy", "gap_recovered", "agreement", "ece"} <= set(kd)
    assert {"params", "size_bytes", "latency_ms_b1", "latency_ms_b16"} <= set(cost[0]["cells"])
    # the numbers themselves, recomputed by hand from the saved test-set predictions
    preds = {d: load_predictions(run_dir / d) for d in ("teacher", "students/scratch", "students/kd")}
    labels = preds["teacher"][1]
    assert all(np.array_equal(p[1], labels) for p in preds.values())  # one test set for all
    acc = {d: float((p[0].argmax(1) == labels).mean()) for d, p in preds.items()}
    assert expected["teacher"]["accuracy"] == pytest.approx(acc["teacher"], abs=1e-6)
    assert expected["scratch"]["accuracy"] == pytest.approx(acc["students/scratch"], abs=1e-6)
    assert kd["accuracy"] == pytest.approx(acc["students/kd"], abs=1e-6)
    agree = float((preds["students/kd"][0].argmax(1) == preds["teacher"][0].argmax(1)).mean())
    assert kd["agreement"] == pytest.approx(agree, abs=1e-6)
    z = preds["students/kd"][0].astype(np.float64)
    log_p = z - z.max(1, keepdims=True) - np.log(np.exp(z - z.max(1, keepdims=True)).sum(1, keepdims=True))
    assert expected["kd"]["nll"] == pytest.approx(-log_p[np.arange(len(labels)), labels].mean(), rel=1e-4)
    t, sc = acc["teacher"], acc["students/scratch"]
    want_gap = (acc["students/kd"] - sc) / (t - sc) if t > sc else None
    assert kd.get("gap_recovered") == (pytest.approx(want_gap, abs=1e-6) if want_gap is not None else None)
    for row in cost:
        if row["name"] != "teacher":
            want = expected["teacher"]["latency_ms_b1"] / expected[row["name"]]["latency_ms_b1"]
            assert expected[row["name"]]["speedup_b1"] == pytest.approx(want, rel=1e-9)
    assert expected["kd"]["params"] == expected["scratch"]["params"] < expected["teacher"]["params"]
    html = (run_dir / "report.html").read_text()
    assert f"{expected['kd']['accuracy']:.4f}" in html and f"{expected['teacher']['params']:,}" in html
    assert "T = 4" in html  # the KD example at the training temperature


def test_cli_compares_two_runs_and_recomputes_missing_predictions(run_dir, tmp_path, capsys):
    other = tmp_path / "older"
    shutil.copytree(run_dir, other, ignore=shutil.ignore_patterns("mlflow.db", "mlartifacts", "tb"))
    for p in other.rglob(PREDICTIONS):  # a run made before logits were saved: the models are run again
        p.unlink()
    out = tmp_path / "both.html"
    assert main(["report", str(run_dir), str(other), "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    page = parse(out.read_text())
    assert page.sections == SECTIONS
    names = [r["name"] for r in page.tables[0]]
    assert names == [f"{d.name}/{n}" for d in (run_dir, other) for n in ("teacher", "scratch", "kd")]
    assert "predictions are not available" not in out.read_text()


def test_report_of_a_directory_without_a_run_is_refused(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "neither report.json" in capsys.readouterr().err


def test_pareto_front():
    costs = [1.0, 2.0, 2.0, 3.0, 0.5, 4.0]
    accs = [0.5, 0.7, 0.6, 0.65, 0.4, 0.9]
    assert plots.pareto_front(costs, accs) == [4, 0, 1, 5]


def test_reliability_bins_match_hand_counts():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.55, 0.45]])
    labels = np.array([0, 1, 1, 0])
    r = plots.reliability_bins(probs, labels, bins=2)
    assert r["count"].tolist() == [0, 4]
    assert r["accuracy"][1] == pytest.approx(0.75) and r["confidence"][1] == pytest.approx((0.9 + 0.8 + 0.7 + 0.55) / 4)


def test_sweep_directory_feeds_the_pareto_plot(tmp_path):
    sweep = {
        "study": "s",
        "objective": "acc_latency",
        "directions": ["maximize", "minimize"],
        "teacher": {"accuracy": 0.9, "params": 1000, "latency_ms_b1": 2.0},
        "trials": [
            {"number": 0, "state": "COMPLETE", "accuracy": 0.8, "val_acc": 0.8, "params_count": 100,
             "latency_ms_b1": 0.5, "params": {"width": 2}},
            {"number": 1, "state": "PRUNED", "params_count": 50, "latency_ms_b1": 0.2, "params": {"width": 1}},
        ],
        "best": [0],
        "auto_student": {"points": 15, "trial": 0},
    }  # fmt: skip
    (tmp_path / "sweep.json").write_text(json.dumps(sweep))
    html = build_html([tmp_path])
    page = parse(html)
    assert page.sections == ["pareto", f"sweep-{tmp_path.name}"]
    assert "trial 0" in html and "auto-student" in html and len(page.images) == 2

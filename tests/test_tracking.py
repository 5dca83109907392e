"""TensorBoard and MLflow outputs of a run, read back with their own libraries."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from distill.cli import parser
from distill.engine.callbacks import Callback
from distill.engine.tracking import (
    MLflowLogger,
    TensorBoardLogger,
    extra_callbacks,
    mlflow_uri,
    tracking_callbacks,
)
from test_report_html import tiny_run


def records(model_dir: Path) -> list[dict]:
    return [json.loads(ln) for ln in (model_dir / "metrics.jsonl").read_text().splitlines() if ln.strip()]


def test_tensorboard_scalars_match_metrics_jsonl():
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for sub in ("teacher", "students/kd"):
        model_dir = tiny_run() / sub
        acc = EventAccumulator(str(model_dir / "tb"))
        acc.Reload()
        tags = set(acc.Tags()["scalars"])
        assert {"train/loss", "train/acc", "val/acc", "val/nll", "lr", "throughput/images_per_second"} <= tags
        if sub.endswith("kd"):
            assert {"train/ce", "train/kd", "val/agreement"} <= tags  # the loss parts, by name
        recs = records(model_dir)
        for tag, get in [("train/loss", lambda r: r["train"]["loss"]), ("val/acc", lambda r: r["val"]["acc"]),
                         ("lr", lambda r: r["lr"])]:  # fmt: skip
            events = acc.Scalars(tag)
            assert [e.step for e in events] == [r["epoch"] for r in recs]
            assert [e.value for e in events] == pytest.approx([get(r) for r in recs], rel=1e-6)
        # the LR after epoch e of a 2-epoch cosine schedule from 0.05 (no warm-up): 0.05 · (1 + cos(π e / 2)) / 2
        want = [0.05 * (1 + math.cos(math.pi * e / 2)) / 2 for e in (1, 2)]
        assert [e.value for e in acc.Scalars("lr")] == pytest.approx(want, rel=1e-6, abs=1e-9)
        assert [r["lr"] for r in recs] == pytest.approx(want, rel=1e-9, abs=1e-12)
        # the scalars are the run's numbers, not placeholders: the loss falls and accuracy is a fraction of 32
        assert recs[1]["train"]["loss"] < recs[0]["train"]["loss"]
        assert all(float(r["val"]["acc"] * 32).is_integer() for r in recs)


def test_mlflow_runs_params_metrics_and_artifacts():
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    run = tiny_run()
    client = MlflowClient(tracking_uri=f"sqlite:///{run / 'mlflow.db'}")
    exp = client.get_experiment_by_name("distill")
    runs = {r.data.tags.get("distill_label", "parent"): r for r in client.search_runs([exp.experiment_id])}
    assert set(runs) == {"parent", "teacher", "scratch", "kd"}
    parent = runs["parent"]
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for k, r in runs.items() if k != "parent")
    assert all(r.info.status == "FINISHED" for r in runs.values())

    kd = runs["kd"]
    assert float(kd.data.params["temperature"]) == 4.0 and float(kd.data.params["alpha"]) == 0.9
    assert kd.data.params["method"] == "kd" and "lr" in kd.data.params
    history = client.get_metric_history(kd.info.run_id, "val/acc")
    recs = records(run / "students" / "kd")
    history = sorted((m.step, m.value) for m in history)
    assert [s for s, _ in history] == [r["epoch"] for r in recs]
    assert [v for _, v in history] == pytest.approx([r["val"]["acc"] for r in recs])
    report = json.loads((run / "report.json").read_text())
    assert kd.data.metrics["test/accuracy"] == pytest.approx(report["students"][1]["accuracy"])
    assert parent.data.params["train.epochs"] == "2"

    assert {a.path for a in client.list_artifacts(kd.info.run_id, "model")} == {"model/model.json",
                                                                               "model/model.safetensors"}  # fmt: skip
    parent_files = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"report.html", "report.json", "config.yaml"} <= parent_files
    assert (run / "mlartifacts").is_dir()  # artefacts beside the database, not in the working directory


def test_tracking_callbacks_follow_the_settings(tmp_path):
    (tmp_path / "config.yaml").write_text("{}\n")
    model_dir = tmp_path / "students" / "kd"
    assert tracking_callbacks(model_dir, "kd", tensorboard=False) == []
    cbs = tracking_callbacks(model_dir, "kd", mlflow=True)
    assert [type(c) for c in cbs] == [TensorBoardLogger, MLflowLogger]
    assert cbs[0].log_dir == model_dir / "tb"
    assert cbs[1].uri == f"sqlite:///{(tmp_path / 'mlflow.db').resolve()}"  # the run root: where config.yaml is

    class Probe(Callback): ...

    with extra_callbacks(lambda d, label: Probe() if label == "kd" else None):
        assert isinstance(tracking_callbacks(model_dir, "kd", tensorboard=False)[-1], Probe)
        assert tracking_callbacks(model_dir, "teacher", tensorboard=False) == []
    assert tracking_callbacks(model_dir, "kd", tensorboard=False) == []


def test_mlflow_uri_and_cli_flag(tmp_path):
    assert mlflow_uri(None, tmp_path) is None and mlflow_uri(False, tmp_path) is None
    assert mlflow_uri(True, tmp_path) == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert mlflow_uri("http://127.0.0.1:5000", tmp_path) == "http://127.0.0.1:5000"
    for cmd in (["run", "r.yaml"], ["train", "r.yaml"], ["distill", "r.yaml", "--teacher", "t"]):
        assert parser().parse_args([*cmd, "--mlflow"]).overrides == ["tracking.mlflow=true"]
        args = parser().parse_args([*cmd, "--set", "a=1", "--mlflow", "sqlite:///x.db"])
        assert args.overrides == ["a=1", 'tracking.mlflow="sqlite:///x.db"']
        assert parser().parse_args(cmd).overrides == []

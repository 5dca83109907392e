"""Experiment tracking: TensorBoard scalars (on by default) and MLflow runs (optional), as Trainer callbacks.

* :class:`TensorBoardLogger` writes loss parts, accuracy, validation metrics, learning rate and throughput once per
  epoch into ``<model dir>/tb/`` (open with ``tensorboard --logdir RUN``).
* :class:`MLflowLogger` logs one MLflow run per trained model (teacher, each student), nested under one parent run
  per run directory; :func:`log_run` adds the final metrics, the config, the reports and each student's model
  directory as artefacts once the run's reports are written. The default store is ``sqlite:///<run>/mlflow.db``
  with artefacts in ``<run>/mlartifacts`` (``mlflow ui --backend-store-uri sqlite:///RUN/mlflow.db``).
* :func:`extra_callbacks` lets a caller (a sweep) add its own callbacks to every fit inside a ``with`` block,
  without threading them through :mod:`distill.api`.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distill.engine.callbacks import Callback
from distill.errors import ConfigError
from distill.settings import check_mlflow

if TYPE_CHECKING:
    from distill.engine.trainer import Trainer

CallbackFactory = Callable[[Path, str], "Callback | None"]  # (model dir, label) -> a callback or None
_EXTRA: contextvars.ContextVar[tuple[CallbackFactory, ...]] = contextvars.ContextVar("distill_extra", default=())
EXPERIMENT = "distill"


@contextlib.contextmanager
def extra_callbacks(*factories: CallbackFactory) -> Iterator[None]:
    """Inside the block, every :func:`tracking_callbacks` call also returns ``factory(model_dir, label)``."""
    token = _EXTRA.set(_EXTRA.get() + factories)
    try:
        yield
    finally:
        _EXTRA.reset(token)


def tracking_callbacks(
    model_dir: Path,
    label: str,
    *,
    tensorboard: bool = True,
    mlflow: bool | str | None = None,
    params: dict[str, Any] | None = None,
) -> list[Callback]:
    """The tracking callbacks for one fit into ``model_dir`` (plus any added by :func:`extra_callbacks`)."""
    model_dir = Path(model_dir)
    out: list[Callback] = []
    if tensorboard:
        out.append(TensorBoardLogger(model_dir / "tb"))
    uri = mlflow_uri(mlflow, run_root(model_dir))
    if uri:
        out.append(MLflowLogger(uri, run_root(model_dir), model_dir, label, params or {}))
    for factory in _EXTRA.get():
        cb = factory(model_dir, label)
        if cb is not None:
            out.append(cb)
    return out


def run_root(model_dir: Path) -> Path:
    """The run directory holding ``model_dir``: the nearest ancestor with a ``config.yaml`` (else its parent)."""
    model_dir = Path(model_dir).resolve()
    for d in (model_dir, *model_dir.parents):
        if (d / "config.yaml").is_file():
            return d
    return model_dir.parent


def mlflow_uri(setting: bool | str | None, run_dir: Path) -> str | None:
    """``None``/``False`` -> off; ``True``/``"local"`` -> ``sqlite:///<run_dir>/mlflow.db``; else the URI itself."""
    check_mlflow(setting)  # also when used from Python, without a recipe
    if setting is None or setting is False or setting == "":
        return None
    if setting is True or setting == "local":
        return f"sqlite:///{(Path(run_dir).resolve() / 'mlflow.db').as_posix()}"
    return str(setting)


# -- TensorBoard ---------------------------------------------------------------------------------------------------


def epoch_scalars(record: dict[str, Any]) -> dict[str, float]:
    """The scalars of one ``metrics.jsonl`` record, by TensorBoard/MLflow tag (``train/loss``, ``val/acc`` ...)."""
    out = {f"train/{k}": float(v) for k, v in record.get("train", {}).items()}
    for split in ("val", "test"):
        out.update({f"{split}/{k}": float(v) for k, v in record.get(split, {}).items()})
    if "lr" in record:
        out["lr"] = float(record["lr"])
    if "images_per_second" in record:
        out["throughput/images_per_second"] = float(record["images_per_second"])
    if "train_seconds" in record:
        out["time/train_seconds"] = float(record["train_seconds"])
    return out


class TensorBoardLogger(Callback):
    """Per-epoch scalars into ``log_dir`` with :class:`torch.utils.tensorboard.SummaryWriter`.

    On resume the events after the checkpoint's epoch are purged, so curves never double back.
    """

    _warned = False

    def __init__(self, log_dir: Path) -> None:
        self.log_dir, self.writer = Path(log_dir), None

    def on_fit_start(self, trainer: Trainer) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard not installed: say so once, train anyway
            if not TensorBoardLogger._warned:
                print(
                    "distill: tensorboard is not installed; no TensorBoard logs (pip install tensorboard)",
                    file=sys.stderr,
                )
                TensorBoardLogger._warned = True
            return
        purge = trainer.state.epoch + 1 if trainer.state.epoch else None
        self.writer = SummaryWriter(str(self.log_dir), purge_step=purge)

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if self.writer is None:
            return
        for tag, value in epoch_scalars(record).items():
            self.writer.add_scalar(tag, value, record["epoch"])
        self.writer.flush()

    def on_fit_end(self, trainer: Trainer) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


# -- MLflow --------------------------------------------------------------------------------------------------------


_CLIENTS: dict[str, tuple[Any, str, int | None]] = {}


def _client(uri: str, run_dir: Path) -> tuple[Any, str]:
    """An ``MlflowClient`` for ``uri`` and the id of the ``distill`` experiment (created when missing); kept per URI
    and process, since opening a SQLite store checks its schema every time (seconds)."""
    cached = _CLIENTS.get(uri)
    if cached is None or cached[2] != _db_identity(uri):  # new, or the file was replaced (a run --overwrite)
        client, exp = _new_client(uri)
        cached = _CLIENTS[uri] = (client, exp, _db_identity(uri))
    return cached[0], cached[1]


def _db_identity(uri: str) -> int | None:
    """The inode of a SQLite store's file (a run directory replaced by --overwrite gets a new one), else None."""
    if not uri.startswith("sqlite:///"):
        return 0
    path = Path(uri[len("sqlite:///") :])
    return path.stat().st_ino if path.is_file() else None


def _new_client(uri: str) -> tuple[Any, str]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from mlflow.tracking import MlflowClient
    except ImportError as e:
        raise ConfigError("tracking.mlflow (--mlflow) needs the mlflow package: pip install 'mlflow>=2.10'") from e
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is not None:
        return client, exp.experiment_id
    location = None
    if uri.startswith("sqlite:///"):  # keep artefacts beside the database, not in the current directory
        location = (Path(uri[len("sqlite:///") :]).resolve().parent / "mlartifacts").as_uri()
    return client, client.create_experiment(EXPERIMENT, artifact_location=location)


def _find_or_create(client: Any, exp: str, tags: dict[str, str], name: str, key: str) -> str:
    """The id of the run whose tag ``key`` equals ``tags[key]``; created (with ``tags``) when there is none."""
    found = client.search_runs([exp], filter_string=f"tags.{key} = '{_quote(tags[key])}'", max_results=1)
    if found:
        return found[0].info.run_id
    return client.create_run(exp, run_name=name, tags=tags).info.run_id


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'")


def parent_run(client: Any, exp: str, run_dir: Path) -> str:
    run_dir = Path(run_dir).resolve()
    return _find_or_create(client, exp, {"distill_run_dir": str(run_dir)}, run_dir.name, "distill_run_dir")


def model_run(client: Any, exp: str, run_dir: Path, model_dir: Path, label: str) -> str:
    tags = {
        "distill_model_dir": str(Path(model_dir).resolve()),
        "distill_label": label,
        "mlflow.parentRunId": parent_run(client, exp, run_dir),
    }
    return _find_or_create(client, exp, tags, label, "distill_model_dir")


def _log_params(client: Any, run_id: str, params: dict[str, Any]) -> None:
    from mlflow.entities import Param

    items = [
        Param(str(k)[:250], json.dumps(v, default=str)[:6000] if not isinstance(v, str) else v[:6000])
        for k, v in params.items()
    ]
    for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
        try:
            client.log_batch(run_id, params=items[i : i + 100])
        except Exception:  # a resumed run re-logging a param is refused by some stores; one by one keeps the rest
            for p in items[i : i + 100]:
                with contextlib.suppress(Exception):
                    client.log_param(run_id, p.key, p.value)


def _log_metrics(client: Any, run_id: str, values: dict[str, float], step: int) -> None:
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [Metric(_metric_key(k), float(v), now, step) for k, v in values.items() if v is not None]
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i : i + 1000])


def _metric_key(key: str) -> str:
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in key)


class MLflowLogger(Callback):
    """One MLflow run per trained model: its hyper-parameters, and every epoch's scalars at step = epoch."""

    def __init__(self, uri: str, run_dir: Path, model_dir: Path, label: str, params: dict[str, Any]) -> None:
        self.uri, self.run_dir, self.model_dir, self.label, self.params = uri, run_dir, model_dir, label, params
        self.client, self.run_id = None, None

    def on_fit_start(self, trainer: Trainer) -> None:
        self.client, exp = _client(self.uri, self.run_dir)
        self.run_id = model_run(self.client, exp, self.run_dir, self.model_dir, self.label)
        _log_params(self.client, self.run_id, flatten(self.params))

    def on_epoch_end(self, trainer: Trainer, record: dict[str, Any]) -> None:
        _log_metrics(self.client, self.run_id, epoch_scalars(record), record["epoch"])

    def on_fit_end(self, trainer: Trainer) -> None:
        if self.client is not None and self.run_id is not None:
            finished = trainer.state.epoch >= trainer.epochs or trainer.state.stop
            self.client.set_terminated(self.run_id, "FINISHED" if finished else "KILLED")


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (lists stay values)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


FINAL_METRICS = ("accuracy", "top5", "nll", "ece", "agreement", "gap_recovered", "params", "size_bytes")


def _final(row: dict[str, Any]) -> dict[str, float]:
    keys = [*FINAL_METRICS, *(k for k in row if k.startswith(("latency_ms_", "speedup_")))]
    return {
        f"test/{k}" if k in ("accuracy", "top5", "nll", "ece", "agreement") else k: row[k]
        for k in keys
        if isinstance(row.get(k), (int, float)) and not isinstance(row.get(k), bool)
    }


def log_run(run_dir: Path, report: dict[str, Any], setting: bool | str | None) -> str | None:
    """After a run's reports are written: its config, final metrics and reports on the parent MLflow run, and
    each student's model directory (``model.json`` + ``model.safetensors``) on the student's run. Returns the
    parent run id (``None`` when MLflow tracking is off)."""
    run_dir = Path(run_dir).resolve()
    uri = mlflow_uri(setting, run_dir)
    if not uri:
        return None
    client, exp = _client(uri, run_dir)
    parent = parent_run(client, exp, run_dir)
    _log_params(client, parent, flatten(report.get("config", {})))
    values = {f"{report['teacher']['name']}/{k}": v for k, v in _final(report["teacher"]).items()}
    for s in report["students"]:
        values.update({f"{s['name']}/{k}": v for k, v in _final(s).items()})
    _log_metrics(client, parent, values, 0)
    for name in ("report.html", "report.json", "report.md", "config.yaml", "sweep.json"):
        if (run_dir / name).is_file():
            client.log_artifact(parent, str(run_dir / name))
    for row, sub in [(report["teacher"], "teacher"), *((s, f"students/{s['name']}") for s in report["students"])]:
        model_dir = run_dir / sub
        run_id = model_run(client, exp, run_dir, model_dir, row["name"])
        _log_metrics(client, run_id, _final(row), 0)
        if sub != "teacher":
            for name in ("model.json", "model.safetensors"):
                if (model_dir / name).is_file():
                    client.log_artifact(run_id, str(model_dir / name), artifact_path="model")
        client.set_terminated(run_id, "FINISHED")
    client.set_terminated(parent, "FINISHED")
    return parent

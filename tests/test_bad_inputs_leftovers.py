"""Bad inputs that used to slip through: an ``tracking.mlflow`` value MLflow cannot use, an open-ended range shown
with a closed infinite bound, and ``DataModule(labeled_fraction=...)`` outside (0, 1] from Python."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from distill import settings
from distill.config import load_config
from distill.config.schema import DataConfig, TrackingConfig
from distill.data.base import load_dataset
from distill.data.module import DataModule
from distill.engine.tracking import mlflow_uri, tracking_callbacks
from distill.errors import ConfigError, DataError
from distill.settings import check_range

ROOT = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------------------------------ tracking.mlflow

BAD_MLFLOW = [
    "not a uri at all",
    "mlruns",  # a plain directory: MLflow no longer writes file stores
    "/tmp/mlruns",
    "file:///tmp/mlruns",
    "bogus://host",
    "sqlite:///",  # no database file
    "http://",  # no host
    "locale",
]


@pytest.mark.parametrize("value", BAD_MLFLOW)
def test_recipe_refuses_an_mlflow_setting_mlflow_cannot_use(value):
    with pytest.raises(ConfigError) as e:
        load_config(None, [f"tracking.mlflow={value!r}"])
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("tracking: mlflow must be null or false (off), true or 'local'")
    assert "sqlite:///PATH.db" in msg and "http(s)://HOST[:PORT]" in msg and f"got {value!r}" in msg


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        "",
        "local",
        "sqlite:///x.db",
        "sqlite:////abs/path/mlflow.db",
        "http://127.0.0.1:5000",
        "https://mlflow.example.org",
        "postgresql://user:pw@db/mlflow",
        "postgresql+psycopg2://db/mlflow",
        "mysql://db/mlflow",
        "databricks",
        "databricks://profile",
    ],
)
def test_mlflow_settings_that_mlflow_can_use_are_accepted(value):
    assert TrackingConfig(mlflow=value).mlflow == value
    settings.check_mlflow(value)  # the one check, shared by the schema and the tracking callbacks


def test_mlflow_setting_is_also_refused_from_python_before_any_callback(tmp_path):
    with pytest.raises(ConfigError, match=r"^tracking\.mlflow must be .*got 'not a uri at all'$"):
        mlflow_uri("not a uri at all", tmp_path)
    with pytest.raises(ConfigError, match=r"^tracking\.mlflow must be .*got 3$"):
        mlflow_uri(3, tmp_path)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^tracking\.mlflow must be"):
        tracking_callbacks(tmp_path / "students" / "kd", "kd", tensorboard=False, mlflow="nonsense")
    assert not (tmp_path / "students").exists()


def test_cli_refuses_a_bad_mlflow_uri_in_one_line_before_the_run_directory(tmp_path, capsys, monkeypatch):
    from distill import api
    from distill.cli import main

    def reached(*a, **k):  # should the check be missing: fail here, not after minutes of training
        raise AssertionError("a bad tracking.mlflow got as far as loading the data")

    monkeypatch.setattr(api, "load_data", reached)
    out = tmp_path / "out"
    argv = ["run", str(ROOT / "configs/smoke.yaml"), "--out", str(out), "--set", "data.name=synthetic"]
    code = main([*argv, "--mlflow", "not a uri at all"])
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1, lines
    assert re.match(r"distill: error: tracking: mlflow must be .*got 'not a uri at all'$", lines[0]), lines[0]
    assert not out.exists()


# ------------------------------------------------------------------------------------------ check_range messages


@pytest.mark.parametrize(
    ("kwargs", "value", "message"),
    [
        ({"lo": 0.0, "lo_open": True}, -1, "x must be in (0.0, inf), got -1"),
        ({"lo": 0.0}, -0.5, "x must be in [0.0, inf), got -0.5"),
        ({"lo": 1}, 0, "x must be in [1, inf), got 0"),
        ({"hi": 1.0}, 2, "x must be in (-inf, 1.0], got 2"),
        ({"hi": 1.0, "hi_open": True}, 1.0, "x must be in (-inf, 1.0), got 1.0"),
        ({"lo": 0.0, "hi": 1.0}, 1.5, "x must be in [0.0, 1.0], got 1.5"),
        ({"lo": 0.0, "hi": 1.0, "hi_open": True}, 1.0, "x must be in [0.0, 1.0), got 1.0"),
        ({"lo": 0.0, "hi": 1.0, "lo_open": True}, 0.0, "x must be in (0.0, 1.0], got 0.0"),
        ({"lo": 0.0, "lo_open": True}, math.nan, "x must be in (0.0, inf), got nan"),
    ],
)
def test_check_range_shows_an_infinite_bound_open(kwargs, value, message):
    with pytest.raises(ConfigError) as e:
        check_range("x", value, **kwargs)
    assert str(e.value) == message


def test_check_range_message_through_a_recipe():
    with pytest.raises(ConfigError) as e:
        load_config(None, ["train.lr=-0.1"])
    assert str(e.value) == "train: lr must be in (0.0, inf), got -0.1"


# ------------------------------------------------------------------------------------------ labeled_fraction


@pytest.fixture(scope="module")
def data():
    return load_dataset("synthetic", n_train=60, n_test=10, num_classes=3, size=4, seed=0)


@pytest.mark.parametrize("bad", [1.5, 2, 1.0000001, 0, 0.0, -0.5, math.nan, math.inf, -math.inf])
def test_datamodule_refuses_a_labeled_fraction_outside_0_1(data, bad):
    with pytest.raises(DataError) as e:
        DataModule(data, labeled_fraction=bad)
    msg = str(e.value)
    assert msg.startswith("labeled_fraction must be in (0, 1]") and msg.endswith(f"got {bad}") and "\n" not in msg


@pytest.mark.parametrize("bad", ["0.5", None, True])
def test_datamodule_refuses_a_labeled_fraction_that_is_no_number(data, bad):
    with pytest.raises(DataError, match=r"^labeled_fraction must be a number in \(0, 1\], got "):
        DataModule(data, labeled_fraction=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("good", [1, 1.0, 0.5, 1e-9])
def test_datamodule_accepts_the_range_the_recipe_schema_accepts(data, good):
    assert DataConfig(labeled_fraction=good).labeled_fraction == good  # the schema agrees
    dm = DataModule(data, labeled_fraction=good)
    assert 1 <= dm.num_labeled <= len(dm.x_train)
    assert (dm.num_labeled == len(dm.x_train)) == (good == 1)


@pytest.mark.parametrize("bad", [1.5, 0, -0.5, math.nan])
def test_recipe_schema_refuses_the_same_labeled_fractions(bad):
    with pytest.raises(ConfigError, match=r"labeled_fraction must be a fraction in \(0, 1\]"):
        DataConfig(labeled_fraction=bad)

"""The layering of ``distill`` (``[tool.importlinter]`` in pyproject.toml) holds: ``lint-imports`` keeps every contract.

A module-level import and an import inside a function count the same, so a cycle cannot hide in a function.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"


def lint_imports(config: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "lint-imports"  # the venv's, beside the interpreter running the tests
    if not exe.is_file():
        pytest.fail("lint-imports is missing: pip install import-linter (in the dev extra: pip install -e .[dev])")
    return subprocess.run(
        [str(exe), str(config), "--no-cache", "--no-logo"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_the_import_contracts_are_kept():
    result = lint_imports(PYPROJECT)
    assert result.returncode == 0, f"the layering is broken (see pyproject.toml [tool.importlinter]):\n{result.stdout}"
    assert "0 broken" in result.stdout


def test_the_contracts_name_the_layers_from_the_cli_down_to_errors():
    contracts = tomllib.loads(PYPROJECT.read_text())["tool"]["importlinter"]["contracts"]
    layers = next(c for c in contracts if c["id"] == "layers")["layers"]
    assert layers[0] == "distill.__main__" and layers[-1] == "distill.errors"
    assert layers.index("distill.io") == len(layers) - 2  # I/O imports nothing of distill but the errors
    assert not any(c.get("ignore_imports") for c in contracts)  # no known violation is waved through
    listed = {m.strip() for layer in layers for m in layer.split("|")}
    src = ROOT / "src" / "distill"
    modules = {f"distill.{p.stem}" for p in src.glob("*.py") if p.stem != "__init__"}
    modules |= {f"distill.{p.parent.name}" for p in src.glob("*/__init__.py")}
    assert modules - listed == set(), "every top-level module of distill belongs to a layer"


def test_a_broken_contract_fails(tmp_path):
    # the same contracts with io and errors swapped: distill.io imports distill.errors, which is now above it
    text = PYPROJECT.read_text()
    swapped = re.sub(r'"distill\.io",\n(\s*)"distill\.errors",', r'"distill.errors",\n\1"distill.io",', text)
    assert swapped != text
    config = tmp_path / "pyproject.toml"
    config.write_text(swapped)
    result = lint_imports(config)
    assert result.returncode != 0
    assert "distill.io is not allowed to import distill.errors" in result.stdout


def _modules_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys\nprint(' '.join(m for m in sys.modules if m == 'distill' or m.startswith('distill.')))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return set(out.stdout.split())


def test_io_and_artifacts_import_nothing_above_them():
    assert _modules_after("import distill.io") == {"distill", "distill.io", "distill.errors"}
    assert _modules_after("import distill.artifacts") == {
        "distill",
        "distill.io",
        "distill.errors",
        "distill.trust",
        "distill.artifacts",
    }


def test_load_model_imports_only_the_format_it_meets(tmp_path):
    from distill.artifacts import save_model
    from distill.models.zoo import create_model

    spec = {"model": "mlp", "num_classes": 3, "in_channels": 1, "kwargs": {"hidden": [8]}}
    save_model(tmp_path / "m", create_model("mlp", 3, 1, hidden=[8]), spec)
    loaded = _modules_after(f"from distill.artifacts import load_model\nload_model({str(tmp_path / 'm')!r})")
    assert "distill.models.zoo" in loaded  # the plain format registers itself from the models package
    assert not any(m.startswith(("distill.compress", "distill.text", "distill.engine", "distill.api")) for m in loaded)


def test_model_format_reads_model_json():
    from distill.artifacts import base_format, model_format

    assert model_format({"model": "small_cnn"}) == "plain"
    assert model_format({"model": "torchvision:resnet18"}) == "plain"
    assert model_format({"model": "class:net.py:Net"}) == "foreign"
    assert model_format({"model": "onnx:model"}) == "foreign"
    assert model_format({"model": "small_cnn", "architecture": {"layers": {}}}) == "pruned"
    assert model_format({"model": "small_cnn", "architecture": {"layers": {}}, "quantization": {}}) == "int8"
    assert model_format({"model": "hf", "task": "text"}) == "text"
    assert base_format({"model": "hf", "task": "text"}) == "plain"  # a text model's "hf" is no foreign prefix

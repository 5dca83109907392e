"""Compression stages are registered (:data:`distill.compress.stages.COMPRESS_STAGES`) and run in their order."""

from __future__ import annotations

import pytest

from distill import api
from distill import config as C
from distill.artifacts import save_model

QUICK = ["data.name=synthetic", "data.train_subset=64", "data.test_subset=32", "device=cpu", "bench.batch_sizes=[1]"]


def test_the_built_in_stages_and_their_declarations():
    from distill.compress.stages import stage_order

    stages = {s.name: s for s in stage_order()}
    assert list(stages) == ["prune", "recover", "quantize", "export"]
    assert stages["prune"].produces == ("model", "spec") and stages["export"].rows == ("onnx", "onnx_int8")
    assert "frozen model" in stages["quantize"].needs and "frozen model" not in stages["recover"].needs


def test_a_registered_stage_runs_at_its_position(tiny, synth, tmp_path):
    from distill.compress.pipeline import compress, load_recipe
    from distill.compress.stages import COMPRESS_STAGES, register_stage, stage_order

    assert [s.name for s in stage_order()] == ["prune", "recover", "quantize", "export"]
    seen = []

    @register_stage("toy", 25, needs=("model", "spec"), rows=("toy",), applies=lambda cfg: cfg.recover.enabled)
    def toy(run, carry):
        seen.append(carry.spec["model"])
        run.add("toy", carry.model, None, runtime="toy")

    try:
        assert [s.name for s in stage_order()] == ["prune", "recover", "toy", "quantize", "export"]
        with pytest.raises(ValueError, match="order 25 is 'toy'"):
            register_stage("toy2", 25)(toy)
        with pytest.raises(ValueError, match="unknown 'weights'"):
            register_stage("toy3", 26, needs=("weights",))(toy)
        save_model(tmp_path / "in", tiny(), api.model_spec(C.ModelConfig("cnn", {"width": 4, "blocks": 1}), synth))
        sets = [*QUICK, "prune.kind=unstructured", "recover.train.epochs=1", "bench.latency=false",
                "quantize.calibration_images=32", "export.enabled=false"]  # fmt: skip
        report = compress(tmp_path / "in", load_recipe(None, sets), tmp_path / "out")
        assert [r["stage"] for r in report["stages"]] == ["input", "pruned", "recovered", "toy", "quantized"]
        assert seen == ["cnn"] and "| toy | toy |" in (tmp_path / "out" / "report.md").read_text()
        off = compress(tmp_path / "in", load_recipe(None, [*sets, "recover.enabled=false"]), tmp_path / "off")
        assert [r["stage"] for r in off["stages"]] == ["input", "pruned", "quantized"]  # toy applies with recover
    finally:
        COMPRESS_STAGES.remove("toy")
    assert "toy" not in COMPRESS_STAGES and len(stage_order()) == 4

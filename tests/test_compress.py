"""Compression: pruning (unstructured and structural), saving pruned models, int8 quantization, ONNX, the command."""

from __future__ import annotations

import copy
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from distill import api
from distill import config as C
from distill.artifacts import load_model, save_model
from distill.compress import prune as P
from distill.compress import quantize as Q
from distill.errors import CheckpointError, ConfigError, DistillError, UnknownNameError
from distill.models.zoo import create_model
from trust_helpers import tamper_and_rehash


def trained(model: nn.Module, dm, steps: int = 40, lr: float = 0.05) -> nn.Module:
    """A few SGD steps on the synthetic data: enough for well-above-chance accuracy."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    done = 0
    while done < steps:
        for b in dm.train_batches(done, "cpu"):
            opt.zero_grad()
            F.cross_entropy(model(b.x), b.y).backward()
            opt.step()
            done += 1
            if done >= steps:
                break
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, dm) -> float:
    model.eval()
    right = n = 0
    for b in dm.eval_batches("test"):
        right += int((model(b.x).argmax(1) == b.y).sum())
        n += len(b.y)
    return right / n


@pytest.fixture
def cnn(dm):
    torch.manual_seed(0)
    return trained(create_model("cnn", num_classes=4, in_channels=1, width=8, blocks=1), dm)


def spec_for(name: str, kwargs: dict, synth) -> dict:
    return api.model_spec(C.ModelConfig(name, kwargs), synth)


# --- unstructured --------------------------------------------------------------------------------------------------


def test_unstructured_layerwise_sparsity_is_exact(tiny):
    model = tiny(width=4)
    report = P.unstructured_prune(model, 0.37, steps=3, schedule="cubic")
    assert set(report["layers"]) == {n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    for name, row in report["layers"].items():
        w = model.get_submodule(name).weight
        assert row["pruned"] == round(0.37 * w.numel())  # to the weight
        assert int((w == 0).sum()) >= row["pruned"]
    assert not any(n.endswith("_orig") for n, _ in model.named_parameters())  # made permanent
    assert int((model.fc.weight == 0).sum()) == 0  # the classifier is left alone


def test_unstructured_global_sparsity_and_masks_survive_training(tiny, dm):
    model = tiny(width=4)
    seen = []
    report = P.unstructured_prune(model, 0.6, scope="global", steps=2, between=seen.append, permanent=False)
    total = sum(r["weights"] for r in report["layers"].values())
    assert abs(sum(r["pruned"] for r in report["layers"].values()) - 0.6 * total) <= 1
    assert seen == [0, 1]
    trained(model, dm, steps=3)  # fine-tuning with the masks attached keeps pruned weights at zero
    P.make_permanent(model)
    after = P.sparsity_report(model, P.prunable_layers(model))
    assert after["sparsity"] >= report["sparsity"] - 1 / total


# --- structural ----------------------------------------------------------------------------------------------------


def test_structured_halves_channels_and_keeps_classifier(cnn, dm, synth):
    pytest.importorskip("torch_pruning")
    x = next(iter(dm.eval_batches("test"))).x
    before = P.channel_counts(cnn)
    n_before = sum(p.numel() for p in cnn.parameters())
    report = P.structured_prune(cnn, x[:8], ratio=0.5)
    after = P.channel_counts(cnn)
    for name, (old, new) in report["channels"].items():
        if name != "fc":
            assert new == old // 2, name
    assert after["fc"] == before["fc"] == 4 and cnn.fc.in_features == 16
    assert report["params_after"] < n_before / 2
    assert cnn(x).shape == (len(x), 4)


@pytest.mark.parametrize("importance", ["l2", "taylor", "random"])
def test_structured_importances(importance, tiny, dm):
    pytest.importorskip("torch_pruning")
    model = tiny(width=8)
    batches = [(b.x, b.y) for b, _ in zip(dm.train_batches(0), range(2), strict=False)]
    x = batches[0][0]
    report = P.structured_prune(model, x[:4], ratio=0.25, importance=importance, grad_batches=batches)
    assert report["channels"]["layer1.0.0"] == [8, 6]
    assert model(x).shape == (len(x), 4)


def test_structured_parameter_budget(tiny):
    pytest.importorskip("torch_pruning")
    model = tiny(width=8)
    n = sum(p.numel() for p in model.parameters())
    report = P.structured_prune(model, torch.randn(2, 1, 28, 28), target_params=n // 3, steps=10)
    assert report["params_after"] <= n // 3 < report["params_before"]
    with pytest.raises(DistillError, match="could not reach"):
        P.structured_prune(tiny(width=8), torch.randn(2, 1, 28, 28), target_params=10, max_ratio=0.5, steps=2)


def test_pruned_model_round_trips_in_a_fresh_process_without_torch_pruning(cnn, dm, synth, tmp_path):
    pytest.importorskip("torch_pruning")
    x = next(iter(dm.eval_batches("test"))).x[:16]
    P.structured_prune(cnn, x, ratio=0.5, ignore=["layer1"])
    P.save_pruned(tmp_path / "pruned", cnn, spec_for("cnn", {"width": 8, "blocks": 1}, synth))
    with torch.no_grad():
        save_file({"x": x, "y": cnn(x)}, str(tmp_path / "io.safetensors"))
    code = textwrap.dedent(f"""
        import sys, torch
        from safetensors.torch import load_file
        from distill.artifacts import load_model
        from distill.compress import load_compressed
        model, spec = load_compressed({str(tmp_path / "pruned")!r})
        generic, _ = load_model({str(tmp_path / "pruned")!r})  # what evaluate / teacher.checkpoint use
        io = load_file({str(tmp_path / "io.safetensors")!r})
        assert "torch_pruning" not in sys.modules
        assert model.layer1[0][0].out_channels == 8 and model.layer2[1][0].out_channels == 8
        with torch.no_grad():
            assert torch.allclose(model.eval()(io["x"]), io["y"], atol=1e-6)
            assert torch.allclose(generic.eval()(io["x"]), io["y"], atol=1e-6)
        print("ok", len(spec["architecture"]["layers"]))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("ok")


def test_bad_pruning_inputs(tiny, tmp_path):
    pytest.importorskip("torch_pruning")
    x = torch.randn(2, 1, 28, 28)
    for ratio in (1.0, -0.1, 1.5):
        with pytest.raises(ConfigError, match=r"ratio must be in \[0, 1\)"):
            P.structured_prune(tiny(), x, ratio=ratio)
        with pytest.raises(ConfigError, match=r"amount must be in \[0, 1\)"):
            P.unstructured_prune(tiny(), ratio)
    with pytest.raises(UnknownNameError, match="layer2"):
        P.structured_prune(tiny(), x, ignore=["layer_2"])
    with pytest.raises(ConfigError, match="importance"):
        P.structured_prune(tiny(), x, importance="l3")
    with pytest.raises(ConfigError, match="grad_batches"):
        P.structured_prune(tiny(), x, importance="taylor")
    with pytest.raises(CheckpointError, match="does not exist"):
        from distill.compress.pipeline import load_input

        load_input(tmp_path / "nowhere")


# --- quantization --------------------------------------------------------------------------------------------------


def test_static_int8_is_close_and_round_trips(cnn, dm, synth, tmp_path):
    calib = [b.x for b in dm.eval_batches("train")]
    q = Q.quantize_static(cnn, calib)
    float_acc, int8_acc = accuracy(cnn, dm), accuracy(q.model, dm)
    assert float_acc > 0.6
    assert abs(float_acc - int8_acc) <= 0.03
    x = next(iter(dm.eval_batches("test"))).x
    with torch.no_grad():
        ref, out = cnn(x), q.model(x)
    assert (out - ref).abs().max() < 0.1 * ref.abs().max()
    assert Q.int8_bytes(q.model) < 0.5 * sum(p.numel() * 4 for p in cnn.parameters())
    Q.save_quantized(tmp_path / "q", q, spec_for("cnn", {"width": 8, "blocks": 1}, synth))
    again, spec = Q.load_quantized(tmp_path / "q")
    assert spec["quantization"]["mode"] == "static"
    with torch.no_grad():
        assert torch.equal(again(x), out)  # the stored observer statistics rebuild the same int8 model
    generic, _ = load_model(tmp_path / "q")
    with torch.no_grad():
        assert torch.equal(generic(x), out)


def test_dynamic_int8_for_an_mlp(dm):
    torch.manual_seed(0)
    mlp = trained(create_model("mlp", num_classes=4, in_channels=1, hidden=[64]), dm)
    q = Q.quantize_dynamic(mlp)
    assert abs(accuracy(mlp, dm) - accuracy(q.model, dm)) <= 0.03
    with pytest.raises(DistillError, match="no Linear"):
        Q.quantize_dynamic(nn.Sequential(nn.Conv2d(1, 2, 3)))


def test_qat_by_distillation(cnn, dm):
    from distill.distillers.base import build_distiller
    from distill.engine.trainer import OptimSettings, Trainer

    x = next(iter(dm.eval_batches("train"))).x
    prepared = Q.prepare_qat(cnn, x)
    distiller = build_distiller("kd", prepared, copy.deepcopy(cnn), dm.input_shape)
    Trainer(distiller, dm, OptimSettings(epochs=1, lr=1e-3, weight_decay=0.0)).fit()
    q = Q.finish_qat(prepared)
    assert accuracy(q.model, dm) >= accuracy(cnn, dm) - 0.05  # an epoch of KD may even raise it


def test_bad_quantization_inputs(tiny):
    with pytest.raises(ConfigError, match="quantization mode"):
        Q.check_mode("int4")
    with pytest.raises(ConfigError, match="backend"):
        Q.set_backend("tpu")
    with pytest.raises(DistillError, match="calibration"):
        Q.quantize_static(tiny(), [])


# --- ONNX ----------------------------------------------------------------------------------------------------------


def test_onnx_matches_pytorch_and_int8_onnx_runs(cnn, dm, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from distill.compress import export as E

    x = next(iter(dm.eval_batches("test"))).x
    path = E.export_onnx(cnn, tmp_path / "m.onnx", x[:2], exporter="torchscript")
    check = E.check_onnx(path, cnn, x, atol=1e-4)  # a batch size other than the traced one: dynamic batch
    assert check["max_abs_diff"] <= 1e-4
    assert E.ort_latency_ms(path, (1, 28, 28), 1, repeats=2) > 0
    q8 = E.quantize_onnx(path, tmp_path / "m8.onnx", [b.x for b in dm.eval_batches("train")])
    logits, y = E.ort_predict(q8, dm.eval_batches("test"))
    assert abs(float((logits.argmax(1) == y).float().mean()) - accuracy(cnn, dm)) <= 0.05
    with pytest.raises(DistillError, match=r"cannot export torch\.ao int8"):
        E.export_onnx(Q.quantize_static(cnn, [x]).model, tmp_path / "q.onnx", x[:2])
    with pytest.raises(ConfigError, match="exporter"):
        E.export_onnx(cnn, tmp_path / "m.onnx", x[:2], exporter="tflite")


@pytest.mark.slow
def test_onnx_default_exporter(cnn, dm, tmp_path):
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    from distill.compress import export as E

    x = next(iter(dm.eval_batches("test"))).x
    path = E.export_onnx(cnn, tmp_path / "m.onnx", x[:2])
    assert E.check_onnx(path, cnn, x)["max_abs_diff"] <= 1e-4


# --- the command ---------------------------------------------------------------------------------------------------


def test_compress_command_end_to_end(cnn, synth, tmp_path, capsys):
    pytest.importorskip("torch_pruning")
    pytest.importorskip("onnxruntime")
    from distill.cli import main

    save_model(tmp_path / "in", cnn, spec_for("cnn", {"width": 8, "blocks": 1}, synth))
    args = ["compress", "--model", str(tmp_path / "in"), "--recipe", "configs/compress.yaml", "--out"]
    sets = [
        "data.name=synthetic", "data.val_size=32", "data.batch_size=32", "device=cpu", "recover.train.epochs=1",
        "bench.batch_sizes=[1]", "bench.repeats=2", "quantize.calibration_images=64", "export.exporter=torchscript",
    ]  # fmt: skip
    argv = [*args, str(tmp_path / "out"), *[f"--set={s}" for s in sets]]
    assert main(argv) == 0
    import json

    report = json.loads((tmp_path / "out" / "report.json").read_text())
    stages = {r["stage"]: r for r in report["stages"]}
    assert list(stages) == ["input", "pruned", "recovered", "quantized", "onnx", "onnx_int8"]
    assert stages["pruned"]["params"] < stages["input"]["params"] / 2
    assert stages["onnx"]["check"]["max_abs_diff"] <= 1e-4
    assert all("latency_ms_b1" in r and "acc_drop" in r for r in stages.values())
    assert (tmp_path / "out" / "quantized" / "model.safetensors").is_file()
    assert "| quantized |" in (tmp_path / "out" / "report.md").read_text()
    # bad inputs are one-line errors with exit code 2
    capsys.readouterr()
    assert main([*args, str(tmp_path / "o2"), "--set=prune.ratio=1.0", "--set=data.name=synthetic"]) == 2
    assert "prune.ratio must be in [0, 1)" in capsys.readouterr().err
    assert main([*args, str(tmp_path / "o3"), "--set=prune.ignore=[layer9]", "--set=data.name=synthetic"]) == 2
    assert "unknown layer to ignore 'layer9'" in capsys.readouterr().err
    assert main(["compress", "--model", str(tmp_path / "missing"), "--out", str(tmp_path / "o4")]) == 2
    assert "does not exist" in capsys.readouterr().err


# --- trust: --key, text models -------------------------------------------------------------------------------------


OFF = ["prune.enabled=false", "recover.enabled=false", "quantize.enabled=false", "export.enabled=false"]
QUICK = ["data.name=synthetic", "data.train_subset=64", "data.test_subset=32", "device=cpu", "bench.batch_sizes=[1]"]


def test_compress_key_refuses_unsigned_and_tampered_models(tiny, synth, tmp_path, capsys):
    from distill.cli import main
    from distill.trust import generate_keypair, sign_model

    generate_keypair(tmp_path / "k.key", tmp_path / "k.pub")
    model_dir = tmp_path / "in"
    save_model(model_dir, tiny(), spec_for("cnn", {"width": 4, "blocks": 1}, synth))
    base = ["compress", "--model", str(model_dir), "--key", str(tmp_path / "k.pub"), "--out"]
    sets = [f"--set={s}" for s in (*OFF, *QUICK, "bench.repeats=2")]

    def refused(match: str) -> None:
        capsys.readouterr()
        assert main([*base, str(tmp_path / "out"), *sets]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("distill: error:") and match in err[0]
        assert not (tmp_path / "out").exists()

    refused("is not signed")
    sign_model(model_dir, tmp_path / "k.key")
    assert main([*base, str(tmp_path / "ok"), *sets]) == 0  # signed and intact: accepted
    tamper_and_rehash(model_dir)
    P.read_spec(model_dir)  # the recomputed sha256 matches: only the signature catches the change
    refused("model.safetensors changed after signing")


def test_compress_key_also_covers_recover_teacher(tiny, synth, tmp_path):
    from distill.compress.pipeline import compress, load_recipe
    from distill.trust import generate_keypair, sign_model

    generate_keypair(tmp_path / "k.key", tmp_path / "k.pub")
    spec = spec_for("cnn", {"width": 4, "blocks": 1}, synth)
    save_model(tmp_path / "in", tiny(), spec)
    save_model(tmp_path / "teacher", tiny(width=8), spec_for("cnn", {"width": 8, "blocks": 1}, synth))
    sign_model(tmp_path / "in", tmp_path / "k.key")
    cfg = load_recipe(None, [*OFF, *QUICK, f"recover.teacher={tmp_path / 'teacher'}"])
    with pytest.raises(CheckpointError, match=r"teacher is not signed"):
        compress(tmp_path / "in", cfg, tmp_path / "out", public_key=tmp_path / "k.pub")
    assert not (tmp_path / "out").exists()


def test_compress_refuses_a_text_model_in_one_line(tiny, tmp_path, capsys):
    from distill.cli import main

    save_model(tmp_path / "text", tiny(), {"task": "text", "model": "cnn", "num_classes": 4, "kwargs": {}})
    sets = [f"--set={s}" for s in OFF]  # no optional package needed to reach the check
    assert main(["compress", "--model", str(tmp_path / "text"), "--out", str(tmp_path / "out"), *sets]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is a text model" in err[0] and "image models only" in err[0]
    assert not (tmp_path / "out").exists()


def test_save_quantized_writes_format_and_sha256_and_load_compressed_checks_the_key(synth, tmp_path):
    import json

    from distill.artifacts import MODEL_FORMAT, sha256_file
    from distill.compress import load_compressed
    from distill.trust import generate_keypair, sign_model

    torch.manual_seed(0)
    mlp = create_model("mlp", num_classes=4, in_channels=1, hidden=[16]).eval()
    q = Q.quantize_dynamic(mlp)
    stale = {**spec_for("mlp", {"hidden": [16]}, synth), "format": 99, "sha256": "0" * 64}
    Q.save_quantized(tmp_path / "q", q, stale)
    meta = json.loads((tmp_path / "q" / "model.json").read_text())
    assert meta["format"] == MODEL_FORMAT and meta["sha256"] == sha256_file(tmp_path / "q" / "model.safetensors")
    generate_keypair(tmp_path / "k.key", tmp_path / "k.pub")
    with pytest.raises(CheckpointError, match="is not signed"):
        load_compressed(tmp_path / "q", public_key=tmp_path / "k.pub")
    sign_model(tmp_path / "q", tmp_path / "k.key")
    model, spec = load_compressed(tmp_path / "q", public_key=tmp_path / "k.pub")
    x = synth.x_test[:8].float()
    with torch.no_grad():
        assert torch.equal(model(x), q.model(x)) and spec["quantization"]["mode"] == "dynamic"
    (tmp_path / "q" / "notes.txt").write_text("added after signing\n")
    with pytest.raises(CheckpointError, match=r"notes\.txt not covered by the signature"):
        load_compressed(tmp_path / "q", public_key=tmp_path / "k.pub")

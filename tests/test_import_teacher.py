"""``distill import``: foreign teachers (a user's class + state dict, torchvision, ONNX, Hugging Face) become model
directories every command loads, fed their own preprocessing; bad input is one line. Nothing is downloaded."""

import json
import os
import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from distill.api import load_teacher
from distill.artifacts import load_model
from distill.cli import main
from distill.data.base import load_dataset
from distill.data.module import DataModule
from distill.errors import CheckpointError

NET = textwrap.dedent(
    """
    import torch
    from torch import nn


    class TinyNet(nn.Module):
        def __init__(self, hidden, classes=4, in_ch=1):
            super().__init__()
            self.conv = nn.Conv2d(in_ch, hidden, 3, padding=1)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(hidden, classes)

        def forward(self, x):
            return self.fc(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))
    """
)
SYNTH = [f"--set={s}" for s in ("data.name=synthetic", "data.options={n_train: 128, n_test: 64}", "data.val_size=32")]
RECIPE = "student: {model: cnn, kwargs: {width: 4, blocks: 1}}\ntrain: {epochs: 1}\nmethods: [{name: kd}]\n"
RECIPE += "bench: {repeats: 1, batch_sizes: [1]}\n"


def one_error(capsys, *words):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("distill: error:"), err
    for w in words:
        assert w in err[0], err[0]
    return err[0]


@pytest.fixture
def foreign(tmp_path):
    """A user's class in its own file and a full checkpoint of it, saved as a DataParallel run would."""
    (tmp_path / "mynet.py").write_text(NET)
    ns: dict = {}
    exec(NET, ns)
    torch.manual_seed(0)
    module = ns["TinyNet"](hidden=6)
    state = {"module." + k: v for k, v in module.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 7, "optimizer": {"lr": 0.1}}, tmp_path / "teacher.pth")
    return module.eval(), tmp_path


def import_args(tmp, out="imported", *extra):
    arch = ["--arch", f"{tmp}/mynet.py:TinyNet", "--arch-args", '{"hidden": 6}', "--weights", str(tmp / "teacher.pth")]
    return ["import", *arch, "--dataset", "synthetic", "--out", str(tmp / out), *extra]


def test_import_class_and_checkpoint_gives_the_same_logits(foreign, capsys):
    module, tmp = foreign
    assert main(import_args(tmp, "t", "--mean", "0.5", "--std", "0.25")) == 0
    assert "imported class:" in capsys.readouterr().out
    spec = json.loads((tmp / "t/model.json").read_text())
    assert spec["model"] == f"class:{tmp.resolve()}/mynet.py:TinyNet" and spec["kwargs"] == {"hidden": 6}
    assert spec["source"]["code"]["file"] == str((tmp / "mynet.py").resolve())
    assert spec["preprocessing"]["mean"] == [0.5] and spec["preprocessing"]["std"] == [0.25]
    assert spec["num_classes"] == 4 and spec["preprocessing"]["input_shape"] == [1, 28, 28]
    model, _ = load_model(tmp / "t")
    x = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), module(x), rtol=0, atol=0)
    assert model.classifier == "fc"  # a tap name inferred, without changing the user's model


def test_lightning_prefix_is_matched_and_a_mismatch_is_a_short_diff(foreign, capsys):
    module, tmp = foreign
    torch.save({"state_dict": {"model." + k: v for k, v in module.state_dict().items()}}, tmp / "pl.ckpt")
    args = import_args(tmp, "pl")
    args[args.index("--weights") + 1] = str(tmp / "pl.ckpt")
    assert main(args) == 0
    with torch.no_grad():
        x = torch.randn(2, 1, 28, 28)
        torch.testing.assert_close(load_model(tmp / "pl")[0].eval()(x), module(x))
    capsys.readouterr()
    args = import_args(tmp, "bad")
    args[args.index("--arch-args") + 1] = '{"hidden": 5}'
    assert main(args) == 2
    one_error(capsys, "shape mismatches", "conv.weight (6, 1, 3, 3) in file vs (5, 1, 3, 3) in model")
    torch.save({"conv.weight": module.conv.weight.detach(), "extra.w": torch.zeros(1)}, tmp / "partial.pt")
    args[args.index("--arch-args") + 1], args[args.index("--weights") + 1] = '{"hidden": 6}', str(tmp / "partial.pt")
    assert main(args) == 2
    one_error(capsys, "missing keys: conv.bias, fc.weight, fc.bias", "unexpected keys: extra.w")
    assert not (tmp / "bad").exists()


class Payload:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_pickle_payload_is_refused_and_never_run(foreign, capsys):
    _, tmp = foreign
    marker = tmp / "pwned"
    torch.save({"state_dict": Payload(str(marker))}, tmp / "evil.pth")
    args = import_args(tmp, "evil")
    args[args.index("--weights") + 1] = str(tmp / "evil.pth")
    assert main(args) == 2
    one_error(capsys, "refusing to unpickle", "posix.mkdir")
    assert not marker.exists() and not (tmp / "evil").exists()


@pytest.mark.parametrize(
    "arch, arch_args, words",
    [
        ("{tmp}/nope.py:TinyNet", "{}", ["nope.py does not exist"]),
        ("no_such_pkg.models:Net", "{}", ["'no_such_pkg.models' does not import"]),
        ("{tmp}/mynet.py:Missing", "{}", ["has no 'Missing'", "TinyNet"]),
        ("{tmp}/mynet.py", "{}", ["must be 'path/to/file.py:ClassName'"]),
        ("{tmp}/mynet.py:TinyNet", '{"hiden": 6}', ["TinyNet(hiden=6) does not fit", "it takes: hidden, classes=…"]),
        ("{tmp}/mynet.py:TinyNet", "{}", ["missing a required argument: 'hidden'"]),
        ("{tmp}/mynet.py:TinyNet", "[6]", ["--arch-args must be a JSON object"]),
        ("{tmp}/mynet.py:TinyNet", '{"hidden": 6, "classes": 3}', ["fc.weight (4, 6) in file vs (3, 6) in model"]),
    ],
)
def test_bad_architecture_is_one_line(foreign, capsys, arch, arch_args, words):
    _, tmp = foreign
    args = import_args(tmp, "x")
    args[args.index("--arch") + 1] = arch.format(tmp=tmp)
    args[args.index("--arch-args") + 1] = arch_args
    assert main(args) == 2
    one_error(capsys, *words)


def test_a_class_count_that_does_not_fit_is_named(foreign, capsys):
    _, tmp = foreign
    assert main(import_args(tmp, "x", "--num-classes", "3")) == 2
    one_error(capsys, "the model outputs 4 values per image but 3 classes were given")


def test_a_changed_class_file_is_named(foreign):
    _, tmp = foreign
    assert main(import_args(tmp)) == 0
    with open(tmp / "mynet.py", "a") as f:
        f.write("\nprint('changed')\n")
    with pytest.raises(CheckpointError, match=r"mynet\.py changed since the model was imported"):
        load_model(tmp / "imported")


def test_imported_teacher_runs_in_evaluate_distill_and_compress(foreign, capsys):
    module, tmp = foreign
    assert main(import_args(tmp)) == 0
    capsys.readouterr()
    # evaluate: the accuracy of the original module on the same (identically normalised) test images
    assert main(["evaluate", str(tmp / "imported"), *SYNTH]) == 0
    got = json.loads(capsys.readouterr().out)
    data = load_dataset("synthetic", n_train=128, n_test=64)
    dm = DataModule(data, val_size=32)
    with torch.no_grad():
        pred = torch.cat([module(b.x).argmax(1) for b in dm.eval_batches("test")])
    assert got["n"] == 64 and got["acc"] == pytest.approx(float((pred == data.y_test).float().mean()))
    # distill --teacher: a student learns from it; the run's teacher directory reloads (report.html built)
    recipe = tmp / "r.yaml"
    recipe.write_text(RECIPE)
    out = tmp / "run"
    assert main(["distill", str(recipe), "--teacher", str(tmp / "imported"), "--out", str(out), *SYNTH]) == 0
    assert (out / "report.html").is_file() and (out / "students/kd/model.json").is_file()
    assert json.loads((out / "teacher/model.json").read_text())["model"].startswith("class:")
    assert main(["report", str(out), "--out", str(tmp / "again.html")]) == 0
    # compress --model: loads and evaluates an imported model; the data's other normalisation is named
    assert main(import_args(tmp, "own", "--mean", "0.5", "--std", "0.25")) == 0
    capsys.readouterr()
    off = ["prune.enabled=false", "recover.enabled=false", "quantize.enabled=false", "export.enabled=false"]
    sets = [*off, "data.name=synthetic", "data.options={n_train: 128, n_test: 64}", "bench.batch_sizes=[1]"]
    argv = ["compress", "--model", str(tmp / "own"), "--out", str(tmp / "c"), *[f"--set={s}" for s in sets]]
    assert main(argv) == 0
    assert json.loads((tmp / "c/report.json").read_text())["stages"][0]["stage"] == "input"
    assert "is fed them as they are (loaded as a teacher, its input would be renormalised" in capsys.readouterr().err


def test_teacher_gets_its_own_normalisation(foreign, capsys):
    module, tmp = foreign
    assert main(import_args(tmp, "t", "--mean", "0.5", "--std", "0.25")) == 0
    data = load_dataset("synthetic", n_train=128, n_test=64)
    capsys.readouterr()
    teacher, _ = load_teacher(tmp / "t", data)
    note = capsys.readouterr().err
    assert "renormalised from synthetic's mean" in note and "to its own mean [0.5] std [0.25]" in note
    x = DataModule(data, val_size=32).split("test")[0][:8]
    batch = (x.float() / 255 - data.mean[0]) / data.std[0]  # what the data module feeds every model
    with torch.no_grad():
        torch.testing.assert_close(teacher.eval()(batch), module((x.float() / 255 - 0.5) / 0.25))
    # saved weights and layer names are those of the model itself
    assert set(teacher.state_dict()) == set(module.state_dict())


def test_grey_data_reaches_a_colour_teacher_resized(foreign, capsys):
    _, tmp = foreign
    ns: dict = {}
    exec(NET, ns)
    module = ns["TinyNet"](hidden=6, in_ch=3).eval()
    torch.save(module.state_dict(), tmp / "rgb.pt")
    args = ["import", "--arch", f"{tmp}/mynet.py:TinyNet", "--arch-args", '{"hidden": 6, "in_ch": 3}',
            "--weights", str(tmp / "rgb.pt"), "--num-classes", "4", "--input-shape", "3,32,32",
            "--mean", "0.4,0.5,0.6", "--std", "0.2", "--channel-order", "bgr", "--out", str(tmp / "rgb")]  # fmt: skip
    assert main(args) == 0
    data = load_dataset("synthetic", n_train=128, n_test=64)
    capsys.readouterr()
    teacher, _ = load_teacher(tmp / "rgb", data)
    note = capsys.readouterr().err
    assert "grey repeated to 3 channels" in note and "resized from 28x28 to 32x32" in note and "BGR" in note
    x = data.x_test[:4].float() / 255
    expected_in = torch.nn.functional.interpolate(x.expand(-1, 3, -1, -1).flip(1), size=(32, 32), mode="bilinear")
    mean, std = torch.tensor([0.4, 0.5, 0.6]).view(1, 3, 1, 1), 0.2
    with torch.no_grad():
        got = teacher.eval()((x - data.mean[0]) / data.std[0])
        torch.testing.assert_close(got, module((expected_in - mean) / std), atol=1e-5, rtol=1e-5)
    colour = load_dataset("synthetic", n_train=64, n_test=16, channels=3)
    assert main(import_args(tmp, "grey")) == 0
    with pytest.raises(CheckpointError, match="made for 4 classes x 1 channels"):
        load_teacher(tmp / "grey", colour)


def test_torchvision_architecture_with_its_weights(tmp_path, capsys):
    import torchvision

    torch.manual_seed(0)
    tv = torchvision.models.get_model("squeezenet1_1", weights=None, num_classes=4).eval()
    args = ["--torchvision", "squeezenet1_1", "--input-shape", "3,64,64", "--mean", "0.485,0.456,0.406",
            "--std", "0.229,0.224,0.225"]  # fmt: skip
    imports_with_its_weights(tmp_path, capsys, tv, args, "torchvision:squeezenet1_1")
    one_error(capsys, "classifier.1.weight (4, 512, 1, 1) in file vs (10, 512, 1, 1) in model")


def imports_with_its_weights(tmp_path, capsys, net: torch.nn.Module, args: list[str], name: str) -> None:
    """``distill import ARGS --weights`` of ``net``'s 4-class state dict reloads as ``name`` with ``net``'s outputs;
    the same weights for 10 classes are refused (exit 2; the caller checks the one error line)."""
    torch.save(net.state_dict(), tmp_path / "net.pth")
    shape = tuple(int(d) for d in args[args.index("--input-shape") + 1].split(","))
    command = ["import", *args, "--weights", str(tmp_path / "net.pth"), "--num-classes", "4", "--out"]
    assert main([*command, str(tmp_path / "out")]) == 0
    model, spec = load_model(tmp_path / "out")
    assert spec["model"] == name
    x = torch.randn(2, *shape)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), net(x))
    capsys.readouterr()
    command[command.index("--num-classes") + 1] = "10"
    assert main([*command, str(tmp_path / "out10")]) == 2


def onnx_bytes(weight: np.ndarray, bias: np.ndarray, dynamic: bool = False) -> bytes:
    """A linear classifier on (N, 1, 28, 28), built with onnx.helper (no exporter involved). ``dynamic``: its output
    is reshaped to (N, -1) at run time, so the graph does not say how many classes it has."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    nodes = [helper.make_node("Flatten", ["x"], ["f"], axis=1), helper.make_node("Gemm", ["f", "W", "b"], ["g"])]
    inits = [numpy_helper.from_array(weight, "W"), numpy_helper.from_array(bias, "b")]
    if dynamic:
        nodes += [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
                  helper.make_node("Concat", ["n", "minus1"], ["shape"], axis=0),
                  helper.make_node("Reshape", ["g", "shape"], ["y"])]  # fmt: skip
        inits += [numpy_helper.from_array(np.array([v], np.int64), k) for k, v in (("zero", 0), ("minus1", -1))]
    else:
        nodes.append(helper.make_node("Identity", ["g"], ["y"]))
    graph = helper.make_graph(
        nodes,
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "K" if dynamic else 4])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def test_onnx_teacher_is_a_black_box(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(784, 4)).astype(np.float32) * 0.05, rng.normal(size=4).astype(np.float32)
    (tmp_path / "t.onnx").write_bytes(onnx_bytes(w, b))
    onnx_import = ["import", "--dataset", "synthetic", "--onnx"]
    assert main([*onnx_import, str(tmp_path / "t.onnx"), "--out", str(tmp_path / "o")]) == 0
    model, spec = load_model(tmp_path / "o")
    assert spec["model"] == "onnx:model" and spec["num_classes"] == 4
    x = torch.randn(3, 1, 28, 28)
    torch.testing.assert_close(model(x), torch.from_numpy(x.reshape(3, -1).numpy() @ w + b), atol=1e-4, rtol=1e-4)
    # a logit method learns from it; a feature method is refused in one line
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE)
    capsys.readouterr()
    assert main(["distill", str(recipe), "--teacher", str(tmp_path / "o"), "--out", str(tmp_path / "run"), *SYNTH]) == 0
    capsys.readouterr()
    fit = [*SYNTH, "--set", "methods=[{name: fitnet}]"]
    assert main(["distill", str(recipe), "--teacher", str(tmp_path / "o"), "--out", str(tmp_path / "r2"), *fit]) == 2
    one_error(capsys, "method 'fitnet' reads the teacher's intermediate features", "ONNX model (a black box")
    # a graph whose class count is not fixed is refused
    (tmp_path / "dyn.onnx").write_bytes(onnx_bytes(w, b, dynamic=True))
    assert main([*onnx_import, str(tmp_path / "dyn.onnx"), "--out", str(tmp_path / "d")]) == 2
    one_error(capsys, "class count is dynamic")


def test_out_is_protected_and_sources_are_exclusive(foreign, capsys):
    _, tmp = foreign
    (tmp / "mine").mkdir()
    (tmp / "mine" / "notes.txt").write_text("keep me")
    assert main(import_args(tmp, "mine", "--overwrite")) == 2
    one_error(capsys, "was not made by distill")
    assert (tmp / "mine" / "notes.txt").read_text() == "keep me"
    assert main(import_args(tmp, "m")) == 0
    assert main(import_args(tmp, "m")) == 2
    one_error(capsys, "pass --overwrite")
    assert main(import_args(tmp, "m", "--overwrite")) == 0
    capsys.readouterr()
    assert main([*import_args(tmp, "z"), "--onnx", "x.onnx"]) == 2
    one_error(capsys, "exactly one source")
    assert main(["import", "--arch", f"{tmp}/mynet.py:TinyNet", "--weights", str(tmp / "teacher.pth"),
                 "--arch-args", '{"hidden": 6}', "--out", str(tmp / "z")]) == 2  # fmt: skip
    one_error(capsys, "--dataset NAME, or --input-shape, --mean, --std")


def test_installed_module_class_is_recorded_by_name(tmp_path, monkeypatch):
    pkg = tmp_path / "site" / "teachers_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text(NET)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    from teachers_pkg.nets import TinyNet

    module = TinyNet(hidden=3).eval()
    torch.save(module.state_dict(), tmp_path / "w.pt")
    args = ["import", "--arch", "teachers_pkg.nets:TinyNet", "--arch-args", '{"hidden": 3}', "--weights",
            str(tmp_path / "w.pt"), "--dataset", "synthetic", "--out", str(tmp_path / "m")]  # fmt: skip
    assert main(args) == 0
    spec = json.loads((tmp_path / "m/model.json").read_text())
    assert spec["model"] == "class:teachers_pkg.nets:TinyNet" and spec["source"]["code"]["module"].endswith("nets")
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(load_model(tmp_path / "m")[0].eval()(x), module(x))


def test_foreign_module_is_not_changed_by_tap_inference():
    from distill.models.foreign import annotate_user

    class WithPool(nn.Module):
        feature_layers = ["body"]  # noqa: RUF012

        def __init__(self):
            super().__init__()
            self.body = nn.Conv2d(1, 2, 3)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(2, 4)

        def forward(self, x):
            return self.fc(self.pool(self.body(x))[:, :, 0, 0])

    m = annotate_user(WithPool(), 4)
    assert m.feature_layers == ["body"] and isinstance(m.pool, nn.AdaptiveAvgPool2d) and m.classifier == "fc"
    assert m(torch.zeros(1, 1, 8, 8)).shape == (1, 4)


def test_import_describes_the_data_with_dataset_options(foreign, capsys):
    """``--dataset image_csv --data-option path=...``: classes and normalisation from the user's own CSV."""
    _, tmp = foreign
    rows = [",".join([str(i % 4), *[str((i * 7 + j) % 256) for j in range(784)]]) for i in range(40)]
    (tmp / "d.csv").write_text("\n".join(rows) + "\n")
    args = import_args(tmp, "csv", "--data-option", f"path={tmp / 'd.csv'}")
    args[args.index("--dataset") + 1] = "image_csv"
    assert main(args) == 0
    spec = json.loads((tmp / "csv/model.json").read_text())
    data = load_dataset("image_csv", path=str(tmp / "d.csv"))
    assert spec["dataset"]["name"] == "image_csv:d" and spec["preprocessing"]["mean"] == list(data.mean)
    assert spec["classes"] == ["0", "1", "2", "3"]


def test_hugging_face_folder(tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.ResNetConfig(num_channels=1, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=4)
    ref = transformers.ResNetForImageClassification(cfg).eval()
    ref.save_pretrained(tmp_path / "hf")
    assert main(["import", "--hf", str(tmp_path / "hf"), "--dataset", "synthetic", "--out", str(tmp_path / "m")]) == 0
    model, spec = load_model(tmp_path / "m")
    assert spec["model"] == "hf:ResNetConfig" and spec["num_classes"] == 4
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), ref(pixel_values=x).logits)
    capsys.readouterr()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad/config.json").write_text("{}")
    assert main(["import", "--hf", str(tmp_path / "bad"), "--dataset", "synthetic", "--out", str(tmp_path / "b")]) == 2
    one_error(capsys, "transformers cannot load it as an image classifier")


def test_timm_architecture_with_its_weights(tmp_path, capsys):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    net = timm.create_model("resnet10t", pretrained=False, num_classes=4).eval()
    args = ["--timm", "resnet10t", "--input-shape", "3,32,32", "--mean", "0.5,0.5,0.5", "--std", "0.5,0.5,0.5"]
    imports_with_its_weights(tmp_path, capsys, net, args, "timm:resnet10t")
    one_error(capsys, "fc.weight (4, 512) in file vs (10, 512) in model")

"""Data sources: IDX files, the registered loaders, and the ImageData contract."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from distill.data import vision
from distill.data.base import ImageData, dataset_names, load_dataset
from distill.data.idx import find_idx_dir, find_idx_split, read_idx, read_idx_split, write_idx
from distill.errors import ConfigError, DataError, UnknownNameError

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture
def no_data_env(tmp_path, monkeypatch):
    """No $DISTILL_DATA, an empty home, and no system Fashion-MNIST: only what a test puts down is found."""
    monkeypatch.delenv("DISTILL_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(vision, "FASHION_SYSTEM_DIR", tmp_path / "no-system-dir")
    return tmp_path


def write_fake_mnist(folder: Path, n_train: int = 30, n_test: int = 10, k: int = 10, gz: bool = True) -> Path:
    """A tiny MNIST-format dataset: 28x28 uint8 images whose label is readable from the pixels."""
    ext = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        y = np.arange(n, dtype=np.uint8) % k
        x = np.repeat(y[:, None, None] * 20, 28, axis=1).repeat(28, axis=2).astype(np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", x)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", y)
    return folder


# --------------------------------------------------------------------------------------------------------- IDX files


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize(
    "array",
    [
        np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4),
        np.array([-5, 0, 7], dtype=np.int8),
        np.array([[-300, 2], [3, 32000]], dtype=np.int16),
        np.array([1, -2, 2**31 - 1], dtype=np.int32),
        np.array([0.5, -1.25], dtype=np.float32),
        np.array([[1e-300]], dtype=np.float64),
    ],
    ids=["uint8", "int8", "int16", "int32", "float32", "float64"],
)
def test_idx_round_trip(tmp_path, array, suffix):
    path = write_idx(tmp_path / f"a.idx{suffix}", array)
    out = read_idx(path)
    assert out.shape == array.shape
    np.testing.assert_array_equal(out.numpy(), array)


def test_idx_reads_hand_written_big_endian_bytes(tmp_path):
    # independent of write_idx: magic 00 00 0C 02, dims 2 x 1 (big-endian), int32 values 1 and -2 (big-endian)
    (tmp_path / "x").write_bytes(b"\x00\x00\x0c\x02" + struct.pack(">II", 2, 1) + struct.pack(">ii", 1, -2))
    assert read_idx(tmp_path / "x").tolist() == [[1], [-2]]
    (tmp_path / "y.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x01" + struct.pack(">I", 3) + bytes([9, 8, 7])))
    out = read_idx(tmp_path / "y.gz")
    assert out.dtype == torch.uint8 and out.tolist() == [9, 8, 7]


@pytest.mark.parametrize(
    ("content", "expect"),
    [
        (b"\x08\x03\x00\x00" + b"\x00" * 20, "bad magic"),
        (b"\x00\x00\x07\x01" + b"\x00" * 8, "bad magic"),  # unknown type code
        (b"", "bad magic"),
        (b"\x00\x00\x08\x03\x00\x00", "truncated"),  # header cut
        (b"\x00\x00\x08\x01" + struct.pack(">I", 10) + bytes(4), "truncated"),  # 4 of 10 bytes
        (b"\x00\x00\x08\x03" + struct.pack(">III", 60000, 60000, 60000), "truncated"),  # absurd header
        (b"\x00\x00\x08\x01" + struct.pack(">I", 2) + bytes(5), "more data"),
    ],
    ids=["swapped", "type", "empty", "header", "payload", "absurd", "trailing"],
)
def test_idx_rejects_malformed_files_naming_the_path(tmp_path, content, expect):
    for path, data in ((tmp_path / "bad-idx", content), (tmp_path / "bad-idx.gz", gzip.compress(content))):
        path.write_bytes(data)
        with pytest.raises(DataError, match=expect) as info:
            read_idx(path)
        assert str(path) in str(info.value)


def test_idx_cut_gzip_stream_and_missing_file(tmp_path):
    path = write_idx(tmp_path / "x.gz", np.random.default_rng(0).integers(0, 255, (50, 28, 28), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError, match=r"x\.gz"):
        read_idx(path)
    with pytest.raises(DataError, match="does not exist"):
        read_idx(tmp_path / "nope")


def test_find_idx_split_plain_gz_and_torchvision_layout(tmp_path):
    write_fake_mnist(tmp_path / "flat", gz=False)
    images, labels = find_idx_split(tmp_path / "flat", "train")
    assert images.name == "train-images-idx3-ubyte" and labels.name == "train-labels-idx1-ubyte"
    raw = write_fake_mnist(tmp_path / "tv" / "FashionMNIST" / "raw")
    images, _ = find_idx_split(tmp_path / "tv", "t10k")
    assert images == raw / "t10k-images-idx3-ubyte.gz"
    assert find_idx_dir(tmp_path / "tv") == raw
    assert find_idx_split(tmp_path, "train", subdirs=()) is None
    x, y = read_idx_split(raw, "train")
    assert x.shape == (30, 28, 28) and y.dtype == torch.int64


def test_read_idx_split_rejects_length_mismatch(tmp_path):
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((3, 2, 2), np.uint8))
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(4, np.uint8))
    with pytest.raises(DataError, match="3 images but 4 labels"):
        read_idx_split(tmp_path, "train")


# ------------------------------------------------------------------------------------------------- MNIST-like sources


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason=f"{FASHION_DIR} absent (apt-get install dataset-fashion-mnist)")
def test_fashion_mnist_from_the_debian_package(monkeypatch):
    monkeypatch.delenv("DISTILL_DATA", raising=False)
    data = load_dataset("fashion_mnist")
    assert data.meta["source"] == str(FASHION_DIR)
    assert data.x_train.shape == (60000, 1, 28, 28) and data.x_test.shape == (10000, 1, 28, 28)
    assert data.x_train.dtype == torch.uint8 and data.y_train.dtype == torch.int64
    assert data.num_classes == 10 and data.classes[0] == "T-shirt/top" and data.classes[9] == "Ankle boot"
    assert torch.bincount(data.y_train).tolist() == [6000] * 10
    assert torch.bincount(data.y_test).tolist() == [1000] * 10
    assert vision.channel_stats(data.x_train) == (data.mean, data.std)  # the hardcoded values are exact
    assert data.hflip and data.crop_padding == 2


def test_fashion_mnist_missing_says_how_to_get_it(no_data_env):
    with pytest.raises(DataError) as info:
        load_dataset("fashion_mnist", root=str(no_data_env / "empty"))
    msg = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in msg and "data.download=true" in msg
    assert str(no_data_env / "empty") in msg and "\n" not in msg


def test_fashion_mnist_search_order(no_data_env, monkeypatch):
    env = no_data_env / "env"
    write_fake_mnist(env / "fashion-mnist", n_train=20)
    monkeypatch.setenv("DISTILL_DATA", str(env))
    assert load_dataset("fashion_mnist").meta["source"] == str(env / "fashion-mnist")
    write_fake_mnist(no_data_env / "mine" / "FashionMNIST" / "raw", n_train=40)
    data = load_dataset("fashion_mnist", root=str(no_data_env / "mine"))  # an explicit root comes first
    assert len(data.x_train) == 40 and data.x_train.shape[1:] == (1, 28, 28)


def test_mnist_from_root_and_not_from_bare_env(no_data_env, monkeypatch):
    write_fake_mnist(no_data_env / "bare", gz=False)
    data = load_dataset("mnist", root=str(no_data_env / "bare"))
    assert (data.mean, data.std, data.hflip, data.crop_padding) == ((0.1307,), (0.3081,), False, 2)
    assert torch.equal(data.x_train[:, 0, 0, 0].long(), data.y_train * 20)  # labels still match their images
    monkeypatch.setenv("DISTILL_DATA", str(no_data_env / "bare"))  # MNIST only looks in $DISTILL_DATA/mnist
    with pytest.raises(DataError, match="MNIST not found"):
        load_dataset("mnist")


def test_idx_source_classes_txt_and_computed_stats(no_data_env):
    folder = write_fake_mnist(no_data_env / "kmnist", k=3)
    data = load_dataset("idx", root=str(folder))
    assert data.classes == ["0", "1", "2"]
    assert data.mean == vision.channel_stats(data.x_train)[0]
    (folder / "classes.txt").write_text("o\nki\nsu\n")
    assert load_dataset("idx", root=str(folder)).classes == ["o", "ki", "su"]
    (folder / "classes.txt").write_text("o\n")
    with pytest.raises(DataError, match=r"classes\.txt"):
        load_dataset("idx", root=str(folder))
    with pytest.raises(ConfigError, match="root"):
        load_dataset("idx")


# ------------------------------------------------------------------------------------------------------------- CIFAR


def test_cifar10_reads_torchvision_format(no_data_env, monkeypatch):
    pytest.importorskip("torchvision")
    from torchvision.datasets import cifar

    folder = no_data_env / "c" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]:
        batch = {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 9]}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))
    monkeypatch.setattr(cifar, "check_integrity", lambda *a, **k: True)  # our fakes lack the official md5s
    data = load_dataset("cifar10", root=str(no_data_env / "c"))
    assert data.x_train.shape == (20, 3, 32, 32) and data.x_test.shape == (4, 3, 32, 32)
    first = pickle.loads((folder / "data_batch_1").read_bytes())["data"][0]
    assert data.x_train[0].flatten().tolist() == first.tolist()  # CIFAR rows are already channel-major
    assert data.classes[9] == "c9" and data.hflip and data.crop_padding == 4 and len(data.mean) == 3


def test_cifar_missing_says_how_to_get_it(no_data_env):
    for name, folder in (("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python")):
        with pytest.raises(DataError, match=f"{folder}.*data.download=true"):
            load_dataset(name, root=str(no_data_env))


# ------------------------------------------------------------------------------------------------------ image folder


def _png_tree(base: Path, classes: dict[str, int], size: int = 12) -> None:
    Image = pytest.importorskip("PIL.Image")
    for i, (cls, n) in enumerate(classes.items()):
        (base / cls).mkdir(parents=True, exist_ok=True)
        for j in range(n):
            pixels = np.full((size, size + 4, 3), (40 * i, 10 * j, 200), dtype=np.uint8)
            Image.fromarray(pixels).save(base / cls / f"{j}.png")


def test_image_folder_with_train_and_test(tmp_path):
    _png_tree(tmp_path / "train", {"cat": 3, "dog": 2})
    _png_tree(tmp_path / "test", {"cat": 1, "dog": 1})
    data = load_dataset("image_folder", root=str(tmp_path), image_size=8)
    assert data.classes == ["cat", "dog"]
    assert data.x_train.shape == (5, 3, 8, 8) and data.x_test.shape == (2, 3, 8, 8)
    assert data.y_train.tolist() == [0, 0, 0, 1, 1]
    assert data.x_train[3, 0, 4, 4] == 40  # the dog's red channel survives the resize
    grey = load_dataset("image_folder", root=str(tmp_path), image_size=8, grayscale=True)
    assert grey.x_train.shape == (5, 1, 8, 8) and len(grey.mean) == 1


def test_image_folder_flat_gets_a_stratified_split(tmp_path):
    _png_tree(tmp_path, {"a": 10, "b": 5})
    data = load_dataset("image_folder", root=str(tmp_path), image_size=4, test_fraction=0.2, seed=1)
    assert torch.bincount(data.y_test).tolist() == [2, 1]
    assert torch.bincount(data.y_train).tolist() == [8, 4]


def test_image_folder_empty_is_an_error(tmp_path):
    (tmp_path / "train" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match="no images"):
        load_dataset("image_folder", root=str(tmp_path))


# ------------------------------------------------------------------------------------------------ digits / synthetic


def test_digits_shapes_and_stratified_split():
    pytest.importorskip("sklearn")
    data = load_dataset("digits")
    assert data.x_train.shape[1:] == (1, 28, 28) and data.x_train.dtype == torch.uint8
    assert len(data.x_train) + len(data.x_test) == 1797
    counts = torch.bincount(torch.cat([data.y_train, data.y_test]))
    test_share = torch.bincount(data.y_test, minlength=10) / counts
    assert ((test_share - 0.2).abs() < 0.02).all()
    assert int(data.x_train.max()) > 200  # scaled from 0..16 to 0..255
    small = load_dataset("digits", size=8, test_fraction=0.5, seed=3)
    assert small.x_train.shape[1:] == (1, 8, 8) and abs(len(small.x_test) - 1797 / 2) < 10


def test_stratified_split_is_seeded_and_disjoint():
    y = torch.arange(100) % 3
    a = vision.stratified_split(y, 0.3, seed=0)
    b = vision.stratified_split(y, 0.3, seed=0)
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert not torch.equal(a[1], vision.stratified_split(y, 0.3, seed=1)[1])
    assert sorted(torch.cat(a).tolist()) == list(range(100))
    with pytest.raises(ConfigError):
        vision.stratified_split(y, 1.0)


def test_synthetic_is_deterministic_and_balanced():
    a, b = load_dataset("synthetic", seed=5), load_dataset("synthetic", seed=5)
    assert a.fingerprint() == b.fingerprint()
    assert a.fingerprint() != load_dataset("synthetic", seed=6).fingerprint()
    assert a.x_train.shape == (512, 1, 28, 28) and a.x_test.shape == (256, 1, 28, 28)
    assert torch.bincount(a.y_train).tolist() == [128] * 4
    rgb = load_dataset("synthetic", n_train=30, n_test=0, num_classes=3, channels=3, size=16)
    assert rgb.x_train.shape == (30, 3, 16, 16) and len(rgb.mean) == 3 and len(rgb.x_test) == 0


def test_synthetic_is_learnable_by_a_tiny_cnn():
    torch.manual_seed(0)
    data = load_dataset("synthetic")
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(4),
        torch.nn.Flatten(), torch.nn.Linear(8 * 7 * 7, 4),
    )  # fmt: skip
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = (data.x_train.float() / 255 - data.mean[0]) / data.std[0]
    for step in range(10):  # ~99% after 5 steps
        idx = torch.arange(step * 64, step * 64 + 64) % len(x)
        loss = torch.nn.functional.cross_entropy(model(x[idx]), data.y_train[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    x_test = (data.x_test.float() / 255 - data.mean[0]) / data.std[0]
    accuracy = (model(x_test).argmax(1) == data.y_test).float().mean().item()
    assert accuracy > 0.9


# ------------------------------------------------------------------------------------------ registry and validation


def test_unknown_dataset_lists_the_available_ones():
    with pytest.raises(UnknownNameError) as info:
        load_dataset("fashion_mnsit")
    msg = str(info.value)
    assert "'fashion_mnist'" in msg  # the close match
    for name in ("cifar10", "digits", "image_folder", "synthetic"):
        assert name in msg
    assert {"fashion_mnist", "mnist", "idx", "cifar10", "cifar100", "image_folder", "digits", "synthetic"} <= set(
        dataset_names()
    )


def test_unknown_option_is_a_config_error():
    with pytest.raises(ConfigError, match=r"unknown option.*colour"):
        load_dataset("digits", colour=True)


def test_image_data_validation():
    x, y = torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 1, 0, 1])
    ok = {"x_test": x, "y_test": y, "classes": ["a", "b"], "mean": (0.5,), "std": (0.5,)}
    with pytest.raises(DataError, match="uint8"):
        ImageData("t", x.float(), y, **ok)
    with pytest.raises(DataError, match="int64"):
        ImageData("t", x, y.int(), **ok)
    with pytest.raises(DataError, match="empty"):
        ImageData("t", x[:0], y[:0], **ok)
    with pytest.raises(DataError, match="per channel"):
        ImageData("t", x, y, **{**ok, "mean": (0.5, 0.5)})


# ------------------------------------------------------------------------------------------- labels and settings


def test_labels_a_classifier_cannot_learn_from_are_refused():
    x = torch.zeros(4, 1, 2, 2, dtype=torch.uint8)

    def make(y_train: list[int], y_test: list[int], classes: list[str]) -> ImageData:
        return ImageData("t", x, torch.tensor(y_train), x, torch.tensor(y_test), classes, (0.5,), (0.5,))

    with pytest.raises(DataError, match=r"1 class\(es\); a classifier needs at least 2"):
        make([0, 0, 0, 0], [0, 0, 0, 0], ["a"])
    with pytest.raises(DataError, match="every training sample has label 1"):
        make([1, 1, 1, 1], [0, 1, 0, 1], ["a", "b"])
    with pytest.raises(DataError, match=r"test split has label\(s\) -1, 7 but the 2 classes are numbered 0..1"):
        make([0, 1, 0, 1], [0, -1, 7, 1], ["a", "b"])


def test_idx_one_class_and_stray_label_are_refused(no_data_env):
    one = write_fake_mnist(no_data_env / "one", k=1)
    with pytest.raises(DataError, match="at least 2"):
        load_dataset("idx", root=str(one))
    stray = write_fake_mnist(no_data_env / "stray", k=10, gz=False)
    labels = read_idx(stray / "train-labels-idx1-ubyte").numpy().copy().astype(np.int16)
    labels[3] = 300
    write_idx(stray / "train-labels-idx1-ubyte", labels)
    with pytest.raises(DataError, match=r"class\(es\) 10-299 of 0..300 never occur.*found: 0-9, 300"):
        load_dataset("idx", root=str(stray))


def test_missing_distill_data_directory_is_named(no_data_env, monkeypatch):
    monkeypatch.setenv("DISTILL_DATA", str(no_data_env / "typo"))
    for name in ("fashion_mnist", "mnist", "cifar10"):
        with pytest.raises(DataError, match=r"DISTILL_DATA is set to .*typo.*not a directory"):
            load_dataset(name)


def test_subset_below_one_is_refused_and_above_the_size_keeps_the_split(synth):
    for n in (0, -5):
        with pytest.raises(ConfigError, match=r"train_subset must be null .* count >= 1, got .* split has 256\)"):
            synth.subset(n)
    with pytest.raises(ConfigError, match="test_subset"):
        synth.subset(None, 0)
    assert len(synth.subset(10_000).x_train) == 256 and len(synth.subset(7).x_train) == 7


def test_datamodule_refuses_zero_eval_batch_and_a_validation_fraction_that_rounds_to_nothing(synth):
    from distill.data.module import DataModule

    with pytest.raises(DataError, match="eval_batch_size must be >= 1"):
        DataModule(synth, eval_batch_size=0)
    with pytest.raises(DataError, match="rounds to 0 validation samples"):
        DataModule(synth, val_size=0.0001)
    assert len(DataModule(synth, val_size=0).x_val) == 0  # 0: no validation split, on purpose


def test_dataset_options_are_checked_against_the_loader_signature():
    with pytest.raises(ConfigError, match="synthetic: n_train must be an integer, got 'abc'"):
        load_dataset("synthetic", n_train="abc")
    with pytest.raises(ConfigError, match="synthetic: noise must be a finite number, got nan"):
        load_dataset("synthetic", noise=float("nan"))
    with pytest.raises(ConfigError, match="pixels"):
        load_dataset("synthetic", n_train=10**12)


def _csv(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def test_csv_source_takes_the_documented_options_path_and_root(tmp_path):
    body = "x,kind,label\n" + "".join(f"{i},{'ab'[i % 2]},{'yn'[i % 2]}\n" for i in range(20))
    f = _csv(tmp_path / "t.csv", body)
    by_path = load_dataset("csv", path=str(f), target="label")  # data.options: {path: f.csv, target: label}
    by_root = load_dataset("csv", root=str(f), target="label")
    assert by_path.fingerprint() == by_root.fingerprint() and by_path.classes == ["n", "y"]
    with pytest.raises(ConfigError, match="name different files"):
        load_dataset("csv", root=str(tmp_path / "other.csv"), path=str(f), target="label")
    with pytest.raises(ConfigError, match="needs the file and its label column"):
        load_dataset("csv", target="label")
    with pytest.raises(ConfigError, match=r"csv: unknown option.*colour"):
        load_dataset("csv", path=str(f), target="label", colour=1)


def test_csv_that_is_not_utf8_is_one_clear_error_and_its_encoding_can_be_named(tmp_path):
    body = "x,town,label\n" + "".join(f"{i},{'Orléans' if i % 2 else 'Caen'},{'yn'[i % 2]}\n" for i in range(20))
    f = _csv(tmp_path / "latin.csv", body, "latin-1")
    with pytest.raises(DataError, match=r"latin.csv: not utf-8 text \(byte 0xe9 at offset \d+\).*encoding"):
        load_dataset("csv", path=str(f), target="label")
    assert "town=Orléans" in load_dataset("csv", path=str(f), target="label", encoding="latin-1").feature_names
    with pytest.raises(ConfigError, match="unknown encoding 'klingon'"):
        load_dataset("csv", path=str(f), target="label", encoding="klingon")
    _csv(tmp_path / "bom.csv", "\ufeff" + body.replace("é", "e"))
    assert load_dataset("csv", path=str(tmp_path / "bom.csv"), target="label").feature_names[0] == "x"

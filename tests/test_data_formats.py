"""Image data as users have it: an image CSV (label + pixel columns) and .npz / .npy arrays."""

import pickle

import numpy as np
import pytest
import torch

from distill.cli import main
from distill.data.base import load_dataset
from distill.data.idx import read_idx, write_idx
from distill.errors import ConfigError, DataError


def images(n=40, side=4, channels=1, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, side, side, channels), dtype=np.uint8), np.arange(n) % 4


def write_csv(path, x, y, header=True, label_last=False):
    flat = x.reshape(len(x), -1)
    rows = [
        [*map(str, r), str(lab)] if label_last else [str(lab), *map(str, r)] for r, lab in zip(flat, y, strict=True)
    ]
    names = [f"pixel{i}" for i in range(flat.shape[1])]
    head = [",".join([*names, "label"] if label_last else ["label", *names])] if header else []
    path.write_text("\n".join(head + [",".join(r) for r in rows]) + "\n")


@pytest.mark.parametrize("header, label_last", [(True, False), (False, False), (True, True)])
def test_image_csv_rows_become_the_same_images(tmp_path, header, label_last):
    x, y = images()
    write_csv(tmp_path / "d.csv", x, y, header, label_last)
    opts = {"label_column": "label" if label_last else 0, "test_fraction": 0.25}
    data = load_dataset("image_csv", path=str(tmp_path / "d.csv"), **opts)
    assert data.x_train.shape[1:] == (1, 4, 4) and data.num_classes == 4
    assert len(data.x_train) + len(data.x_test) == 40 and len(data.x_test) == 8
    # every image comes back with its label, pixel for pixel
    want = {(bytes(img.transpose(2, 0, 1).tobytes()), int(lab)) for img, lab in zip(x, y, strict=True)}
    got = {(bytes(img.numpy().tobytes()), int(lab)) for img, lab in zip(data.x_train, data.y_train, strict=True)}
    got |= {(bytes(img.numpy().tobytes()), int(lab)) for img, lab in zip(data.x_test, data.y_test, strict=True)}
    assert got == want


def test_image_csv_colour_string_labels_and_test_file(tmp_path):
    x, y = images(n=24, side=3, channels=3)
    names = np.array(["cat", "dog", "eel", "fox"])[y]
    write_csv(tmp_path / "train.csv", x, names, header=False)
    write_csv(tmp_path / "test.csv", x[:8], names[:8], header=False)
    data = load_dataset("image_csv", path=str(tmp_path / "train.csv"), test_path=str(tmp_path / "test.csv"), channels=3)
    assert data.classes == ["cat", "dog", "eel", "fox"] and len(data.x_train) == 24 and len(data.x_test) == 8
    assert torch.equal(data.x_train[5], torch.from_numpy(x[5].transpose(2, 0, 1)))  # H x W x C rows
    assert data.classes[int(data.y_test[1])] == names[1]


def test_image_csv_refuses_bad_files(tmp_path):
    x, y = images(n=10)
    flat = x.reshape(10, -1)[:, :15]  # 15 pixels: not a square
    (tmp_path / "odd.csv").write_text("\n".join(",".join(map(str, [lab, *r])) for r, lab in zip(flat, y, strict=True)))
    with pytest.raises(DataError, match="15 pixel columns are not a square image of 1 channel"):
        load_dataset("image_csv", path=str(tmp_path / "odd.csv"))
    write_csv(tmp_path / "ok.csv", x, y)
    with pytest.raises(DataError, match="no column 'target'"):
        load_dataset("image_csv", path=str(tmp_path / "ok.csv"), label_column="target")
    (tmp_path / "big.csv").write_text("0," + ",".join(["300"] * 4) + "\n1," + ",".join(["3"] * 4) + "\n")
    with pytest.raises(DataError, match=r"pixel values must lie in 0..255"):
        load_dataset("image_csv", path=str(tmp_path / "big.csv"))
    with pytest.raises(ConfigError, match=r"needs path=FILE\.csv"):
        load_dataset("image_csv")


def test_image_csv_through_a_recipe_override(tmp_path, capsys):
    """From the CLI: ``data.name=image_csv`` with ``data.options.path`` — evaluate a model on it."""
    from distill.artifacts import save_model
    from distill.models.zoo import create_model

    x, y = images(n=64, side=8)
    write_csv(tmp_path / "d.csv", x, y)
    data = load_dataset("image_csv", path=str(tmp_path / "d.csv"))
    model = create_model("mlp", num_classes=4, in_channels=1)
    spec = {"model": "mlp", "kwargs": {}, "num_classes": 4, "in_channels": 1, "classes": data.classes,
            "preprocessing": {"input_shape": [1, 8, 8], "mean": list(data.mean), "std": list(data.std)}}  # fmt: skip
    save_model(tmp_path / "m", model, spec)
    sets = ["data.name=image_csv", f"data.options={{path: {tmp_path / 'd.csv'}}}", "data.val_size=0"]
    assert main(["evaluate", str(tmp_path / "m"), *[f"--set={s}" for s in sets]]) == 0
    assert '"n": 12' in capsys.readouterr().out  # round(0.2 x 16) = 3 of each class's 16 images held out


def test_npz_and_npy_arrays(tmp_path):
    x, y = images(n=32, side=5)
    np.savez(tmp_path / "d.npz", x=x[..., 0], y=y)
    data = load_dataset("arrays", path=str(tmp_path / "d.npz"), test_fraction=0.25)
    assert data.x_train.shape[1:] == (1, 5, 5) and len(data.x_test) == 8
    np.savez(tmp_path / "split.npz", x_train=x, y_train=y, x_test=x[:4], y_test=y[:4])
    data = load_dataset("arrays", path=str(tmp_path / "split.npz"))
    assert torch.equal(data.x_test, torch.from_numpy(x[:4].transpose(0, 3, 1, 2))) and len(data.x_train) == 32
    floats = x.astype(np.float32) / 255  # (N, H, W, C) floats in [0, 1]
    np.save(tmp_path / "x.npy", floats)
    np.save(tmp_path / "y.npy", y)
    data = load_dataset("arrays", path=str(tmp_path / "x.npy"), labels=str(tmp_path / "y.npy"), test_fraction=0.0)
    assert torch.equal(data.x_train, torch.from_numpy(x.transpose(0, 3, 1, 2)))


def test_arrays_refuse_pickles_and_mismatches(tmp_path):
    marker = tmp_path / "ran"
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="cannot be read without unpickling"):
        load_dataset("arrays", path=str(tmp_path / "obj.npy"), labels=str(tmp_path / "obj.npy"))
    (tmp_path / "evil.npy").write_bytes(pickle.dumps(0))
    with pytest.raises(DataError):
        load_dataset("arrays", path=str(tmp_path / "evil.npy"), labels=str(tmp_path / "evil.npy"))
    assert not marker.exists()
    x, y = images(n=8)
    np.savez(tmp_path / "bad.npz", x=x, y=y[:5])
    with pytest.raises(DataError, match=r"8 training images but labels of shape \(5,\)"):
        load_dataset("arrays", path=str(tmp_path / "bad.npz"))
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(ConfigError, match=r"give labels=LABELS\.npy"):
        load_dataset("arrays", path=str(tmp_path / "x.npy"))


def test_idx_writer_round_trips_for_the_idx_source(tmp_path):
    x, y = images(n=16, side=6)
    for split, sl in (("train", slice(0, 12)), ("t10k", slice(12, 16))):
        write_idx(tmp_path / f"{split}-images-idx3-ubyte", x[sl, ..., 0])
        write_idx(tmp_path / f"{split}-labels-idx1-ubyte.gz", y[sl].astype(np.uint8))
    assert torch.equal(read_idx(tmp_path / "train-images-idx3-ubyte"), torch.from_numpy(x[:12, ..., 0]))
    data = load_dataset("idx", root=str(tmp_path))
    assert len(data.x_train) == 12 and data.x_test.shape == (4, 1, 6, 6)

"""Tabular data: the CSV encoder, scikit-learn's tables, MLP teacher/student and the classical students on them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distill.classical import SoftTargetDecisionTree, SoftTargetGradientBoosting, SoftTargetLogisticRegression
from distill.data.tabular import TabularDataModule, breast_cancer, load_csv, majority_accuracy, wine
from distill.distillers.base import build_distiller
from distill.engine.trainer import OptimSettings, Trainer
from distill.errors import ConfigError
from distill.models.zoo import create_model
from distill.report.metrics import predict


def test_load_csv_standardises_on_train_and_one_hots_categoricals(tmp_path):
    rows = ["id,size,colour,grade,label"]
    rng = np.random.default_rng(0)
    for i in range(60):
        colour = ["red", "green", "blue"][i % 3]
        size = "" if i == 5 else f"{rng.normal(10, 2):.3f}"
        rows.append(f"{i},{size},{colour},{i % 2},{'yes' if i % 3 == 0 else 'no'}")
    path = tmp_path / "t.csv"
    path.write_text("\n".join(rows) + "\n")
    data = load_csv(path, target="label", categorical=["grade"], drop=["id"], test_fraction=0.25, seed=0)
    assert data.feature_names == ["size", "colour=blue", "colour=green", "colour=red", "grade=0", "grade=1"]
    assert data.classes == ["no", "yes"] and data.x_train.dtype == torch.float32
    assert len(data.x_train) == 45 and len(data.x_test) == 15
    size = data.x_train[:, 0].double()
    size = size[size != 0]  # the missing value became the training mean, i.e. exactly 0
    assert abs(float(size.mean())) < 1e-5 and abs(float(size.std(correction=0)) - 1) < 1e-4  # train statistics
    assert torch.all(data.x_train[:, 1:4].sum(1) == 1) and torch.all(data.x_train[:, 4:].sum(1) == 1)
    enc = data.meta["encoder"]
    assert enc["colour"]["categories"] == ["blue", "green", "red"] and enc["size"]["kind"] == "numeric"
    with pytest.raises(ConfigError, match="no column 'target'"):
        load_csv(path, target="target")


def test_registered_sklearn_tables():
    bc, wn = breast_cancer(), wine()
    assert (bc.in_channels, bc.num_classes, len(bc.x_train) + len(bc.x_test)) == (30, 2, 569)
    assert (wn.in_channels, wn.num_classes, len(wn.x_train) + len(wn.x_test)) == (13, 3, 178)
    assert bc.classes == ["malignant", "benign"]  # scikit-learn's order kept
    dm = wn.datamodule(batch_size=16, val_size=20, seed=0)
    assert isinstance(dm, TabularDataModule) and dm.input_shape == (13, 1, 1)
    b = next(dm.train_batches(0))
    assert b.x.shape == (16, 13, 1, 1) and torch.equal(b.x[:, :, 0, 0], dm.x_train[b.index])


@pytest.mark.parametrize("source", [breast_cancer, wine])
def test_mlp_teacher_student_and_classical_students_beat_the_majority(source):
    data = source()
    dm = data.datamodule(batch_size=32, val_size=0.15, seed=0)
    majority = majority_accuracy(data.y_train, data.y_test)
    torch.manual_seed(0)
    kw = {"num_classes": data.num_classes, "in_channels": data.in_channels, "pool_to": 1}
    teacher = create_model("mlp", hidden=[64], **kw)
    opt = OptimSettings(epochs=8, lr=0.05, weight_decay=1e-4)
    Trainer(build_distiller("scratch", teacher, None, dm.input_shape), dm, opt).fit()
    student = create_model("mlp", hidden=[8], **kw)
    Trainer(build_distiller("kd", student, teacher, dm.input_shape, alpha=0.9), dm, opt).fit()
    accs = {}
    for name, m in (("teacher", teacher), ("student", student)):
        logits, y = predict(m, dm.eval_batches("test"))
        accs[name] = float((logits.argmax(1) == y).float().mean())

    def teacher_proba(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.softmax(teacher.eval()(torch.from_numpy(x).float()[:, :, None, None]), 1).double().numpy()

    x_tr, x_te = dm.x_train.numpy(), data.x_test.numpy()
    for cls in (SoftTargetLogisticRegression(), SoftTargetDecisionTree(max_depth=4, random_state=0),
                SoftTargetGradientBoosting(max_iter=20, random_state=0)):  # fmt: skip
        cls.set_params(teacher=teacher_proba, temperature=2.0)
        accs[type(cls).__name__] = cls.fit(x_tr).score(x_te, data.y_test.numpy())  # no labels: teacher only
    margin = (1 - majority) / 2  # at least halfway from the majority class to perfect
    assert all(a >= majority + margin for a in accs.values()), (majority, accs)

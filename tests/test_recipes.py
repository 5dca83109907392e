"""Every shipped recipe loads against the schema; the CIFAR-100 recipes build and take a training step."""

from pathlib import Path

import pytest
import torch
import yaml

from distill import api
from distill.config import load_config
from distill.distillers import DISTILLERS, build_distiller

ROOT = Path(__file__).resolve().parents[1]
# compress/sweep/text recipes have their own schemas
PIPELINE_RECIPES = ["demo", "few_labels", "smoke", "tabular", "flow"]
CIFAR = sorted((ROOT / "configs/cifar100").glob("*.yaml"))
SYNTH_100 = ["data.name=synthetic", "data.options={n_train: 32, n_test: 16, num_classes: 100, channels: 3, size: 32}",
             "data.val_size=0"]  # fmt: skip


def assert_matches(raw, obj, where="") -> None:
    """Every value written in the YAML is the value of the loaded config at the same place."""
    if isinstance(raw, dict):
        for k, v in raw.items():
            assert_matches(v, obj[k] if isinstance(obj, dict) else getattr(obj, k), f"{where}.{k}")
    elif isinstance(raw, list):
        assert len(obj) == len(raw), where
        for i, (r, o) in enumerate(zip(raw, obj, strict=True)):
            assert_matches(r, o, f"{where}.{i}")
    else:
        assert obj == raw, (where, obj, raw)


@pytest.mark.parametrize("name", PIPELINE_RECIPES)
def test_pipeline_recipes_load(name):
    path = ROOT / "configs" / f"{name}.yaml"
    cfg = load_config(path)
    raw = yaml.safe_load(path.read_text())
    assert_matches(raw, cfg)
    assert [m.name for m in cfg.methods] == [m["name"] for m in raw["methods"]]
    assert {m.name for m in cfg.methods} <= set(DISTILLERS.names())
    assert cfg.methods[0].name == "scratch"  # every shipped pipeline recipe has its baseline first


def test_cifar100_recipes_follow_the_crd_protocol():
    assert len(CIFAR) == 5
    for path in CIFAR:
        cfg = load_config(path)
        assert cfg.data.name == "cifar100" and cfg.data.batch_size == 64
        assert cfg.train.epochs == 240 and list(cfg.train.milestones) == [150, 180, 210]
        assert cfg.train.weight_decay == 5e-4 and cfg.train.lr in (0.05, 0.01)
        assert {"scratch", "kd", "crd", "dkd"} <= {m.name for m in cfg.methods}


@pytest.mark.parametrize("path", CIFAR, ids=[p.stem for p in CIFAR])
def test_cifar100_recipe_starts_and_trains(path):
    cfg = load_config(path, SYNTH_100)
    data, dm = api.load_data(cfg)
    api.validate_recipe(cfg, data, dm)  # every model and method builds on 3×32×32, 100 classes
    teacher = api.build_model(cfg.teacher, data).eval()
    batch = next(dm.train_batches(0))
    x, y = batch.x[:4], batch.y[:4]
    for m in cfg.methods:
        student = api.build_model(cfg.student, data)
        d = build_distiller(m.name, student, teacher, dm.input_shape, len(dm.x_train), 100, **m.params)
        d.train()
        opt = torch.optim.SGD(d.trainable_parameters(), lr=cfg.train.lr, momentum=0.9)
        out = d(x, y, index=batch.index[:4])
        assert torch.isfinite(out.loss), (path.stem, m.name)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        d.close()


def test_the_shipped_demo_teacher_loads_and_is_what_its_recipe_makes():
    from distill.artifacts import load_model

    model, spec = load_model(ROOT / "assets/demo-teacher")  # checks the sha256 recorded in model.json
    recipe = load_config(ROOT / "configs/demo_teacher.yaml")
    assert (spec["model"], spec["kwargs"]) == (recipe.teacher.model, recipe.teacher.kwargs)
    assert sum(p.numel() for p in model.parameters()) == 162_562
    assert spec["dataset"]["name"] == recipe.data.name == "fashion_mnist"
    assert spec["sha256"] in (ROOT / "assets/README.md").read_text()  # the documented hash is the shipped one
    demo = load_config(ROOT / "configs/demo.yaml")
    assert demo.teacher.checkpoint == "assets/demo-teacher" and demo.data.split_seed == recipe.seed
    assert demo.data.val_size == recipe.data.val_size

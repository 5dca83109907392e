"""Recipes: strict keys with suggestions, types, overrides, safe YAML."""

import pytest

from distill.config import Config, dump_yaml, load_config
from distill.errors import ConfigError


def write(tmp_path, text):
    p = tmp_path / "r.yaml"
    p.write_text(text)
    return p


def test_defaults_and_round_trip(tmp_path):
    cfg = load_config(None)
    assert isinstance(cfg, Config) and cfg.data.name == "fashion_mnist"
    again = load_config(write(tmp_path, dump_yaml(cfg)))
    assert again == cfg


def test_overrides_reach_nested_keys_and_list_items(tmp_path):
    p = write(tmp_path, "methods:\n  - name: scratch\n  - name: kd\n    params: {temperature: 4}\n")
    cfg = load_config(
        p, ["train.lr=0.2", "methods.1.params.temperature=2", "data.train_subset=100", "teacher.kwargs={width: 3}"]
    )
    assert cfg.train.lr == 0.2 and cfg.methods[1].params["temperature"] == 2
    assert cfg.data.train_subset == 100 and cfg.teacher.kwargs == {"width": 3}


@pytest.mark.parametrize(
    ("text", "overrides", "match"),
    [
        ("trian: {epochs: 1}", [], r"unknown key 'trian'. Did you mean 'train'"),
        ("train: {epoch: 1}", [], r"unknown key 'train.epoch'. Did you mean 'train.epochs'"),
        ("train: {epochs: three}", [], "train.epochs must be an integer"),
        ("train: {lr: -0.1}", [], r"train: lr must be in \(0.0, inf\]"),
        ("data: {augment: 1}", [], "data.augment must be true or false"),
        ("methods: {name: kd}", [], "methods must be a list"),
        ("train: [1, 2", [], "not valid YAML at line"),
        ("- 1\n- 2\n", [], "must be a YAML mapping"),
        ("seed: !!python/object/apply:os.system ['echo hi']", [], "not valid YAML"),
        ("", ["train.lr"], "must look like key.path=value"),
        ("methods: [{name: kd}]", ["methods.3.name=x"], "list index"),
        ("methods: [{name: kd}, {name: kd}]", [], "appear twice"),
        ("select: worst", [], "select must be"),
    ],
)
def test_bad_recipes_are_refused_with_a_clear_message(tmp_path, text, overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config(write(tmp_path, text), overrides)


def test_missing_recipe(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")

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
        ("train: {lr: -0.1}", [], r"train: lr must be in \(0.0, inf\)"),
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


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("seed: 1\ntrain: {epochs: 2}\nseed: 3\n", r"line 3, column 1: key 'seed' appears twice \(first at line 1\)"),
        ("train:\n  lr: 0.1\n  lr: 0.2\n", r"line 3, column 3: key 'lr' appears twice \(first at line 2\)"),
        ("data: {batch_size: 1, batch_size: 2}\n", "key 'batch_size' appears twice"),
    ],
)
def test_duplicate_keys_are_refused_with_their_lines(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        load_config(write(tmp_path, text))


def test_yaml_merge_keys_still_work(tmp_path):
    text = (
        "data: &d {batch_size: 8, augment: false}\nteacher: {kwargs: {width: 2}}\nstudent: {kwargs: {<<: {width: 3}}}\n"
    )
    assert load_config(write(tmp_path, text)).student.kwargs == {"width": 3}


def test_non_utf8_recipe_is_one_clear_error(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_bytes("seed: 0  # caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"is not UTF-8 text \(byte 0xe9 at offset 14\)"):
        load_config(p)
    p.write_bytes(b"\xef\xbb\xbfseed: 4\n")  # a UTF-8 byte-order mark is fine
    assert load_config(p).seed == 4


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["train.lr=.inf"], "train.lr must be a finite number, got inf"),
        (["train.lr=.nan"], "train.lr must be a finite number, got nan"),
        (["train.lr=1.0e+999"], "train.lr must be a finite number"),
        ([f"train.lr={10**400}"], r"train.lr must be a finite number, got 1000.*…"),
        (["teacher.train.momentum=-.inf"], "teacher.train.momentum must be a finite number"),
        (["methods=[{name: kd, params: {temperature: .inf}}]"], r"methods.0.params.temperature must be a finite"),
        (["student.kwargs={dropout: .nan}"], "student.kwargs.dropout must be a finite number"),
        (["data.options={noise: [1, .inf]}"], r"data.options.noise.1 must be a finite number"),
        (["data.options={1: 2}"], r"data.options: keys must be names \(strings\), got 1"),
        (["seed=-1"], "seed must be an integer from 0 to 4294967295, got -1"),
        ([f"seed={2**32}"], "seed must be an integer from 0 to 4294967295"),
        (["train.grad_clip=-1"], r"train: grad_clip must be null \(no clipping\) or a norm > 0, got -1"),
        (["train.grad_clip=0"], "grad_clip must be null"),
        (["train.gamma=0"], r"gamma must be in \(0.0, inf\)"),
        (["train.milestones=[-1]"], r"milestones.0 must be in \[0.0, inf\)"),
        (["train.epochs=2", "train.warmup_epochs=5"], "warmup_epochs=5.0 is longer than the 2 epoch"),
        (["data.train_subset=0"], r"data: train_subset must be null \(the whole split\) or a count >= 1, got 0"),
        (["data.test_subset=-5"], "test_subset must be null"),
        (["data.eval_batch_size=0"], "eval_batch_size must be >= 1, got 0"),
        (["data.val_size=1.5"], r"val_size must be a fraction in \[0, 1\) or a whole count, got 1.5"),
        (["data.val_size=0", "select=best"], "select=best need.* a validation split, but data.val_size=0"),
        (["data.val_size=0", "flow.finetune_on_val=true"], "flow.finetune_on_val need"),
        (["flow.finetune_lr=.inf"], "flow.finetune_lr must be a finite number"),
        (["bench.threads=0"], r"threads must be null \(torch's default\) or from 1 to"),
        (["bench.batch_sizes=[1, 0]"], "batch_sizes.1 must be >= 1, got 0"),
        (["bench.repeats=0"], "repeats must be >= 1"),
        (["train.lr=0.1", "train.lr.x=1"], "cannot set train.lr.x: train.lr is 0.1, not a mapping or a list"),
        (["methods=[kd]", "methods.0.params.temperature=2"], "methods.0 is 'kd', not a mapping"),
        (["train.lr=[1"], r"the value is not valid YAML \(expected ',' or '\]', but got '<stream end>'\)$"),
    ],
)
def test_every_numeric_setting_is_finite_and_in_range(overrides, match):
    with pytest.raises(ConfigError, match=match) as info:
        load_config(None, overrides)
    assert "\n" not in str(info.value)


def test_zero_validation_split_is_fine_where_nothing_needs_it():
    assert load_config(None, ["data.val_size=0"]).data.val_size == 0


def test_optim_settings_check_types_and_finiteness_when_built_directly():
    from distill.engine.trainer import OptimSettings

    for kw, match in [
        ({"lr": "fast"}, "lr must be a number, got 'fast'"),
        ({"lr": float("inf")}, "lr must be a finite number .*, got inf"),
        ({"weight_decay": float("nan")}, "weight_decay must be a finite number"),
        ({"epochs": 2.5}, "epochs must be an integer, got 2.5"),
        ({"milestones": "5,8"}, "milestones must be a list"),
        ({"grad_clip": -1.0}, "grad_clip must be null"),
    ]:
        with pytest.raises(ConfigError, match=match):
            OptimSettings(**kw)
    assert OptimSettings(grad_clip=1.0, warmup_epochs=1, epochs=1).grad_clip == 1.0


@pytest.mark.parametrize(
    ("method", "params", "match"),
    [
        ("kd", {"temperature": "hot"}, "method 'kd': temperature must be a number, got 'hot'"),
        ("kd", {"temperature": float("inf")}, "method 'kd': temperature must be a finite number, got inf"),
        ("kd", {"temperature": 0}, r"method 'kd': temperature must be in \(0.0, inf\), got 0"),
        ("kd", {"alpha": float("nan")}, "method 'kd': alpha must be a finite number"),
        ("kd", {"alpha": -0.5}, r"method 'kd': alpha must be in \[0.0, inf\), got -0.5"),
        ("fitnet", {"hint_weight": -1}, r"method 'fitnet': hint_weight must be in \[0.0, inf\)"),
        ("fitnet", {"hint_epochs": 1.5}, "method 'fitnet': hint_epochs must be an integer, got 1.5"),
        ("crd", {"nce_t": -0.07}, r"method 'crd': nce_t must be in \(0.0, inf\)"),
        ("dist", {"gamma": -2.0}, r"method 'dist': gamma must be in \[0.0, inf\)"),
        ("multi_kd", {"temperatures": [4.0, 0.0]}, r"method 'multi_kd': temperatures\[1\] must be in \(0.0, inf\)"),
        ("multi_kd", {"weights": [1.0, float("inf")]}, r"method 'multi_kd': weights.1 must be a finite number"),
        ("multi_kd", {"normalize": 1}, "method 'multi_kd': normalize must be true or false, got 1"),
        ("at", {"student_layers": "layer1"}, "method 'at': student_layers must be a list"),
    ],
)
def test_method_parameters_are_checked_generically_before_building(tiny, method, params, match):
    from distill.distillers import build_distiller

    with pytest.raises(ConfigError, match=match):
        build_distiller(method, tiny(), tiny(8), (1, 28, 28), 256, 4, **params)

"""DataModule's documented contract: constructor defaults and boundaries, labelled-fraction masking, labeled_only,
shard, steps_per_epoch, batch iterators (incl. teacher-cache replay) and load_datamodule's pass-through.

Expected values are derived from the documented behaviour (counts, rounding, set relations), not from the code.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from distill.config.schema import DataConfig
from distill.data.augment import AugmentSpec, Views, apply_views, normalize, spec_for
from distill.data.base import load_dataset
from distill.data.module import DataModule, labelled_mask, load_datamodule
from distill.errors import DataError


def synth(n_train: int = 300, n_test: int = 40, num_classes: int = 4, size: int = 6, seed: int = 0, **meta):
    data = load_dataset("synthetic", n_train=n_train, n_test=n_test, num_classes=num_classes, size=size, seed=seed)
    data.meta.update(meta)
    return data


@pytest.fixture(scope="module")
def data():
    return synth()


def rows(x: torch.Tensor) -> set[bytes]:
    return {bytes(r.contiguous().numpy().tobytes()) for r in x}


# ------------------------------------------------------------------------------------------ constructor defaults


def test_default_batch_size_is_128_and_val_size_is_a_tenth(data):
    dm = DataModule(data)
    n = len(data.x_train)
    assert len(dm.x_val) == round(0.1 * n) == 30
    assert len(dm.x_train) == n - 30
    first = next(dm.train_batches(0))
    assert len(first.x) == 128
    assert dm.batch_size == 128


def test_default_seed_is_0(data):
    dm, dm0, dm1 = DataModule(data), DataModule(data, seed=0), DataModule(data, seed=1)
    assert dm.seed == 0
    assert torch.equal(dm.x_val, dm0.x_val)
    assert not torch.equal(dm0.x_val, dm1.x_val)  # the seed matters, so the comparison above means something
    assert torch.equal(next(dm.train_batches(2)).index, next(dm0.train_batches(2)).index)


def test_default_augment_is_on(data):
    assert spec_for(data).enabled  # synthetic asks for a random crop
    dm, on, off = DataModule(data), DataModule(data, augment=True), DataModule(data, augment=False)
    assert dm.spec == on.spec == spec_for(data)
    b, b_on, b_off = next(dm.train_batches(0)), next(on.train_batches(0)), next(off.train_batches(0))
    assert torch.equal(b.x, b_on.x)
    assert not torch.equal(b.x, b_off.x)


def test_augment_false_yields_plain_normalised_images(data):
    dm = DataModule(data, augment=False)
    assert not dm.spec.enabled
    for b in dm.train_batches(1):
        assert torch.equal(b.x, normalize(dm.x_train[b.index], dm.mean, dm.std))


def test_default_eval_batch_size_is_1024():
    big = synth(n_train=40, n_test=1100, size=2)
    dm = DataModule(big)
    sizes = [len(b.x) for b in dm.eval_batches("test")]
    assert sizes == [1024, 1100 - 1024]
    assert dm.eval_batch_size == 1024


def test_default_rank_world_size_and_labelled_fraction(data):
    dm = DataModule(data)
    assert (dm.rank, dm.world_size) == (0, 1)
    assert dm.labeled_fraction == 1.0
    assert dm.num_labeled == len(dm.x_train)
    assert dm.labeled_only() is dm  # everything labelled: nothing to restrict
    seen = torch.cat([b.index for b in dm.train_batches(0)])
    assert sorted(seen.tolist()) == list(range(len(dm.x_train)))  # one rank sees the whole epoch


# ------------------------------------------------------------------------------------------ val_size boundaries


def test_val_size_float_one_is_a_count_of_one(data):
    assert len(DataModule(data, val_size=1.0).x_val) == 1
    assert len(DataModule(data, val_size=1).x_val) == 1
    assert len(DataModule(data, val_size=5.0).x_val) == 5
    assert len(DataModule(data, val_size=0.5).x_val) == 150
    assert len(DataModule(data, val_size=0).x_val) == 0


def test_val_size_taking_everything_is_refused(data):
    n = len(data.x_train)
    with pytest.raises(DataError, match="leaves no training data"):
        DataModule(data, val_size=n)
    assert len(DataModule(data, val_size=n - 1).x_train) == 1


def test_val_fraction_rounding_to_zero_is_refused():
    d = synth(n_train=20)
    msg = r"rounds to 0 validation samples; use 0 for no validation split, or a larger fraction or a count$"
    with pytest.raises(DataError, match=msg):
        DataModule(d, val_size=0.01)


def test_split_seed_fixes_the_split_whatever_the_seed(data):
    a = DataModule(data, seed=5, split_seed=0)
    assert torch.equal(a.x_val, DataModule(data, seed=0).x_val)
    assert not torch.equal(a.x_val, DataModule(data, seed=5).x_val)
    assert a.seed == 5


# ------------------------------------------------------------------------------------------ batch size boundaries


def test_batch_size_one_accepted_zero_refused(data):
    dm = DataModule(data, batch_size=1, eval_batch_size=1)
    assert len(next(dm.train_batches(0)).x) == 1
    assert len(next(dm.eval_batches("val")).x) == 1
    with pytest.raises(DataError, match="batch_size must be >= 1"):
        DataModule(data, batch_size=0)
    with pytest.raises(DataError, match="eval_batch_size must be >= 1"):
        DataModule(data, eval_batch_size=0)


# ------------------------------------------------------------------------------------------ labels vs classes


def test_a_test_label_equal_to_num_classes_is_refused():
    d = synth()
    d.y_test = d.y_test.clone()
    d.y_test[0] = d.num_classes  # past ImageData's own check: DataModule must still refuse it
    with pytest.raises(DataError, match=f"label {d.num_classes} found but only {d.num_classes} classes"):
        DataModule(d)


def test_a_train_label_equal_to_num_classes_is_refused():
    d = synth()
    d.y_train = d.y_train.clone()
    d.y_train[:] = d.num_classes
    with pytest.raises(DataError, match=f"label {d.num_classes} found"):
        DataModule(d, val_size=0)


def test_the_largest_valid_label_is_accepted_and_an_empty_test_split_is_fine():
    d = synth(n_test=0)
    assert int(d.y_train.max()) == d.num_classes - 1
    dm = DataModule(d)
    assert len(dm.x_test) == 0
    assert list(dm.eval_batches("test")) == []


# ------------------------------------------------------------------------------------------ the dataset's own split


def test_dataset_validation_index_is_used_whatever_val_size():
    fixed = [3, 7, 9]
    d = synth(validation_index=fixed)
    dm = DataModule(d, val_size=1)  # one sample asked for: the dataset's split still wins
    assert torch.equal(dm.x_val, d.x_train[fixed])
    assert len(dm.x_train) == len(d.x_train) - 3
    assert rows(dm.x_train).isdisjoint(rows(dm.x_val)) or len(rows(d.x_train)) < len(d.x_train)
    assert len(DataModule(d, val_size=0).x_val) == 0  # 0 still means none


def test_dataset_validation_index_of_narrow_integer_dtype():
    fixed = np.array([1, 4, 6], dtype=np.uint8)  # positions, whatever integer dtype they come in
    d = synth(validation_index=fixed)
    dm = DataModule(d)
    assert torch.equal(dm.x_val, d.x_train[[1, 4, 6]])
    assert len(dm.x_train) == len(d.x_train) - 3


def test_dataset_validation_index_of_one_sample_is_accepted():
    d = synth(validation_index=[5])
    dm = DataModule(d)
    assert torch.equal(dm.x_val, d.x_train[[5]])
    assert len(dm.x_train) == len(d.x_train) - 1


def test_dataset_validation_index_covering_everything_is_refused():
    d = synth(n_train=20)
    d.meta["validation_index"] = list(range(20))
    with pytest.raises(DataError, match="its validation split has 20 of 20 training samples"):
        DataModule(d)


# ------------------------------------------------------------------------------------------ labelled fraction


def test_labelled_mask_refuses_fractions_outside_0_1():
    y = torch.arange(10) % 2
    for f in (0, -0.5, 1.5):
        with pytest.raises(DataError, match=r"labeled_fraction must be in \(0, 1\]"):
            labelled_mask(y, f, 0)
    assert bool(labelled_mask(y, 1, 0).all())


def test_labelled_mask_is_stratified():
    y = torch.tensor([0] * 40 + [1] * 20 + [2] * 3 + [3] * 1)[
        torch.randperm(64, generator=torch.Generator().manual_seed(1))
    ]
    for f in (0.1, 0.25, 0.5, 0.9):
        keep = labelled_mask(y, f, 3)
        assert keep.dtype == torch.bool and keep.shape == y.shape
        for c, count in ((0, 40), (1, 20), (2, 3), (3, 1)):
            assert int(keep[y == c].sum()) == max(1, round(f * count)), (f, c)


def test_labelled_mask_depends_on_the_seed_only():
    y = torch.arange(200) % 4
    a, b, c = labelled_mask(y, 0.3, 0), labelled_mask(y, 0.3, 0), labelled_mask(y, 0.3, 1)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_labelled_mask_pinned_for_reproducibility():
    """Saved runs name their labelled set by (seed, fraction): the draw must not change between versions."""
    y = torch.arange(12) % 2
    keep = labelled_mask(y, 0.5, 2)
    assert keep.nonzero().flatten().tolist() == PINNED_MASK


PINNED_MASK = [0, 3, 5, 6, 7, 10]  # regression pin: the draw of this version (seed * 7919 + 17)


def test_labelled_fraction_masks_the_right_count_per_class(data):
    full = DataModule(data, seed=4)
    dm = DataModule(data, seed=4, labeled_fraction=0.25)
    assert torch.equal(dm.x_train, full.x_train)  # the split does not change
    unl = dm.y_train == -1
    assert bool(((dm.y_train >= 0) | unl).all())  # -1 and nothing else marks the unlabelled
    for c in range(data.num_classes):
        count = int((full.y_train == c).sum())
        assert int((dm.y_train == c).sum()) == max(1, round(0.25 * count))
    assert int(unl.sum()) == len(dm.y_train) - dm.num_labeled
    assert torch.equal(dm.y_train[~unl], full.y_train[~unl])  # the labelled keep their labels
    assert dm.labeled_fraction == 0.25
    assert int((data.y_train == -1).sum()) == 0  # the dataset itself is untouched
    other = DataModule(data, seed=5, split_seed=4, labeled_fraction=0.25)
    assert torch.equal(other.x_train, dm.x_train)
    assert not torch.equal(other.y_train, dm.y_train)  # the labelled set is drawn with the seed


def test_labeled_fraction_one_keeps_every_label(data):
    dm = DataModule(data, labeled_fraction=1.0)
    assert dm.num_labeled == len(dm.y_train)
    assert torch.equal(dm.y_train, DataModule(data).y_train)


# ------------------------------------------------------------------------------------------ labeled_only


def test_labeled_only_is_exactly_the_labelled_rows(data):
    dm = DataModule(data, labeled_fraction=0.1, seed=2)
    keep = dm.y_train >= 0
    sub = dm.labeled_only()
    assert sub is not dm
    assert torch.equal(sub.x_train, dm.x_train[keep])
    assert torch.equal(sub.y_train, dm.y_train[keep])
    assert bool((sub.y_train >= 0).all()) and sub.num_labeled == int(keep.sum()) == len(sub.x_train)
    assert sub.labeled_fraction == 1.0
    assert sub.labeled_only() is sub
    for name in ("val", "test"):
        assert torch.equal(sub.split(name)[0], dm.split(name)[0])
        assert torch.equal(sub.split(name)[1], dm.split(name)[1])
    assert len(dm.x_train) == len(DataModule(data).x_train)  # the original keeps its transfer set
    assert int((dm.y_train == -1).sum()) > 0
    assert sub.steps_per_epoch() == math.ceil(len(sub.x_train) / sub.batch_size)


def test_labeled_only_without_any_label_is_refused(data):
    dm = DataModule(data, labeled_fraction=0.5)
    dm.y_train[:] = -1
    msg = r"^no training sample has a label, so a method without a teacher has nothing to learn from$"
    with pytest.raises(DataError, match=msg):
        dm.labeled_only()


# ------------------------------------------------------------------------------------------ shard and steps


@pytest.mark.parametrize("world", [2, 3, 7])
def test_shards_are_disjoint_equal_and_cover_the_epoch(data, world):
    n = len(DataModule(data).x_train)  # 270
    per = n // world
    seen = []
    for r in range(world):
        dm = DataModule(data, batch_size=16)
        assert dm.shard(r, world) is dm
        assert (dm.rank, dm.world_size) == (r, world)
        idx = torch.cat([b.index for b in dm.train_batches(3)]).tolist()
        assert len(idx) == per
        assert dm.steps_per_epoch() == math.ceil(per / 16) == len(list(dm.train_batches(3)))
        seen.append(set(idx))
    for a in range(world):
        for b in range(a + 1, world):
            assert seen[a].isdisjoint(seen[b])
    union = set().union(*seen)
    assert len(union) == per * world and union <= set(range(n))
    if n % world == 0:
        assert union == set(range(n))


def test_shard_refuses_bad_ranks_and_too_few_samples():
    d = synth(n_train=20)
    dm = DataModule(d, val_size=0)
    for rank, world in ((-1, 2), (2, 2), (5, 3)):
        with pytest.raises(DataError, match=f"rank {rank} is outside world_size {world}"):
            dm.shard(rank, world)
    with pytest.raises(DataError, match="20 training samples cannot be shared by 21 ranks"):
        dm.shard(0, 21)
    assert dm.shard(19, 20) is dm  # one sample each: allowed
    assert len(torch.cat([b.index for b in dm.train_batches(0)])) == 1
    assert dm.shard(0, 1).world_size == 1


@pytest.mark.parametrize(
    ("n_train", "world", "batch", "steps"),
    [(10, 1, 3, 4), (10, 4, 1, 2), (10, 3, 2, 2), (9, 1, 9, 1), (9, 1, 10, 1), (3, 1, 128, 1), (11, 2, 2, 3)],
)
def test_steps_per_epoch_by_hand(n_train, world, batch, steps):
    d = synth(n_train=n_train, num_classes=2)
    dm = DataModule(d, batch_size=batch, val_size=0)
    if world > 1:
        dm.shard(world - 1, world)
    assert dm.steps_per_epoch() == steps
    assert type(dm.steps_per_epoch()) is int
    assert len(list(dm.train_batches(0))) == steps


# ------------------------------------------------------------------------------------------ batch iterators


def test_train_order_depends_only_on_seed_and_epoch(data):
    dm = DataModule(data, batch_size=64)
    a = [(b.index, b.x) for b in dm.train_batches(4)]
    torch.rand(10)  # the global generator must not matter
    b = [(b.index, b.x) for b in dm.train_batches(4)]
    assert all(torch.equal(i, j) and torch.equal(x, y) for (i, x), (j, y) in zip(a, b, strict=True))
    c = torch.cat([b.index for b in dm.train_batches(5)])
    assert not torch.equal(torch.cat([i for i, _ in a]), c)


def test_train_order_matches_the_tabular_module():
    """TabularDataModule is "a DataModule in everything but the batches": the same seed, epoch and size give the
    same sample order (sharded too)."""
    pytest.importorskip("sklearn")
    table = load_dataset("wine")
    n = len(table.x_train)
    img = synth(n_train=n, num_classes=3)
    for seed, epoch, world in ((0, 0, 1), (1, 3, 1), (2, 5, 2)):
        t = table.datamodule(16, 0, seed)
        m = DataModule(img, 16, 0, seed)
        if world > 1:
            t.shard(1, world), m.shard(1, world)
        ti = torch.cat([b.index for b in t.train_batches(epoch)])
        mi = torch.cat([b.index for b in m.train_batches(epoch)])
        assert torch.equal(ti, mi), (seed, epoch)


def test_eval_batches_in_order_with_sizes(data):
    dm = DataModule(data, eval_batch_size=7)
    for name in ("train", "val", "test"):
        x_all, y_all = dm.split(name)
        batches = list(dm.eval_batches(name))
        sizes = [len(b.x) for b in batches]
        assert sizes == [7] * (len(x_all) // 7) + ([len(x_all) % 7] if len(x_all) % 7 else [])
        idx = torch.cat([b.index for b in batches])
        assert idx.tolist() == list(range(len(x_all)))
        assert torch.equal(torch.cat([b.y for b in batches]), y_all)
        assert torch.equal(torch.cat([b.x for b in batches]), normalize(x_all, dm.mean, dm.std))
        assert all(b.teacher_logits is None and b.x.dtype == torch.float32 for b in batches)


def test_unknown_split_names_the_known_ones(data):
    with pytest.raises(DataError, match=r"unknown split 'dev'; expected one of \['test', 'train', 'val'\]"):
        DataModule(data).split("dev")


def test_batches_go_to_the_requested_device(data):
    dm = DataModule(data, batch_size=50, eval_batch_size=50)
    for b in dm.eval_batches("val", device="meta"):
        assert b.x.device.type == "meta" and b.y.device.type == "meta"
    for b in dm.train_batches(0, device="meta"):
        assert b.x.device.type == "meta" and b.y.device.type == "meta"
    cache = FakeCache(len(dm.x_train))
    for b in dm.train_batches(0, device="meta", cache=cache):
        assert b.x.device.type == "meta" and b.teacher_logits.device.type == "meta"


# ------------------------------------------------------------------------------------------ teacher-cache replay


class FakeCache:
    """Views and logits that are plain functions of (epoch, index), so each batch can be checked by hand."""

    def __init__(self, num_samples: int, k: int = 4):
        self.num_samples, self.k = num_samples, k
        self.calls: list[tuple[str, int]] = []

    def views_for(self, epoch: int, index: torch.Tensor) -> Views:
        self.calls.append(("views", epoch))
        return Views(index % 5, (index * 3 + epoch) % 5, index % 2 == 1)

    def logits_for(self, epoch: int, index: torch.Tensor) -> torch.Tensor:
        self.calls.append(("logits", epoch))
        return (epoch * 1000 + index.float())[:, None] + torch.arange(self.k, dtype=torch.float32)[None, :]


def test_cache_replay_uses_the_recorded_views_and_logits(data):
    dm = DataModule(data, batch_size=64)
    assert dm.spec.enabled
    cache = FakeCache(len(dm.x_train))
    batches = list(dm.train_batches(3, cache=cache))
    plain = list(dm.train_batches(3))
    assert [len(b.x) for b in batches] == [len(b.x) for b in plain]
    for b, p in zip(batches, plain, strict=True):
        assert torch.equal(b.index, p.index)  # the same order as without a cache
        views = Views(b.index % 5, (b.index * 3 + 3) % 5, b.index % 2 == 1)
        expect = normalize(apply_views(dm.x_train[b.index], views, dm.spec), dm.mean, dm.std)
        assert torch.equal(b.x, expect)
        assert torch.equal(b.y, dm.y_train[b.index])
        assert torch.equal(b.teacher_logits, 3000 + b.index.float()[:, None] + torch.arange(4.0)[None, :])
    assert cache.calls and all(epoch == 3 for _, epoch in cache.calls)


def test_cache_without_augmentation_replays_logits_only(data):
    dm = DataModule(data, batch_size=100, augment=False)
    cache = FakeCache(len(dm.x_train))
    for b in dm.train_batches(1, cache=cache):
        assert torch.equal(b.x, normalize(dm.x_train[b.index], dm.mean, dm.std))
        assert torch.equal(b.teacher_logits[:, 0], 1000 + b.index.float())
    assert {kind for kind, _ in cache.calls} == {"logits"}


def test_cache_of_another_size_is_refused(data):
    dm = DataModule(data)
    with pytest.raises(DataError, match=f"the teacher cache holds 7 samples but the split has {len(dm.x_train)}"):
        next(dm.train_batches(0, cache=FakeCache(7)))


def test_no_cache_no_teacher_logits(data):
    assert all(b.teacher_logits is None for b in DataModule(data).train_batches(0))


# ------------------------------------------------------------------------------------------ load_datamodule


def synth_config(**kw) -> DataConfig:
    return DataConfig(name="synthetic", options={"n_train": 200, "n_test": 30, "size": 6, "num_classes": 4}, **kw)


def test_load_datamodule_defaults():
    data, dm = load_datamodule(synth_config(), seed=0)
    assert type(dm) is DataModule and dm.data is data
    assert len(data.x_train) == 200 and len(data.x_test) == 30
    assert len(dm.x_val) == 20 and dm.batch_size == 128 and dm.eval_batch_size == 1024
    assert dm.seed == 0 and dm.spec == spec_for(data) and dm.labeled_fraction == 1.0
    ref = DataModule(data)
    assert torch.equal(dm.x_val, ref.x_val) and torch.equal(dm.y_train, ref.y_train)


def test_load_datamodule_passes_every_setting_through():
    cfg = synth_config(
        val_size=12.0, split_seed=3, batch_size=10, eval_batch_size=9, augment=False, labeled_fraction=0.5
    )
    data, dm = load_datamodule(cfg, seed=7)
    assert len(dm.x_val) == 12  # a whole count, as a float in the config
    assert dm.batch_size == 10 and dm.eval_batch_size == 9 and dm.seed == 7
    assert dm.spec == AugmentSpec() and not dm.spec.enabled
    assert dm.labeled_fraction == 0.5
    ref = DataModule(data, 10, 12, seed=7, augment=False, eval_batch_size=9, labeled_fraction=0.5, split_seed=3)
    assert torch.equal(dm.x_val, ref.x_val) and torch.equal(dm.y_train, ref.y_train)
    assert torch.equal(dm.x_val, DataModule(data, 10, 12, seed=3).x_val)  # the split comes from split_seed
    assert not torch.equal(dm.x_val, DataModule(data, 10, 12, seed=7).x_val)
    assert torch.equal(next(dm.train_batches(1)).index, next(ref.train_batches(1)).index)


def test_load_datamodule_fraction_val_size_and_subsets():
    data, dm = load_datamodule(synth_config(val_size=0.25, train_subset=80, test_subset=10), seed=2)
    assert len(data.x_train) == 80 and len(data.x_test) == 10
    assert len(dm.x_val) == 20 and len(dm.x_train) == 60
    full = load_dataset("synthetic", n_train=200, n_test=30, size=6, num_classes=4)
    assert torch.equal(data.x_train, full.subset(80, 10, seed=2).x_train)  # subset drawn with the run's seed
    assert not torch.equal(data.x_train, full.subset(80, 10, seed=3).x_train)
    _, only_train = load_datamodule(synth_config(train_subset=80), seed=2)
    assert len(only_train.data.x_train) == 80 and len(only_train.x_test) == 30


def test_load_datamodule_uses_a_datasets_own_module():
    pytest.importorskip("sklearn")
    cfg = DataConfig(name="wine", val_size=10.0, batch_size=8, eval_batch_size=5, labeled_fraction=0.5, split_seed=1)
    data, dm = load_datamodule(cfg, seed=4)
    assert type(dm).__name__ == "TabularDataModule"
    assert len(dm.x_val) == 10 and dm.batch_size == 8 and dm.eval_batch_size == 5 and dm.seed == 4
    assert dm.labeled_fraction == 0.5 and int((dm.y_train == -1).sum()) > 0
    ref = data.datamodule(8, 10, seed=4, eval_batch_size=5, split_seed=1)
    assert torch.equal(dm.x_val, ref.x_val)
    assert not torch.equal(dm.x_val, data.datamodule(8, 10, seed=4).x_val)


def test_load_datamodule_reads_from_the_configured_root(tmp_path, monkeypatch):
    from distill.data.idx import write_idx

    monkeypatch.delenv("DISTILL_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for prefix, n in (("train", 30), ("t10k", 10)):
        y = np.arange(n, dtype=np.uint8) % 10
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", np.zeros((n, 28, 28), dtype=np.uint8) + y[:, None, None])
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", y)
    data, dm = load_datamodule(DataConfig(name="idx", root=str(tmp_path), val_size=0), seed=0)
    assert len(data.x_train) == 30 and len(dm.x_test) == 10


def test_load_datamodule_passes_root_download_and_options_to_the_loader():
    """A recipe's ``data.root``, ``data.download`` and ``data.options`` reach the dataset's loader as given."""
    from distill.data.base import DATASETS, register_dataset
    from distill.data.synthetic import synthetic

    seen: dict = {}

    @register_dataset("_contract_probe")
    def probe(root=None, download=False, n_train=40, **kw):
        seen.update(root=root, download=download, n_train=n_train)
        return synthetic(n_train=n_train, n_test=10)

    try:
        load_datamodule(DataConfig(name="_contract_probe", root="/some/dir", download=True,
                                   options={"n_train": 60}, val_size=0), seed=0)  # fmt: skip
    finally:
        DATASETS.remove("_contract_probe")
    assert seen == {"root": "/some/dir", "download": True, "n_train": 60}

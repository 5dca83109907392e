"""DataModule invariants, written from the properties rather than the implementation.

Every image of the ``indexed`` dataset below carries its own row number in its first two pixels (high and low byte)
and its label is a fixed function of that number, so any split, batch or view can be traced back to the rows of
the dataset it came from without trusting the module's own index bookkeeping.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from distill.data.base import ImageData
from distill.data.module import DataModule

K = 5  # classes
MEAN, STD = (0.3,), (0.2,)


def label_of(ids: torch.Tensor) -> torch.Tensor:
    return (ids * 7 + ids // 3) % K  # any fixed function of the row number that is not the identity


def indexed(n_train: int = 300, n_test: int = 40, size: int = 8, crop_padding: int = 0, hflip: bool = False):
    """Images ``1 × size × size`` whose pixels (0, 0) and (0, 1) spell the row number; the rest is seeded noise."""
    g = torch.Generator().manual_seed(123)

    def part(n: int, offset: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.arange(offset, offset + n)
        x = torch.randint(0, 256, (n, 1, size, size), generator=g, dtype=torch.uint8)
        x[:, 0, 0, 0] = (ids // 256).to(torch.uint8)
        x[:, 0, 0, 1] = (ids % 256).to(torch.uint8)
        return x, label_of(ids)

    x_train, y_train = part(n_train, 0)
    x_test, y_test = part(n_test, 10_000)
    return ImageData(
        name="indexed",
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        classes=[str(k) for k in range(K)],
        mean=MEAN,
        std=STD,
        hflip=hflip,
        crop_padding=crop_padding,
    )


def ids_of(x: torch.Tensor) -> torch.Tensor:
    """The row numbers spelled by uint8 images."""
    return x[:, 0, 0, 0].long() * 256 + x[:, 0, 0, 1].long()


def by_hand(x: torch.Tensor) -> torch.Tensor:
    """The normalisation every evaluation input must equal: ``(x / 255 − mean) / std`` per channel."""
    mean = torch.tensor(MEAN).view(1, -1, 1, 1)
    std = torch.tensor(STD).view(1, -1, 1, 1)
    return (x.double() / 255.0 - mean) / std


def unnormalise(x: torch.Tensor) -> torch.Tensor:
    """Back to uint8 pixels (exact up to rounding) from normalised float images."""
    mean = torch.tensor(MEAN).view(1, -1, 1, 1)
    std = torch.tensor(STD).view(1, -1, 1, 1)
    return ((x.double() * std + mean) * 255.0).round().clamp(0, 255).to(torch.uint8)


# --- the split ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("val_size", "n_val"), [(0.1, 30), (37, 37), (0.5, 150), (1, 1), (299, 299)])
@pytest.mark.parametrize("seed", [0, 7])
def test_split_is_a_disjoint_cover_of_the_training_set(val_size, n_val, seed):
    data = indexed()
    dm = DataModule(data, batch_size=16, val_size=val_size, seed=seed)
    train, val = ids_of(dm.x_train), ids_of(dm.x_val)
    assert len(val) == n_val and len(train) == 300 - n_val
    assert not set(train.tolist()) & set(val.tolist()), "validation rows also in the training split"
    assert len(set(train.tolist())) == len(train) and len(set(val.tolist())) == len(val), "a row taken twice"
    assert sorted(train.tolist() + val.tolist()) == list(range(300))  # together: exactly the training set
    # labels travel with their rows
    assert torch.equal(dm.y_train, label_of(train)) and torch.equal(dm.y_val, label_of(val))
    # the test split is the official one, untouched
    assert torch.equal(dm.x_test, data.x_test) and torch.equal(dm.y_test, data.y_test)


def test_split_is_seeded_and_stable():
    data = indexed()
    a, b = DataModule(data, val_size=50, seed=3), DataModule(data, val_size=50, seed=3)
    assert torch.equal(a.x_val, b.x_val) and torch.equal(a.x_train, b.x_train)
    others = [set(ids_of(DataModule(data, val_size=50, seed=s).x_val).tolist()) for s in (4, 5, 6)]
    mine = set(ids_of(a.x_val).tolist())
    assert all(o != mine for o in others), "the validation split does not depend on the seed"
    # a random subset, not a block: it spreads over the whole index range
    assert min(mine) < 75 and max(mine) >= 225


def test_no_validation_split_keeps_every_row_for_training():
    data = indexed()
    dm = DataModule(data, val_size=0, seed=0)
    assert len(dm.x_val) == 0 and len(dm.y_val) == 0
    assert sorted(ids_of(dm.x_train).tolist()) == list(range(300))


def test_split_of_the_synthetic_dataset_is_a_multiset_partition(synth):
    """Same property on real-looking data, rows compared by content (duplicates allowed by a multiset)."""
    dm = DataModule(synth, batch_size=32, val_size=32, seed=0)

    def rows(x, y):
        return Counter((bytes(xi.flatten().tolist()), int(yi)) for xi, yi in zip(x, y, strict=True))

    whole = rows(synth.x_train, synth.y_train)
    train, val = rows(dm.x_train, dm.y_train), rows(dm.x_val, dm.y_val)
    assert train + val == whole
    assert len(dm.x_val) == 32 and len(dm.x_train) == len(synth.x_train) - 32


# --- training batches ----------------------------------------------------------------------------------------------


def test_every_epoch_visits_each_training_row_once_with_its_own_label():
    dm = DataModule(indexed(), batch_size=16, val_size=60, seed=1, augment=False)
    train_rows = set(ids_of(dm.x_train).tolist())
    orders = []
    for epoch in range(3):
        seen = []
        for b in dm.train_batches(epoch):
            raw = unnormalise(b.x)
            ids = ids_of(raw)
            assert torch.equal(b.y, label_of(ids)), "a batch's labels are not those of its images"
            assert torch.equal(b.y, dm.y_train[b.index])
            torch.testing.assert_close(b.x.double(), by_hand(dm.x_train[b.index]), rtol=0, atol=1e-5)
            seen += ids.tolist()
        assert sorted(seen) == sorted(train_rows)  # each training row exactly once, no validation row
        orders.append(seen)
    assert orders[0] != orders[1] != orders[2]  # shuffled anew every epoch


def test_augmented_training_batches_keep_labels_with_their_images():
    """With crop and flip on, a view still belongs to its row: undo the flip and find the id pixels again."""
    data = indexed(size=8, crop_padding=0, hflip=True)
    dm = DataModule(data, batch_size=32, val_size=20, seed=0, augment=True)
    flipped = 0
    for b in dm.train_batches(0):
        raw = unnormalise(b.x)
        mirrored = raw.flip(-1)
        for i in range(len(raw)):
            same = torch.equal(raw[i], dm.x_train[b.index[i]])
            flip = torch.equal(mirrored[i], dm.x_train[b.index[i]])
            assert same or flip
            flipped += int(flip and not same)
        assert torch.equal(b.y, label_of(ids_of(dm.x_train[b.index])))
    assert flipped > 0  # the augmentation is really on, so the test above is not vacuous


# --- evaluation batches --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("split", ["train", "val", "test"])
@pytest.mark.parametrize("global_seed", [None, 0, 1234])
def test_evaluation_batches_are_the_raw_images_normalised_even_with_augmentation_on(split, global_seed):
    data = indexed(size=8, crop_padding=2, hflip=True)
    dm = DataModule(data, batch_size=16, val_size=40, seed=0, augment=True, eval_batch_size=7)
    assert dm.spec.enabled  # augmentation is on for training
    if global_seed is not None:
        torch.manual_seed(global_seed)
    x_all, y_all = dm.split(split)
    xs, ys, idx = [], [], []
    for b in dm.eval_batches(split):
        xs.append(b.x)
        ys.append(b.y)
        idx.append(b.index)
    x, y = torch.cat(xs), torch.cat(ys)
    assert torch.equal(torch.cat(idx), torch.arange(len(x_all)))  # in order, each once
    torch.testing.assert_close(x.double(), by_hand(x_all), rtol=0, atol=1e-5)
    assert torch.equal(y, y_all)
    # twice in a row: the same tensors (nothing random about evaluation)
    again = torch.cat([b.x for b in dm.eval_batches(split)])
    assert torch.equal(again, x)


def test_training_batches_do_differ_from_the_raw_images_when_augmented():
    """Guards the test above against a module whose augmentation is silently off."""
    data = indexed(size=8, crop_padding=2, hflip=True)
    dm = DataModule(data, batch_size=64, val_size=40, seed=0, augment=True)
    b = next(dm.train_batches(0))
    assert not torch.allclose(b.x.double(), by_hand(dm.x_train[b.index]), atol=1e-3)


def test_a_datasets_own_validation_split_is_used_exactly_and_survives_a_subset():
    """A dataset that brings its validation split (``meta["validation_index"]``, e.g. held-out speakers) gets
    exactly those samples as validation, none of them in training, whatever ``val_size`` and seed say."""
    from dataclasses import replace

    data = indexed(n_train=300)
    own = torch.arange(250, 300)  # the last 50 rows: another speaker's clips, say
    data = replace(data, meta={"validation_index": own})
    for seed, val_size in ((0, 0.1), (5, 120)):
        dm = DataModule(data, batch_size=32, val_size=val_size, seed=seed, augment=False)
        assert sorted(ids_of(dm.x_val).tolist()) == list(range(250, 300))
        assert sorted(ids_of(dm.x_train).tolist()) == list(range(250))
        assert torch.equal(dm.y_val, label_of(ids_of(dm.x_val)))
    assert len(DataModule(data, batch_size=32, val_size=0, augment=False).x_val) == 0  # 0 still means none
    sub = data.subset(n_train=120, seed=3)
    dm = DataModule(sub, batch_size=32, val_size=0.1, augment=False)
    val_ids = ids_of(dm.x_val)
    assert len(val_ids) > 0 and bool((val_ids >= 250).all())  # still only the dataset's validation rows ...
    assert int((ids_of(sub.x_train) >= 250).sum()) == len(val_ids)  # ... and all of those the subset kept
    assert not set(val_ids.tolist()) & set(ids_of(dm.x_train).tolist())

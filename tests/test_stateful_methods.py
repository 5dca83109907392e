"""VID, FT, CRD, ReviewKD and FitNet's two-stage schedule: state, schedules and loss values on tiny models."""

import math

import numpy as np
import pytest
import torch

from distill.distillers import build_distiller
from distill.engine.trainer import OptimSettings, Trainer
from distill.errors import ConfigError


def capture(module: torch.nn.Module, store: list) -> torch.utils.hooks.RemovableHandle:
    return module.register_forward_hook(lambda _m, _i, out: store.append(out[0] if isinstance(out, tuple) else out))


def np_(x: torch.Tensor) -> np.ndarray:
    return x.detach().double().numpy()


def unit_rows(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def np_pool(x: np.ndarray, size: int) -> np.ndarray:
    """Adaptive average pooling with PyTorch's bins [floor(i·H/l), ceil((i+1)·H/l))."""
    h, w = x.shape[2:]
    out = np.zeros((*x.shape[:2], size, size))
    for i in range(size):
        for j in range(size):
            rows = slice((i * h) // size, -((-(i + 1) * h) // size))
            cols = slice((j * w) // size, -((-(j + 1) * w) // size))
            out[:, :, i, j] = x[:, :, rows, cols].mean(axis=(2, 3))
    return out


# -- CRD -----------------------------------------------------------------------------------------------------------
def make_crd(tiny, dm, n=None, **kw):
    return build_distiller("crd", tiny(4, 2), tiny(8, 1), dm.input_shape, num_samples=n or len(dm.x_train), **kw)


def test_crd_clamps_nce_k_and_sizes_banks(tiny, dm):
    d = make_crd(tiny, dm)
    n = len(dm.x_train)
    assert d.nce_k == n - 1 and d.memory_s.shape == (n, 128) and d.memory_t.shape == (n, 128)
    assert make_crd(tiny, dm, nce_k=8).nce_k == 8
    assert {"memory_s", "memory_t", "z_s", "z_t"} <= set(d.state_dict())


def test_crd_memory_update_rule_for_given_indices(tiny, dm):
    d = make_crd(tiny, dm, nce_k=8).train()
    batch = next(dm.train_batches(0))
    old_s, old_t = d.memory_s.clone(), d.memory_t.clone()
    vs, vt = [], []
    hs, ht = capture(d.embed_s, vs), capture(d.embed_t, vt)
    d(batch.x, batch.y, index=batch.index)
    hs.remove(), ht.remove()
    idx = batch.index.numpy()
    for bank, old, v in ((d.memory_s, old_s, vs[0]), (d.memory_t, old_t, vt[0])):
        mixed = 0.5 * np_(old)[idx] + 0.5 * np_(v)
        np.testing.assert_allclose(np_(bank)[idx], unit_rows(mixed), rtol=1e-5, atol=1e-6)
        others = np.setdiff1d(np.arange(len(old)), idx)
        assert torch.equal(bank[others], old[others])


def test_crd_loss_with_fixed_negatives_matches_numpy(tiny, dm, monkeypatch):
    d = make_crd(tiny, dm, nce_k=5).train()
    batch = next(dm.train_batches(0))
    n, k, tau = len(dm.x_train), 5, 0.07
    gen = torch.Generator().manual_seed(0)
    negatives = torch.randint(0, n, (len(batch.y), k), generator=gen)
    monkeypatch.setattr(d, "sample_negatives", lambda index: negatives)
    bank_s, bank_t = np_(d.memory_s), np_(d.memory_t)
    vs, vt = [], []
    hs, ht = capture(d.embed_s, vs), capture(d.embed_t, vt)
    out = d(batch.x, batch.y, index=batch.index)
    hs.remove(), ht.remove()
    idx = np.concatenate([batch.index.numpy()[:, None], negatives.numpy()], axis=1)

    def nce(anchor: np.ndarray, bank: np.ndarray) -> float:
        h = np.array([[math.exp(bank[j] @ anchor[i] / tau) for j in row] for i, row in enumerate(idx)])
        p, noise = h / (h.mean() * n), k / n  # Z from this (first) batch
        per = [
            math.log(r[0] / (r[0] + noise + 1e-7)) + sum(math.log(noise / (q + noise + 1e-7)) for q in r[1:]) for r in p
        ]
        return -float(np.mean(per))

    expected = 0.8 * (nce(np_(vs[0]), bank_t) + nce(np_(vt[0]), bank_s))
    assert out.losses["crd"].item() == pytest.approx(expected, rel=1e-4)
    assert set(out.losses) == {"ce", "crd"}
    z = d.z_s.item()
    d(batch.x, batch.y, index=batch.index)
    assert d.z_s.item() == z > 0  # estimated once, then fixed


def test_crd_without_index_or_size_uses_in_batch_negatives(tiny, dm):
    batch = next(dm.train_batches(0))
    d = make_crd(tiny, dm)
    before = d.memory_s.clone()
    out = d(batch.x, batch.y)
    assert torch.isfinite(out.losses["crd"]) and torch.equal(d.memory_s, before) and d.z_s.item() == -1
    lazy = build_distiller("crd", tiny(4, 2), tiny(8, 1), dm.input_shape)  # no num_samples: no banks at all
    assert not hasattr(lazy, "memory_s")
    assert torch.isfinite(lazy(batch.x, batch.y, index=batch.index).losses["crd"])
    with pytest.raises(ConfigError, match="out of range"):
        make_crd(tiny, dm, n=10)(batch.x, batch.y, index=batch.index)


def test_crd_kd_weight_adds_the_kd_term(tiny, dm):
    batch = next(dm.train_batches(0))
    assert set(make_crd(tiny, dm, kd_weight=1.0)(batch.x, batch.y, index=batch.index).losses) == {"ce", "kd", "crd"}


def test_crd_state_survives_a_checkpoint_round_trip(tiny, dm, tmp_path):
    d1 = make_crd(tiny, dm, nce_k=16).train()
    for _, batch in zip(range(2), dm.train_batches(0), strict=False):
        sgd_step(d1, batch)
    Trainer(d1, dm, OptimSettings(epochs=1, lr=0.01), out_dir=tmp_path).save_checkpoint()
    assert d1.z_s.item() > 0
    torch.manual_seed(123)  # a second model with other bank contents
    d2 = make_crd(tiny, dm, nce_k=16)
    assert not torch.equal(d2.memory_s, d1.memory_s)
    t2 = Trainer(d2, dm, OptimSettings(epochs=1, lr=0.01))
    t2.load_checkpoint(tmp_path / "checkpoint.safetensors")
    for name in ("memory_s", "memory_t", "z_s", "z_t"):
        assert torch.equal(getattr(d1, name), getattr(d2, name)), name
    d2.load_extra_state_dict(d1.extra_state_dict())
    batch = next(dm.train_batches(1))
    d1.eval(), d2.eval()
    for d in (d1, d2):
        d.sample_negatives = lambda index: torch.arange(16).repeat(len(index), 1)
    with torch.no_grad():
        a = d1(batch.x, batch.y, index=batch.index).losses["crd"]
        b = d2(batch.x, batch.y, index=batch.index).losses["crd"]
    assert torch.allclose(a, b, rtol=1e-6)


# -- VID -----------------------------------------------------------------------------------------------------------
def test_vid_loss_matches_numpy_over_all_layer_pairs(tiny, dm):
    d = build_distiller("vid", tiny(4, 2), tiny(8, 1), dm.input_shape, vid_weight=0.5)
    assert len(d.regressors) == 3  # layer1..layer3
    var = d.regressors[0].variance()
    assert torch.allclose(var, torch.full_like(var, 5.0))
    with torch.no_grad():
        for r in d.regressors:
            r.alpha.normal_()  # distinct variances per channel
    means: list = []
    handles = [capture(r, means) for r in d.regressors]
    batch = next(dm.train_batches(0))
    out = d(batch.x, batch.y)
    for h in handles:
        h.remove()
    expected = 0.0
    for r, mu, t in zip(d.regressors, means, d.teacher.features(), strict=True):
        v = np.log1p(np.exp(np_(r.alpha))) + 1e-5
        m, tt = np_(mu), np_(t)
        expected += np.mean(0.5 * (np.log(v)[None, :, None, None] + (tt - m) ** 2 / v[None, :, None, None]))
    assert out.losses["vid"].item() == pytest.approx(0.5 * expected, rel=1e-5)
    out.loss.backward()
    assert all(r.alpha.grad is not None for r in d.regressors)


# -- FT ------------------------------------------------------------------------------------------------------------
def sgd_step(d, batch, wd=5e-4):
    opt = torch.optim.SGD(d.trainable_parameters(), lr=0.1, momentum=0.9, weight_decay=wd)
    out = d(batch.x, batch.y, index=batch.index)
    opt.zero_grad()
    out.loss.backward()
    opt.step()
    return out


def snapshot(m: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in m.parameters()]


def changed(m: torch.nn.Module, before: list[torch.Tensor]) -> bool:
    return any(not torch.equal(a, b) for a, b in zip(before, m.parameters(), strict=True))


def test_ft_pretrains_paraphraser_then_transfers_factors(tiny, dm):
    d = build_distiller("ft", tiny(4, 2), tiny(8, 1), dm.input_shape).train()
    batch = next(dm.train_batches(0))
    d.set_epoch(0, 3)
    para, trans = snapshot(d.paraphraser), snapshot(d.translator)
    out = sgd_step(d, batch)
    assert set(out.losses) == {"ce", "recon"}
    assert changed(d.paraphraser, para) and not changed(d.translator, trans)

    d.set_epoch(1, 3)
    para, trans = snapshot(d.paraphraser), snapshot(d.translator)
    codes_t, codes_s = [], []
    h1, h2 = capture(d.paraphraser.encoder, codes_t), capture(d.translator, codes_s)
    out = sgd_step(d, batch)
    h1.remove(), h2.remove()
    assert set(out.losses) == {"ce", "ft"}
    assert not changed(d.paraphraser, para) and changed(d.translator, trans)
    ft, fs = unit_rows(np_(codes_t[0]).reshape(len(batch.y), -1)), unit_rows(np_(codes_s[0]).reshape(len(batch.y), -1))
    assert out.losses["ft"].item() == pytest.approx(200 * np.mean(np.abs(ft - fs)), rel=1e-4)


@pytest.mark.parametrize(
    ("epochs", "stage1"),
    [(240, 30), (80, 10), (24, 3), (10, 1), (3, 1), (1, 1)],  # an eighth of the run (the benchmark's 30 of 240), >= 1
)
def test_ft_default_pretraining_is_an_eighth_of_the_run(epochs, stage1, tiny, dm):
    d = build_distiller("ft", tiny(4, 2), tiny(8, 1), dm.input_shape)
    assert d.paraphraser_epochs is None and d.pretraining  # outside the trainer: epoch 0, stage 1
    d.set_epoch(0, epochs)
    assert d.pretraining_epochs() == stage1
    d.set_epoch(stage1 - 1, epochs)
    assert d.pretraining
    d.set_epoch(stage1, epochs)
    assert not d.pretraining


def test_ft_explicit_pretraining_is_used_as_given(tiny, dm):
    d = build_distiller("ft", tiny(4, 2), tiny(8, 1), dm.input_shape, paraphraser_epochs=2)
    d.set_epoch(1, 240)
    assert d.pretraining_epochs() == 2 and d.pretraining
    d.set_epoch(2, 240)
    assert not d.pretraining
    with pytest.raises(ConfigError, match="paraphraser_epochs"):
        build_distiller("ft", tiny(4, 2), tiny(8, 1), dm.input_shape, paraphraser_epochs=-1)


def test_ft_code_has_rate_times_teacher_channels(tiny, dm):
    d = build_distiller("ft", tiny(4, 2), tiny(8, 1), dm.input_shape, paraphraser_epochs=0)
    batch = next(dm.train_batches(0))
    assert d.paraphraser(torch.zeros(2, 32, 7, 7))[0].shape == (2, 16, 7, 7)  # teacher layer3: 32 channels
    assert set(d(batch.x, batch.y).losses) == {"ce", "ft"}


# -- ReviewKD ------------------------------------------------------------------------------------------------------
def test_reviewkd_structure_and_warmup(tiny, dm):
    d = build_distiller("reviewkd", tiny(4, 2), tiny(8, 1), dm.input_shape)
    assert d.student_layers == ["layer1", "layer2", "layer3", "pool"]
    assert d.mid_channels == 16  # capped at the student's deepest stage
    assert d.abfs[0].att is None and all(a.att is not None for a in d.abfs[1:])
    assert d.warmup_factor() == 1.0
    d.set_epoch(0, 24)  # W = min(20, 24 / 12) = 2
    assert d.warmup_factor() == 0.5
    d.set_epoch(1, 24)
    assert d.warmup_factor() == 1.0
    d.set_epoch(4, 240)
    assert d.warmup_factor() == pytest.approx(0.25)


def test_reviewkd_loss_matches_numpy_hcl(tiny, dm):
    d = build_distiller("reviewkd", tiny(4, 2), tiny(8, 1), dm.input_shape, review_weight=2.0)
    d.set_epoch(0, 24)
    outs: list = []
    handles = [capture(a.conv2, outs) for a in d.abfs]
    batch = next(dm.train_batches(0))
    out = d(batch.x, batch.y)
    for h in handles:
        h.remove()
    teacher = [np_(t) for t in d.teacher.features()]
    teacher[-1] = teacher[-1][:, :, None, None]  # the pooled feature as a 1x1 map

    expected = 0.0
    for s, t in zip(outs, reversed(teacher), strict=True):
        s = np_(s)
        assert s.shape == t.shape
        terms = [(1.0, np.mean((s - t) ** 2))]
        for level in (4, 2, 1):
            if level < s.shape[2]:
                terms.append((terms[-1][0] / 2, np.mean((np_pool(s, level) - np_pool(t, level)) ** 2)))
        expected += sum(w * v for w, v in terms) / sum(w for w, _ in terms)
    assert out.losses["review"].item() == pytest.approx(0.5 * 2.0 * expected, rel=1e-5)


# -- FitNet two-stage ----------------------------------------------------------------------------------------------
def test_fitnet_two_stage_trains_only_the_hint_first(tiny, dm):
    student = tiny(4, 2)
    d = build_distiller("fitnet", student, tiny(8, 1), dm.input_shape, hint_epochs=1).train()
    batch = next(dm.train_batches(0))
    d.set_epoch(0, 2)
    fc, layer1, adapter = snapshot(student.fc), snapshot(student.layer1), snapshot(d.adapter)
    out = sgd_step(d, batch)
    assert set(out.losses) == {"hint"}
    assert not changed(student.fc, fc) and not changed(student.layer3, snapshot(student.layer3))
    assert changed(student.layer1, layer1) and changed(d.adapter, adapter)
    d.set_epoch(1, 2)
    out = sgd_step(d, batch)
    assert set(out.losses) == {"ce", "hint"} and changed(student.fc, fc)


def test_fitnet_default_is_single_stage(tiny, dm):
    d = build_distiller("fitnet", tiny(4, 2), tiny(8, 1), dm.input_shape)
    d.set_epoch(0, 2)
    assert set(d(*(lambda b: (b.x, b.y))(next(dm.train_batches(0)))).losses) == {"ce", "hint"}


# -- every method: a few steps without NaN -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "params"),
    [("vid", {}), ("ft", {}), ("crd", {"nce_k": 32}), ("reviewkd", {}), ("fitnet", {"hint_epochs": 1})],
)
def test_method_trains_a_few_steps_without_nan(name, params, tiny, dm):
    d = build_distiller(name, tiny(4, 2), tiny(8, 1), dm.input_shape, num_samples=len(dm.x_train), **params)
    opt = torch.optim.SGD(d.trainable_parameters(), lr=0.02, momentum=0.9)
    d.train()
    for epoch in range(2):  # the second epoch leaves the first stage of ft / fitnet
        d.set_epoch(epoch, 2)
        for i, batch in enumerate(dm.train_batches(epoch)):
            if i == 3:
                break
            out = d(batch.x, batch.y, index=batch.index)
            assert torch.isfinite(out.loss), (name, epoch, i, out.losses)
            opt.zero_grad()
            out.loss.backward()
            opt.step()
    assert all(torch.isfinite(p).all() for p in d.parameters())

"""TeacherCache: exact hits, invalidation, top-k reconstruction, view replay, corruption, trainer integration."""

import threading
from dataclasses import replace

import numpy as np
import pytest
import torch

from distill.data.augment import AugmentSpec, Views, apply_views, normalize, sample_views
from distill.data.module import DataModule
from distill.distillers import build_distiller
from distill.engine import cache as cache_mod
from distill.engine.cache import CacheSettings, TeacherCache, compress_topk, open_cache, reconstruct_topk
from distill.engine.trainer import OptimSettings, Trainer
from distill.errors import ConfigError


@pytest.fixture
def dmf(synth):
    """Crop and flip augmentation, so views really differ."""
    return DataModule(replace(synth, hflip=True), batch_size=32, val_size=32, seed=0)


@pytest.fixture
def builds(monkeypatch):
    """Counts how often the teacher's outputs are (re)computed."""
    calls = []
    real = cache_mod._compute

    def counted(*a, **kw):
        calls.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(cache_mod, "_compute", counted)
    return calls


def build(dm, teacher, path, **kw):
    kw = {"views": 3, "seed": 0, "batch_size": 100, **kw}
    return TeacherCache.build(teacher, dm.x_train, dm.spec, dm.mean, dm.std, directory=path, **kw)


def teacher_on(teacher, dm, views):
    with torch.no_grad():
        return teacher.eval()(normalize(apply_views(dm.x_train, views, dm.spec), dm.mean, dm.std))


def test_hit_returns_exactly_the_stored_values(dmf, tiny, tmp_path, builds):
    t = tiny(8, 1)
    c1 = build(dmf, t, tmp_path)
    c2 = build(dmf, t, tmp_path)
    assert len(builds) == 1 and c1.key == c2.key and c1.path == c2.path
    idx = torch.arange(len(dmf.x_train))
    stored = np.load(c2.path / "logits.npy")  # (K, N, C) float16
    for epoch in range(4):
        got = c2.logits_for(epoch, idx)
        assert torch.equal(got, torch.from_numpy(stored[epoch % 3]).float())
        ref = teacher_on(t, dmf, c2.views_for(epoch, idx))  # the teacher on the recorded view
        torch.testing.assert_close(got, ref, atol=2e-3, rtol=1e-3)
    assert not torch.equal(c2.logits_for(0, idx), c2.logits_for(1, idx))  # different views, different outputs


def test_changes_invalidate_the_key(dmf, tiny, tmp_path, builds):
    t = tiny(8, 1)
    base = build(dmf, t, tmp_path)
    t2 = tiny(8, 1)
    with torch.no_grad():
        next(t2.parameters()).view(-1)[0] += 1e-3
    dm2 = DataModule(replace(dmf.data, hflip=True), batch_size=32, val_size=32, seed=0)
    dm2.x_train = dm2.x_train.clone()
    dm2.x_train[5, 0, 3, 3] ^= 1
    dm3 = DataModule(replace(dmf.data, hflip=False), batch_size=32, val_size=32, seed=0)
    keys = {
        base.key,
        build(dmf, t2, tmp_path).key,  # teacher weights
        build(dm2, t, tmp_path).key,  # one pixel of the data
        build(dm3, t, tmp_path).key,  # augmentation spec
        build(dmf, t, tmp_path, views=4).key,  # K
        build(dmf, t, tmp_path, seed=1).key,  # seed (other views)
        build(dmf, t, tmp_path, topk=2).key,
    }
    assert len(keys) == 7 and len(builds) == 7
    assert build(dmf, t, tmp_path).key == base.key and len(builds) == 7  # the original is still served


def test_topk_reconstruction_matches_numpy():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(6, 10, generator=g) * 3
    k = 3
    vals, idx, tail = compress_topk(z, k)
    rec = reconstruct_topk(vals, idx, tail, 10)
    # independent NumPy: the k largest probabilities kept, the remaining mass spread evenly over the others
    zn = z.double().numpy()
    p = np.exp(zn - zn.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    want = np.empty_like(p)
    for i in range(len(p)):
        top = np.argsort(-p[i])[:k]
        rest = np.setdiff1d(np.arange(10), top)
        want[i, top] = p[i, top]
        want[i, rest] = (1 - p[i, top].sum()) / len(rest)
    np.testing.assert_allclose(torch.softmax(rec.double(), 1).numpy(), want, rtol=1e-5, atol=1e-7)
    # at temperature T the top-k ratios are those of the true logits: exp((z_i - z_j) / T)
    T = 4.0
    q = torch.softmax(rec.double() / T, 1).numpy()
    i0, i1 = idx[:, 0].numpy(), idx[:, 1].numpy()
    r = np.arange(len(q))
    np.testing.assert_allclose(q[r, i0] / q[r, i1], np.exp((zn[r, i0] - zn[r, i1]) / T), rtol=1e-6)
    assert torch.equal(reconstruct_topk(*compress_topk(z, 10), 10), z)  # k = C is lossless


def test_topk_cache_serves_reconstructed_logits(dmf, tiny, tmp_path):
    t = tiny(8, 1)
    c = build(dmf, t, tmp_path, topk=2)
    idx = torch.arange(20)
    full = teacher_on(t, dmf, c.views_for(0, torch.arange(len(dmf.x_train))))[idx]
    want = reconstruct_topk(*compress_topk(full, 2), 4)
    torch.testing.assert_close(c.logits_for(0, idx), want, atol=5e-3, rtol=2e-3)
    assert (c.path / "values.npy").exists() and not (c.path / "logits.npy").exists()


def test_replayed_views_are_the_recorded_ones(dmf, tiny, tmp_path):
    t = tiny(8, 1)
    c = build(dmf, t, tmp_path)
    for epoch in (0, 1, 4):
        batches = list(dmf.train_batches(epoch, cache=c))
        assert sorted(torch.cat([b.index for b in batches]).tolist()) == list(range(len(dmf.x_train)))
        for b in batches[:3]:
            v = c.views_for(epoch, b.index)
            want = normalize(apply_views(dmf.x_train[b.index], v, dmf.spec), dmf.mean, dmf.std)
            assert torch.equal(b.x, want)  # the student sees exactly the image the teacher saw
            with torch.no_grad():
                torch.testing.assert_close(b.teacher_logits, t.eval()(b.x), atol=2e-3, rtol=1e-3)
    # epoch e and e + K replay the same view; the recorded views are real augmentations
    idx = torch.arange(len(dmf.x_train))
    a, b = c.views_for(1, idx), c.views_for(4, idx)
    assert torch.equal(a.dy, b.dy) and torch.equal(a.flip, b.flip)
    assert a.flip.any() and (a.dy != dmf.spec.crop_padding).any()
    # the views are stored on disk, not re-drawn
    stored = np.load(c.path / "views.npy")
    assert np.array_equal(stored[1][:, 0], a.dy.numpy()) and np.array_equal(stored[1][:, 2], a.flip.numpy())


def test_kd_loss_from_cache_equals_kd_with_teacher(dmf, tiny, tmp_path):
    t = tiny(8, 1)
    c = build(dmf, t, tmp_path)
    d = build_distiller("kd", tiny(4, 2), t, dmf.input_shape, temperature=4.0, alpha=0.9)
    b = next(dmf.train_batches(2, cache=c))
    cached = d(b.x, b.y, teacher_logits=b.teacher_logits)
    live = d(b.x, b.y)
    torch.testing.assert_close(cached.loss, live.loss, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(cached.losses["kd"], live.losses["kd"], atol=1e-4, rtol=1e-3)


@pytest.mark.parametrize("damage", ["truncate", "garble", "meta"])
def test_corrupted_cache_is_rebuilt(dmf, tiny, tmp_path, builds, damage):
    t = tiny(8, 1)
    c = build(dmf, t, tmp_path)
    idx = torch.arange(len(dmf.x_train))
    good = c.logits_for(0, idx)
    f = c.path / "logits.npy"
    raw = bytearray(f.read_bytes())
    if damage == "truncate":
        f.write_bytes(bytes(raw[:-100]))
    elif damage == "garble":
        raw[-50] ^= 0xFF
        f.write_bytes(bytes(raw))
    else:
        (c.path / "meta.json").write_text("{not json")
    c2 = build(dmf, t, tmp_path)
    assert len(builds) == 2
    assert torch.equal(c2.logits_for(0, idx), good)


def test_trainer_with_cache_never_runs_the_teacher_in_training(dmf, tiny, tmp_path):
    t = tiny(8, 1)
    c = open_cache(CacheSettings("views", views=2), dmf, t, directory=tmp_path)
    d = build_distiller("kd", tiny(4, 2), t, dmf.input_shape)
    calls = []
    d.teacher.register_forward_hook(lambda *a: calls.append(1))
    state = Trainer(d, dmf, OptimSettings(epochs=2, lr=0.05), cache=c).fit()
    assert len(calls) == 1  # only the validation pass for the agreement metric
    train = state.history[-1]["train"]
    assert len(state.history) == 2 and 0 < train["kd"] < float("inf")


def test_cache_refused_for_feature_methods_and_fixed_with_augmentation(dmf, tiny, tmp_path):
    t = tiny(8, 1)
    c = build(dmf, t, tmp_path)
    d = build_distiller("fitnet", tiny(4, 2), t, dmf.input_shape)
    with pytest.raises(ConfigError, match="features"):
        Trainer(d, dmf, OptimSettings(epochs=1), cache=c)
    with pytest.raises(ConfigError, match="augment"):
        open_cache(CacheSettings("fixed"), dmf, t, directory=tmp_path)
    plain = DataModule(dmf.data, batch_size=32, val_size=32, seed=0, augment=False)
    fixed = open_cache(CacheSettings("fixed", views=5), plain, t, directory=tmp_path)
    assert fixed.num_views == 1
    b = next(plain.train_batches(3, cache=fixed))
    with torch.no_grad():
        torch.testing.assert_close(b.teacher_logits, t.eval()(b.x), atol=2e-3, rtol=1e-3)
    assert open_cache(CacheSettings("off"), dmf, t, directory=tmp_path) is None
    with pytest.raises(ConfigError, match="mode"):
        CacheSettings("sometimes")


def test_spec_without_augmentation_has_one_view(tiny, synth, tmp_path):
    dm = DataModule(synth, batch_size=32, val_size=32, seed=0, augment=False)
    assert dm.spec == AugmentSpec()
    c = build(dm, tiny(8, 1), tmp_path, views=4)
    assert c.num_views == 1
    assert isinstance(c.views_for(3, torch.arange(3)), Views)


def with_batchnorm_statistics(t, dm):
    """``t`` in eval mode with non-trivial BatchNorm running statistics, so folding them really changes weights."""
    t.train()
    with torch.no_grad():
        for b in list(dm.train_batches(0))[:4]:
            t(b.x * 1.5 + 0.3)
    return t.eval()


def reference_views_and_logits(t, dm, k_views, seed):
    """The straightforward computation: K views drawn in turn, the plain teacher on each whole view, one at a time."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + 7)
    views, logits = [], []
    for _ in range(k_views):
        v = sample_views(len(dm.x_train), dm.spec, g)
        views.append(torch.stack([v.dy, v.dx, v.flip.long()], 1))
        logits.append(teacher_on(t, dm, v))
    return torch.stack(views), torch.stack(logits)


@pytest.mark.parametrize("channels_last", [False, True])
def test_batched_build_equals_per_view_reference(dmf, tiny, tmp_path, monkeypatch, channels_last):
    t = with_batchnorm_statistics(tiny(8, 1), dmf)
    before = {k: v.clone() for k, v in t.state_dict().items()}
    used = []
    real_copy = cache_mod.inference_copy
    monkeypatch.setattr(cache_mod, "inference_copy", lambda *a, **kw: used.append(real_copy(*a, **kw)) or used[-1])
    monkeypatch.setattr(cache_mod, "CPU_FORWARD_BATCH", 64)
    # 224 images in blocks of 150 (then 74), each block in forward batches of 64: uneven everywhere
    c = build(dmf, t, tmp_path, views=3, seed=5, batch_size=150, channels_last=channels_last)
    model = used[0]
    assert model is not t and not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # folded
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last) == channels_last
    views, ref = reference_views_and_logits(t, dmf, 3, seed=5)
    assert np.array_equal(np.load(c.path / "views.npy"), views.numpy().astype(np.int16))
    stored = torch.from_numpy(np.load(c.path / "logits.npy")).float()  # (K, N, C) float16
    want = ref.half().float()
    # the same logits up to fp16 rounding: at most one fp16 step apart, and nearly all bit-equal
    torch.testing.assert_close(stored, want, atol=1e-3, rtol=2**-10)
    assert (stored == want).float().mean() > 0.98
    # the teacher itself is untouched: same weights, eval mode, contiguous (the build used a private copy)
    assert all(torch.equal(before[k], v) for k, v in t.state_dict().items()) and not t.training
    assert next(t.parameters()).is_contiguous()


def test_fold_batchnorm_is_exact_to_rounding_and_leaves_the_model(dmf, tiny):
    t = with_batchnorm_statistics(tiny(8, 1), dmf)
    x = next(dmf.train_batches(1)).x
    folded = cache_mod.fold_batchnorm(t)
    assert folded is not None and not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in t.modules()) == 3  # the original keeps its layers
    with torch.no_grad():
        torch.testing.assert_close(folded(x), t(x), atol=1e-5, rtol=1e-5)


class Untraceable(torch.nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it, so the build runs it as it is."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        z = self.inner(x)
        return z if bool(z.sum() > -1e9) else -z


def test_untraceable_teacher_is_built_unfolded(dmf, tiny, tmp_path):
    t = Untraceable(with_batchnorm_statistics(tiny(8, 1), dmf))
    assert cache_mod.fold_batchnorm(t) is None
    c = build(dmf, t, tmp_path, views=2)
    _, ref = reference_views_and_logits(t, dmf, 2, seed=0)
    torch.testing.assert_close(torch.from_numpy(np.load(c.path / "logits.npy")).float(), ref, atol=1e-3, rtol=2**-10)


def test_key_rules_are_unchanged():
    # pinned: a change here serves old caches under new content (or orphans every cache); bump FORMAT on purpose
    assert cache_mod.FORMAT == 1
    k1 = cache_mod.cache_key("t" * 64, "d" * 64, AugmentSpec(2, True), 8, 0, None, [[0.5], [0.25]])
    assert k1 == "fec4b97a6643d08570581ed8243383c60aa370742446c781682085c536af6c1a"
    norm = [[0.1, 0.2, 0.3], [1.0, 2.0, 3.0]]
    k2 = cache_mod.cache_key("t" * 64, "d" * 64, AugmentSpec(0, False), 1, 3, 5, norm)
    assert k2 == "909e831702eb12a8358279d458a9ebf23301573b0818e13dba408d1848d3e859"


def test_build_key_is_computed_from_teacher_and_data(dmf, tiny, tmp_path):
    t = tiny(8, 1)
    c = build(dmf, t, tmp_path, channels_last=True)
    norm = [list(map(float, dmf.mean.flatten())), list(map(float, dmf.std.flatten()))]
    data_sha = cache_mod.hash_tensors([("x_train", dmf.x_train)])
    want = cache_mod.cache_key(cache_mod.model_hash(t), data_sha, dmf.spec, 3, 0, None, norm)
    assert c.key == want and c.path.name == want[:32]
    assert build(dmf, t, tmp_path, channels_last=False).key == want  # the memory format is no part of the key


def test_reused_cache_is_served_without_running_the_teacher(dmf, tiny, tmp_path, builds):
    t = tiny(8, 1)
    forwards = []  # every forward of the teacher, its build-time copy included: its first conv (1 -> 8 channels)

    def hook(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d) and (module.in_channels, module.out_channels) == (1, 8):
            forwards.append(1)

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        settings = CacheSettings("views", views=2)
        open_cache(settings, dmf, t, directory=tmp_path)
        assert len(builds) == 1 and len(forwards) > 0  # the build ran the teacher
        forwards.clear()
        cache = open_cache(settings, dmf, t, directory=tmp_path)
        assert len(builds) == 1 and forwards == []  # reopened: verified, not recomputed
        d = build_distiller("kd", tiny(4, 2), t, dmf.input_shape)
        root = []
        d.teacher.register_forward_hook(lambda *a: root.append(1))
        Trainer(d, dmf, OptimSettings(epochs=2, lr=0.05), cache=cache).fit()
        assert len(root) == 1 and len(forwards) == 1  # only the validation pass for the agreement metric
    finally:
        handle.remove()


def test_cpu_build_streams_share_the_threads_and_give_them_back(dmf, tiny, tmp_path, monkeypatch):
    assert [cache_mod._cpu_streams(t, 128) for t in (1, 2, 4, 6, 16)] == [1, 2, 4, 3, 4]
    assert cache_mod._cpu_streams(8, 40) == 1  # a stream's part never drops below 32 images
    threads = torch.get_num_threads()
    monkeypatch.setattr(cache_mod, "_cpu_streams", lambda t, b: 2)  # side by side even on a one-core runner
    seen = []  # (thread, torch threads) of each forward of the teacher's first conv, the build's copies included
    t = tiny(8, 1)
    t.layer1[0][0].register_forward_hook(
        lambda *a: seen.append((threading.current_thread().name, torch.get_num_threads()))
    )
    c = build(dmf, t, tmp_path, views=2)
    streams = {n for n in seen if n[0].startswith("teacher-cache")}
    assert torch.get_num_threads() == threads and streams  # the parts ran in the build's own threads
    assert {n[1] for n in streams} == {max(1, threads // 2)}
    _, ref = reference_views_and_logits(t, dmf, 2, seed=0)
    torch.testing.assert_close(torch.from_numpy(np.load(c.path / "logits.npy")).float(), ref, atol=1e-3, rtol=2**-10)

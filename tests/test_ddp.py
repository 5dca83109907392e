"""DDP on the CPU: two gloo processes (one thread each) train in lock-step and only rank 0 writes."""

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file, save_file

WORLD = 2


def _worker(rank: int, port: int, out: str) -> None:
    os.environ.update(
        {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank), "WORLD_SIZE": str(WORLD)}
    )
    os.environ["LOCAL_RANK"] = str(rank)
    torch.set_num_threads(1)
    from distill.data.base import load_dataset
    from distill.data.module import DataModule
    from distill.distillers import build_distiller
    from distill.engine import distributed as D
    from distill.engine.cache import CacheSettings, open_cache
    from distill.engine.trainer import OptimSettings, Trainer
    from distill.models.zoo import create_model

    info = D.init_from_env("cpu")
    assert info.rank == rank and info.world_size == WORLD
    root = Path(out)

    def model(width, blocks, seed):
        torch.manual_seed(seed)
        return create_model("cnn", num_classes=4, in_channels=1, width=width, blocks=blocks)

    data = load_dataset("synthetic", n_train=256, n_test=64, num_classes=4)
    # 1) scratch: learns, and every rank ends with the same weights
    dm = DataModule(data, batch_size=16, val_size=32, seed=0)
    d = build_distiller("scratch", model(8, 1, 0), None, dm.input_shape)
    t = Trainer(d, dm, OptimSettings(epochs=3, lr=0.1), out_dir=root / "scratch")
    st = t.fit()
    save_file({k: v.contiguous() for k, v in d.student.state_dict().items()}, str(root / f"scratch{rank}.safetensors"))
    # 2) KD from a teacher cache (rank 0 builds it, rank 1 waits and opens it)
    dm2 = DataModule(data, batch_size=16, val_size=32, seed=0)
    teacher = model(8, 1, 0)
    teacher.load_state_dict(d.student.state_dict())
    cache = open_cache(CacheSettings("views", views=2), dm2, teacher, directory=root / "cache")
    kd = build_distiller("kd", model(4, 1, 1), teacher, dm2.input_shape)
    t2 = Trainer(kd, dm2, OptimSettings(epochs=1, lr=0.05), out_dir=root / "kd", cache=cache)
    st2 = t2.fit()
    save_file({k: v.contiguous() for k, v in kd.student.state_dict().items()}, str(root / f"kd{rank}.safetensors"))
    summary = {
        "steps": st.step,
        "steps_per_epoch": dm.steps_per_epoch(),
        "val_acc": st.history[-1]["val"]["acc"],
        "train": st.history[-1]["train"],
        "kd_train": st2.history[-1]["train"],
        "cache_key": cache.key,
    }
    (root / f"rank{rank}.json").write_text(json.dumps(summary))
    D.cleanup()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch.distributed is not available")
def test_two_process_gloo_training_keeps_ranks_identical(tmp_path):
    mp.spawn(_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(WORLD))
    for name in ("scratch", "kd"):
        w0, w1 = (load_file(str(tmp_path / f"{name}{r}.safetensors")) for r in range(WORLD))
        assert w0.keys() == w1.keys()
        for k in w0:
            assert torch.equal(w0[k], w1[k]), (name, k)
    # each rank saw half of the 224 training samples: 112 / 16 = 7 steps per epoch
    assert r0["steps_per_epoch"] == 7 and r0["steps"] == 21
    assert r0["train"] == r1["train"] and r0["kd_train"] == r1["kd_train"]  # metrics reduced across ranks
    assert r0["cache_key"] == r1["cache_key"]
    assert r0["val_acc"] > 0.6  # it learned (chance is 0.25)
    assert r0["train"]["acc"] > 0.4 and torch.isfinite(torch.tensor(r0["kd_train"]["loss"]))
    # only rank 0 wrote: one checkpoint per run, no stray temporary files
    for name in ("scratch", "kd"):
        files = sorted(p.name for p in (tmp_path / name).iterdir())
        assert "checkpoint.safetensors" in files and not [f for f in files if f.endswith(".tmp")]

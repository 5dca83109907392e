"""Every registered distillation method, measured the same way on Fashion-MNIST, with a student that has converged.

The protocol (issue 15; every choice below is a default that a flag changes, and every flag that changes a result
changes the key of the finished-runs file, so runs under different protocols never mix):

* Teacher: the shipped demo teacher ``assets/demo-teacher`` (``cnn`` width 24, blocks 2, 162,562 parameters, 92.6 %
  test accuracy), trained on the 55,000 training images left after a 5,000-image validation split drawn with
  seed 0. It is loaded, never retrained, and every run keeps *its* validation split (``split_seed=0``) whatever
  the run's seed: students are selected on images that neither they nor the teacher trained on.
* Student: ``cnn`` width 16, blocks 1 (24,058 parameters, the demo's student; the teacher has 6.8x as many).
* Data: a seeded subset of 20,000 of the teacher's 55,000 training images, the same for every seed and method
  (``--train-subset all`` uses all 55,000, at 2.75 times the cost of every run; the issue asks for at least
  20,000), the dataset's standard augmentation (random crop with padding 2, horizontal flip), the 5,000
  validation images for selection, the 10,000 test images.
* Schedule: SGD (Nesterov, momentum 0.9), lr 0.05, cosine, weight decay 5e-4, batch 128, ``--epochs E`` (default
  20). ``--convergence`` trains scratch (seed 0) at E and at 2E and records both in ``protocol.scratch_E`` /
  ``protocol.scratch_2E``: the protocol holds when they are within 0.3 points.
* Methods: every registered method at its own defaults (the papers'), adapted to the run length only by the rules
  in their docstrings (DKD warm-up epochs/12, ReviewKD warm-up min(20, epochs/12), FT paraphraser epochs/8 ...);
  no per-method tuning. Logit methods (no teacher features: kd, dkd, dist, lskd, hard, multi_kd) read the teacher's
  logits from the teacher-output cache (``cache.mode=views`` with K = E recorded views: every epoch replays a
  distinct augmentation with the teacher's logits on exactly those pixels; one cache per seed, shared by these
  methods); feature methods run the teacher every step.
* 3 seeds per method; the table reports mean ± std of the last-epoch test accuracy, the test accuracy of the
  best-validation epoch beside it, the difference to scratch and whether it exceeds 2σ
  (``delta > 2 * max(std_method, std_scratch)``), seconds per training epoch.

Each finished (method, seed) is appended to a JSONL file under ``benchmarks/cache/`` and skipped when the script is
run again; a run in progress checkpoints every epoch and resumes from its last epoch. The results files are
rewritten after every finished run and say which rows are complete (all seeds) and which partial.

    python benchmarks/methods.py --convergence        # once: scratch at E and 2E -> protocol.scratch_E / _2E
    python benchmarks/methods.py --force              # the table: benchmarks/results/methods.{json,md}
    python benchmarks/methods.py --plan               # timed cost of every method and the estimate, then stop
    python benchmarks/methods.py --quick              # a seconds-long smoke run of the whole pipeline
    python benchmarks/methods.py --device cuda --amp bf16 --channels-last --name methods_gpu   # see gpu.sh
    python benchmarks/methods.py --checks FILE        # CUDA paths + throughput (gpu.sh), pass/fail into FILE

Results: ``methods.json``: ``teacher``, ``scratch``, ``methods`` (name -> ``acc_mean``, ``acc_std``, ``seeds``,
``sec_per_epoch``, ``delta_vs_scratch``, ``beyond_2sigma``, ``best_acc``, ``best_epoch``, ``last_epoch``,
``complete`` ...), ``rows`` (complete / partial), ``protocol`` (``images``, ``epochs``, ``scratch_E``,
``scratch_2E`` ...), ``machine``, ``versions``, ``date``; ``methods.md``: the same as a table.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from distill import config as C
from distill.api import build_model, load_teacher, resolve_device, seed_everything
from distill.artifacts import load_weights, versions
from distill.data.base import ImageData, load_dataset
from distill.data.module import DataModule
from distill.distillers import DISTILLERS, build_distiller
from distill.engine.cache import CacheSettings, open_cache
from distill.engine.trainer import OptimSettings, Trainer
from distill.errors import DistillError
from distill.report.metrics import predict

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BASELINE = "scratch"
TEACHER_DIR = "assets/demo-teacher"
CONVERGENCE_POINTS = 0.3  # scratch at E within this many points of scratch at 2E


@dataclass(frozen=True)
class Protocol:
    """Everything that decides a result; its hash keys the finished runs."""

    dataset: str = "fashion_mnist"
    teacher_dir: str = TEACHER_DIR
    teacher_sha: str = ""  # sha256 of the teacher's weights, filled in when loaded
    student: str = "cnn"
    student_kwargs: tuple[tuple[str, Any], ...] = (("width", 16), ("blocks", 1))
    train_subset: int | None = 20_000  # a seeded subset of the teacher's 55,000 training images; None: all
    val_subset: int | None = None  # None: all 5,000 validation images (smaller only in smoke runs)
    test_subset: int | None = None  # None: all 10,000 test images
    val_size: int = 5000  # the teacher's validation split ...
    split_seed: int = 0  # ... drawn with the teacher's seed, whatever the run's seed
    epochs: int = 20
    batch_size: int = 128
    lr: float = 0.05
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    augment: bool = True
    cache: str = "views"  # logit methods: teacher logits from the cache (K = epochs views); "off": teacher every step
    device: str = "cpu"  # device type
    amp: str | None = None
    channels_last: bool = False
    compile: bool = False

    def key(self, *fields: str) -> str:
        d = asdict(self)
        blob = json.dumps({f: d[f] for f in fields} if fields else d, sort_keys=True, default=str)
        return hashlib.sha1(blob.encode()).hexdigest()[:10]

    def optim(self, epochs: int | None = None) -> OptimSettings:
        return OptimSettings(
            epochs=epochs or self.epochs, lr=self.lr, weight_decay=self.weight_decay, schedule=self.schedule
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--epochs", type=int, help="student epochs E (default 20)")
    p.add_argument(
        "--train-subset", type=subset_arg, help="a seeded subset of the 55,000 training images (default 20000; 'all')"
    )
    p.add_argument("--val-subset", type=int, help="a seeded subset of the 5,000 validation images (smoke runs)")
    p.add_argument("--test-subset", type=int, help="a seeded subset of the 10,000 test images (smoke runs)")
    p.add_argument("--seeds", type=int, default=None, help="seeds per method (default 3)")
    p.add_argument("--methods", help="comma-separated methods (default: every registered one)")
    p.add_argument("--teacher", default=TEACHER_DIR, help=f"teacher model directory (default {TEACHER_DIR})")
    p.add_argument("--cache-mode", choices=("views", "off"), default="views", help="logit methods' teacher cache")
    p.add_argument("--no-augment", action="store_true", help="train on the un-augmented images (default: crop+flip)")
    p.add_argument("--convergence", action="store_true", help="train scratch (seed 0) at E and 2E, record both, stop")
    p.add_argument("--budget-minutes", type=float, default=40.0, help="refuse a plan longer than this (default 40)")
    p.add_argument("--plan", action="store_true", help="print the plan and the timed cost of each method, then stop")
    p.add_argument("--force", action="store_true", help="run even when the estimate exceeds the budget")
    p.add_argument("--retry-failed", action="store_true", help="run again the (method, seed) pairs that failed")
    p.add_argument("--shard", help="I/N: run only the I-th of N interleaved parts of the runs (parallel workers)")
    p.add_argument(
        "--workers", type=int, default=1, help="run N shards side by side, --threads split among them (default 1)"
    )
    p.add_argument("--collect-only", action="store_true", help="train nothing; write the results of what is done")
    p.add_argument("--quick", action="store_true", help="tiny settings: a smoke run of the whole pipeline")
    p.add_argument("--out", type=Path, help="results folder (default benchmarks/results; quick: cache/quick)")
    p.add_argument("--name", default="methods", help="results file stem (default methods; gpu.sh: methods_gpu)")
    p.add_argument("--cache", type=Path, default=HERE / "cache", help="finished runs, teacher caches (reused)")
    p.add_argument("--attach", type=Path, help="a JSON file (gpu.sh's checks) stored under 'checks' in the results")
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", choices=("bf16", "fp16"), help="autocast dtype (fp16 only on CUDA, with a grad scaler)")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format (student and teacher)")
    p.add_argument("--compile", action="store_true", help="torch.compile the student")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: $OMP_NUM_THREADS or all)")
    p.add_argument("--checks", type=Path, help="run the CUDA-path checks and throughput, write them to this file")
    p.add_argument("--throughput-images", type=int, default=10_000, help="--checks: images per throughput epoch")
    p.add_argument("--ddp-worker", action="store_true", help=argparse.SUPPRESS)  # one torchrun process of --checks
    return p.parse_args(argv)


def subset_arg(v: str) -> int | str:
    return "all" if v == "all" else int(v)


def make_protocol(args: argparse.Namespace, device: torch.device) -> Protocol:
    base = Protocol(train_subset=600, val_subset=200, test_subset=500, epochs=1) if args.quick else Protocol()
    kw: dict[str, Any] = {
        "teacher_dir": args.teacher,
        "cache": args.cache_mode,
        "device": device.type,
        "amp": args.amp,
        "channels_last": args.channels_last,
        "compile": args.compile,
        "augment": not args.no_augment,
    }
    for name in ("epochs", "train_subset", "val_subset", "test_subset"):
        if getattr(args, name) is not None:
            kw[name] = None if getattr(args, name) == "all" else getattr(args, name)
    return replace(base, **kw)


# -- data and teacher --------------------------------------------------------------------------------------------


def seeded_subset(n: int, k: int | None, salt: int) -> torch.Tensor | None:
    """Sorted indices of a seeded k-of-n subset (the same for every run), or None to keep all."""
    if k is None or k >= n:
        return None
    return torch.randperm(n, generator=torch.Generator().manual_seed(1_000 + salt))[:k].sort().values


def make_dm(data: ImageData, proto: Protocol, seed: int, augment: bool | None = None) -> DataModule:
    """The teacher's train/val split (``split_seed``), the run's ``seed`` for order and augmentation, then the
    protocol's seeded subsets (identical for every seed and method)."""
    dm = DataModule(
        data,
        proto.batch_size,
        proto.val_size,
        seed=seed,
        augment=proto.augment if augment is None else augment,
        split_seed=proto.split_seed,
    )
    for split, k, salt in (
        ("train", proto.train_subset, 1),
        ("val", proto.val_subset, 2),
        ("test", proto.test_subset, 3),
    ):
        x, y = getattr(dm, f"x_{split}"), getattr(dm, f"y_{split}")
        idx = seeded_subset(len(x), k, salt)
        if idx is not None:
            setattr(dm, f"x_{split}", x[idx])
            setattr(dm, f"y_{split}", y[idx])
    return dm


def file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def teacher_folder(proto: Protocol) -> Path:
    p = Path(proto.teacher_dir)
    return p if p.is_absolute() else ROOT / p


def get_teacher(proto: Protocol, data: ImageData, device: torch.device) -> tuple[Any, dict]:
    """The shipped teacher (eval mode, on ``device``) and what the results say about it (test accuracy on this
    protocol's test images, parameters, folder)."""
    folder = teacher_folder(proto)
    model, spec = load_teacher(folder, data)
    model = model.to(device).eval()
    acc = test_accuracy(model, make_dm(data, proto, 0, augment=False), device)
    params = sum(p.numel() for p in model.parameters())
    return model, {
        "test_acc": acc,
        "model": spec.get("model"),
        "kwargs": spec.get("kwargs"),
        "params": params,
        "dir": proto.teacher_dir,
        "sha": proto.teacher_sha,
    }


def test_accuracy(model: torch.nn.Module, dm: DataModule, device: torch.device, split: str = "test") -> float:
    logits, y = predict(model, dm.eval_batches(split, device), device)
    return float((logits.argmax(1) == y).float().mean())


def uses_cache(method: str, proto: Protocol) -> bool:
    """Logit methods read the teacher-output cache (feature methods need the teacher's forward every step)."""
    cls = DISTILLERS.get(method)
    return proto.cache != "off" and cls.needs_teacher and not cls.teacher_features


# -- one (method, seed) ------------------------------------------------------------------------------------------


def make_run(method: str, seed: int, data: ImageData, teacher: Any, proto: Protocol):
    """The student, its distiller and the data module of one run (all from distill's own pieces)."""
    seed_everything(seed)
    dm = make_dm(data, proto, seed)
    torch.manual_seed(seed)
    student = build_model(C.ModelConfig(proto.student, dict(proto.student_kwargs)), data)
    distiller = build_distiller(method, student, teacher, dm.input_shape, len(dm.x_train), dm.num_classes)
    return student, distiller, dm


def run_one(
    method: str,
    seed: int,
    data: ImageData,
    teacher: Any,
    proto: Protocol,
    device: torch.device,
    cache_dir: Path,
    epochs: int | None = None,
    work: Path | None = None,
) -> dict:
    """Train one student; resumes from ``work`` (its epoch checkpoints) when a previous attempt was interrupted."""
    epochs = epochs or proto.epochs
    student, distiller, dm = make_run(method, seed, data, teacher, proto)
    cache, cache_s = None, 0.0
    if uses_cache(method, proto):
        t0 = time.perf_counter()
        # augmented: K = epochs recorded views; un-augmented: one pass of the teacher (every epoch sees it)
        settings = CacheSettings(mode="views", views=epochs) if proto.augment else CacheSettings(mode="fixed")
        cache = open_cache(
            settings, dm, teacher, directory=cache_dir / "teacher_cache", device=device,
            channels_last=proto.channels_last, progress=False,
        )  # fmt: skip
        cache_s = time.perf_counter() - t0
    tmp = None
    if work is None:
        tmp = tempfile.TemporaryDirectory()
        work = Path(tmp.name)
    try:
        trainer = Trainer(
            distiller, dm, proto.optim(epochs), device=device, out_dir=work, amp=proto.amp,
            channels_last=proto.channels_last, cache=cache, compile=proto.compile,
        )  # fmt: skip
        t0 = time.perf_counter()
        state = trainer.fit(resume=True)
        seconds = time.perf_counter() - t0
        distiller.close()
        last = test_accuracy(student, dm, device)
        best = last
        if state.best_epoch != state.epoch and (work / "best.safetensors").exists():
            load_weights(student, work / "best.safetensors", what=f"{method} student")
            best = test_accuracy(student, dm, device)
    finally:
        if tmp is not None:
            tmp.cleanup()
    hist = state.history
    return {
        "method": method,
        "seed": seed,
        "epochs": epochs,
        "status": "ok",
        "acc": last,
        "best_val_acc": state.best_acc,
        "best_epoch": state.best_epoch,
        "last_epoch": state.epoch,
        "best_acc": best,
        "val_curve": [round(r["val"]["acc"], 5) for r in hist if "val" in r],
        "sec_per_epoch": sum(r["train_seconds"] for r in hist) / max(1, len(hist)),
        "images_per_second": statistics.fmean(r["images_per_second"] for r in hist) if hist else None,
        "cache_seconds": cache_s,
        "seconds": seconds,
    }


def probe(method: str, data: ImageData, teacher: Any, proto: Protocol, device: torch.device) -> float:
    """Seconds per training step of ``method`` as the table trains it (a cached logit method is given stored-like
    logits instead of running the teacher); raises if the method cannot be built or stepped with these models."""
    _, distiller, dm = make_run(method, 0, data, teacher, proto)
    batch = next(dm.train_batches(0, device))
    logits = torch.randn(len(batch.y), dm.num_classes, device=device) if uses_cache(method, proto) else None
    return time_steps(distiller, batch, device, proto, logits)


def time_steps(distiller: Any, batch: Any, device: torch.device, proto: Protocol, t_logits=None) -> float:
    """The faster of two timed training steps after a warm-up one."""
    fmt = torch.channels_last if proto.channels_last else torch.contiguous_format
    distiller.to(device, memory_format=fmt) if proto.channels_last else distiller.to(device)
    distiller.train()
    opt = torch.optim.SGD(distiller.trainable_parameters(), lr=1e-3)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(proto.amp or "")
    x = batch.x.contiguous(memory_format=fmt)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            out = distiller(x, batch.y, teacher_logits=t_logits, index=batch.index)
        opt.zero_grad()
        out.loss.float().backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    distiller.close()
    return min(times[1:])


def teacher_forward_seconds(teacher: Any, dm: DataModule, device: torch.device) -> float:
    """Seconds per training batch of teacher inference (what a cache build costs per batch and view)."""
    batch = next(dm.train_batches(0, device))
    with torch.inference_mode():
        teacher(batch.x)
        t0 = time.perf_counter()
        teacher(batch.x)
        if device.type == "cuda":
            torch.cuda.synchronize()
    return time.perf_counter() - t0


def eval_seconds(data: ImageData, proto: Protocol, device: torch.device) -> float:
    """Seconds per evaluated image of a fresh student (for the estimate)."""
    student = build_model(C.ModelConfig(proto.student, dict(proto.student_kwargs)), data).to(device)
    dm = make_dm(data, proto, 0, augment=False)
    t0 = time.perf_counter()
    predict(student, dm.eval_batches("val", device), device)
    return (time.perf_counter() - t0) / max(1, len(dm.x_val))


# -- bookkeeping -------------------------------------------------------------------------------------------------


def read_runs(path: Path) -> dict[tuple[str, int], dict]:
    runs: dict[tuple[str, int], dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                runs[(r["method"], r["seed"])] = r
    return runs


def append_run(path: Path, row: dict) -> None:
    """One line, one ``write`` in append mode: parallel workers (``--shard``) never interleave their lines."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(row) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def machine(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "workers": int(os.environ.get("METHODS_WORKERS", "1")),  # processes that trained side by side (--workers)
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def two_sigma(std_method: float, std_scratch: float) -> float:
    """The noise bar of a difference to scratch: twice the larger of the two standard deviations."""
    return 2.0 * max(std_method, std_scratch)


def compare(mean: float, std: float, s_mean: float, s_std: float, measured: bool = True) -> dict[str, Any]:
    """``delta_vs_scratch`` (accuracy, the unit of ``acc_mean``), ``two_sigma`` and the verdicts:
    ``beyond_2sigma`` — above scratch by more than 2σ; ``below_2sigma`` — below it by more than 2σ. Both are None
    when ``measured`` is false (a row with fewer than 2 seeds has no σ)."""
    delta = mean - s_mean
    bar = two_sigma(std, s_std)
    if not measured:
        return {"delta_vs_scratch": delta, "two_sigma": None, "beyond_2sigma": None, "below_2sigma": None}
    return {"delta_vs_scratch": delta, "two_sigma": bar, "beyond_2sigma": delta > bar, "below_2sigma": -delta > bar}


def summarise(rows: list[dict], n_seeds: int, teacher_acc: float | None, scratch: dict | None) -> dict[str, Any]:
    accs = [r["acc"] for r in rows]
    mean = statistics.fmean(accs)
    std = statistics.stdev(accs) if len(accs) > 1 else 0.0
    out: dict[str, Any] = {
        "acc_mean": mean,
        "acc_std": std,
        "seeds": accs,
        "seed_ids": [r["seed"] for r in rows],
        "complete": len(rows) >= n_seeds,
        "sec_per_epoch": statistics.fmean(r["sec_per_epoch"] for r in rows),
        "best_epoch": statistics.fmean(r["best_epoch"] for r in rows),
        "last_epoch": statistics.fmean(r.get("last_epoch", r.get("epochs", 0)) for r in rows),
        "best_acc": statistics.fmean(r["best_acc"] for r in rows),
        "best_acc_std": statistics.stdev([r["best_acc"] for r in rows]) if len(rows) > 1 else 0.0,
        "last_acc": mean,
    }
    if scratch is not None:
        measured = len(accs) > 1 and len(scratch["seeds"]) > 1
        out.update(compare(mean, std, scratch["acc_mean"], scratch["acc_std"], measured))
        gap = teacher_acc - scratch["acc_mean"] if teacher_acc is not None else None
        out["gap_recovered"] = (mean - scratch["acc_mean"]) / gap if gap and gap > 0 else None
    return out


def pct(x: float | None, std: float | None = None) -> str:
    if x is None:
        return "–"
    return f"{100 * x:.2f} ± {100 * std:.2f}" if std is not None else f"{100 * x:.2f}"


def write_markdown(path: Path, res: dict[str, Any]) -> None:
    p = res["protocol"]
    t = res["teacher"]
    conv = (
        f"scratch (seed 0) reached {pct(p['scratch_E'])} % at E = {p['epochs']} epochs and {pct(p['scratch_2E'])} % "
        f"at 2E = {2 * p['epochs']} ({'converged' if p['converged'] else 'NOT converged'}: the criterion is "
        f"|difference| <= {CONVERGENCE_POINTS} points)"
        if p.get("scratch_2E") is not None
        else "convergence not measured yet (run with --convergence)"
    )
    lines = [
        "# Distillation methods on Fashion-MNIST",
        "",
        f"Teacher `{t['model']}` {t['kwargs']} ({t['params']:,} parameters, `{p['teacher_dir']}`) → student "
        f"`{p['student']}` {p['student_kwargs']} ({p['student_params']:,} parameters). Students: {p['images']:,} "
        f"training images (the teacher's split; {p['val_images']:,} validation images held out with split seed "
        f"{p['split_seed']}), {p['epochs']} epochs, SGD lr {p['lr']} {p['schedule']}, weight decay "
        f"{p['weight_decay']}, batch {p['batch_size']}, augmentation {'on' if p['augment'] else 'off'}, each "
        f"method's default hyper-parameters (run-length rules only), {p['seeds']} seeds. Logit methods read the "
        f"teacher's logits from the cache (`{p['cache']}`, K = E views). Device {p['device']}"
        f"{', AMP ' + p['amp'] if p['amp'] else ''}{', channels_last' if p['channels_last'] else ''}. "
        f"Test accuracy on {p['test_images']:,} test images, last epoch (mean ± std over seeds). Convergence: {conv}.",
        "",
        "| # | method | test acc % (last) | Δ vs scratch (pts) | > 2σ | best-val-epoch acc % | gap recovered "
        "| s / epoch | best epoch | seeds |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| | **teacher** | {pct(t['acc_mean'])} | | | | | | | |",
    ]

    def seeds(m: dict) -> str:
        return f"{len(m['seeds'])}/{p['seeds']}" + ("" if m["complete"] else " (partial)")

    s = res["scratch"]
    if s:
        lines.append(
            f"| | **scratch** | {pct(s['acc_mean'], s['acc_std'])} | 0 | | {pct(s['best_acc'])} | 0 | "
            f"{s['sec_per_epoch']:.1f} | {s['best_epoch']:.1f} | {seeds(s)} |"
        )
    ranked = sorted(res["methods"].items(), key=lambda kv: -kv[1]["acc_mean"])
    for i, (name, m) in enumerate(ranked, 1):
        gap = f"{m['gap_recovered']:+.2f}" if m.get("gap_recovered") is not None else "–"
        if m.get("two_sigma") is not None:
            delta = f"{100 * m['delta_vs_scratch']:+.2f} (2σ {100 * m['two_sigma']:.2f})"
            sig = "yes" if m["beyond_2sigma"] else ("below" if m["below_2sigma"] else "no")
        elif "delta_vs_scratch" in m:
            delta, sig = f"{100 * m['delta_vs_scratch']:+.2f}", "– (1 seed)"
        else:
            delta, sig = "–", "–"
        lines.append(
            f"| {i} | {name} | {pct(m['acc_mean'], m['acc_std'])} | {delta} | {sig} | {pct(m['best_acc'])} | {gap} | "
            f"{m['sec_per_epoch']:.1f} | {m['best_epoch']:.1f} | {seeds(m)} |"
        )
    rows = res["rows"]
    lines += [
        "",
        f"Rows complete ({len(rows['complete'])}): {', '.join(rows['complete']) or '–'}. "
        f"Partial ({len(rows['partial'])}): {', '.join(rows['partial']) or '–'}. "
        f"Not started ({len(rows['missing'])}): {', '.join(rows['missing']) or '–'}.",
    ]
    if res["skipped"]:
        lines += ["", "Not run:", ""] + [f"- `{k}`: {v}" for k, v in sorted(res["skipped"].items())]
    mach = res["machine"]
    lines += [
        "",
        'Δ = method − scratch (last-epoch means); > 2σ: Δ > 2 × max(std method, std scratch) ("below": Δ < −2σ). '
        "Gap recovered = (method − scratch) / (teacher − scratch). Seconds per epoch are training only (the "
        "teacher's forward included where it runs; a cache's build is counted apart, in the runs file).",
        "",
        f"Machine: {mach['cpu']}, {mach['cores']} cores, {mach.get('workers', 1)} worker process(es) of "
        f"{mach['torch_threads']} torch thread(s), device "
        f"{mach.get('gpu', mach['device'])}; torch {res['versions'].get('torch')}, distill "
        f"{res['versions'].get('distill')}. Date: {res['date']}.",
        "",
    ]
    path.write_text("\n".join(lines))


def collect(
    done: dict,
    methods: list[str],
    n_seeds: int,
    skipped: dict,
    t_info: dict,
    proto: Protocol,
    dm: DataModule,
    data: ImageData,
    device: torch.device,
    conv: dict | None,
) -> dict[str, Any]:
    skipped = dict(skipped)

    def ok(m: str) -> list[dict]:
        return [done[(m, s)] for s in range(n_seeds) if done.get((m, s), {}).get("status") == "ok"]

    for m in methods:
        failed = [done[(m, s)] for s in range(n_seeds) if done.get((m, s), {}).get("status") == "failed"]
        if failed:
            skipped[m] = f"failed ({len(failed)} seed(s)): {failed[0]['reason']}"
    t_acc = t_info["test_acc"]
    scratch = summarise(ok(BASELINE), n_seeds, None, None) if ok(BASELINE) else None
    student = build_model(C.ModelConfig(proto.student, dict(proto.student_kwargs)), data)
    summaries = {m: summarise(ok(m), n_seeds, t_acc, scratch) for m in methods if m != BASELINE and ok(m)}
    every = {**({BASELINE: scratch} if scratch else {}), **summaries}
    return {
        "teacher": {"acc_mean": t_acc, "acc_std": 0.0, **t_info},
        "scratch": scratch,
        "methods": summaries,
        "rows": {
            "complete": [m for m in methods if m in every and every[m]["complete"]],
            "partial": [m for m in methods if m in every and not every[m]["complete"]],
            "missing": [m for m in methods if m not in every],
        },
        "skipped": {k: v for k, v in skipped.items() if k != BASELINE or not scratch},
        "machine": machine(device),
        "versions": versions(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "protocol": {
            **asdict(proto),
            "student_kwargs": dict(proto.student_kwargs),
            "student_params": sum(p.numel() for p in student.parameters()),
            "images": len(dm.x_train),
            "val_images": len(dm.x_val),
            "test_images": len(dm.x_test),
            "seeds": n_seeds,
            "scratch_E": (conv or {}).get("scratch_E"),
            "scratch_2E": (conv or {}).get("scratch_2E"),
            "converged": (conv or {}).get("converged"),
            "selection": "last epoch (best-validation-epoch accuracy reported beside it)",
            "rules": "each method's defaults; run-length rules of its docstring only (no tuning on the test set)",
        },
    }


def write_results(out: Path, name: str, res: dict, attach: Path | None) -> None:
    if attach is not None and attach.exists():
        res["checks"] = json.loads(attach.read_text())
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{name}.json.tmp"
    tmp.write_text(json.dumps(res, indent=2) + "\n")
    tmp.replace(out / f"{name}.json")
    write_markdown(out / f"{name}.md", res)


# -- convergence -------------------------------------------------------------------------------------------------


def convergence_path(cache: Path, proto: Protocol) -> Path:
    return cache / f"methods-convergence-{proto.key()}.json"


def run_convergence(args, proto, data, teacher, device, runs_path: Path, done: dict) -> dict:
    """Scratch, seed 0, at E (the table's own run, trained now if absent) and at 2E."""
    work = args.cache / "methods-work" / proto.key()
    if (BASELINE, 0) not in done or done[(BASELINE, 0)]["status"] != "ok":
        print(f"scratch seed 0 at E = {proto.epochs} ...", flush=True)
        row = run_one(BASELINE, 0, data, teacher, proto, device, args.cache, work=work / "scratch-0")
        append_run(runs_path, row)
        done[(BASELINE, 0)] = row
        shutil.rmtree(work / "scratch-0", ignore_errors=True)
    e_row = done[(BASELINE, 0)]
    path = convergence_path(args.cache, proto)
    conv = json.loads(path.read_text()) if path.exists() else {}
    if "row_2E" not in conv:
        print(f"scratch seed 0 at 2E = {2 * proto.epochs} ...", flush=True)
        row = run_one(BASELINE, 0, data, teacher, proto, device, args.cache, 2 * proto.epochs, work / "scratch-0-2E")
        conv["row_2E"] = row
        shutil.rmtree(work / "scratch-0-2E", ignore_errors=True)
    conv.update(
        {
            "E": proto.epochs,
            "scratch_E": e_row["acc"],
            "scratch_2E": conv["row_2E"]["acc"],
            "converged": abs(conv["row_2E"]["acc"] - e_row["acc"]) * 100 <= CONVERGENCE_POINTS,
        }
    )
    path.write_text(json.dumps(conv, indent=2))
    print(
        f"scratch at E={proto.epochs}: {pct(conv['scratch_E'])} %, at 2E={2 * proto.epochs}: "
        f"{pct(conv['scratch_2E'])} % -> {'converged' if conv['converged'] else 'NOT converged'}"
    )
    return conv


# -- CUDA-path checks and throughput (gpu.sh) --------------------------------------------------------------------


def save_checks(path: Path, results: dict) -> None:
    """Write the checks so far (after each one: a time limit that stops the rest keeps those done)."""
    results["passed"] = [k for k, v in results.items() if isinstance(v, dict) and v.get("status") == "pass"]
    results["failed"] = [k for k, v in results.items() if isinstance(v, dict) and v.get("status") == "fail"]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(path)


def run_check(name: str, fn, results: dict, path: Path | None = None) -> None:
    t0 = time.perf_counter()
    try:
        info = fn() or {}
        results[name] = {"status": "pass", **info}
    except Exception as e:  # a check reports, it does not stop the others
        results[name] = {
            "status": "fail",
            "error": f"{type(e).__name__}: {e}"[:500],
            "trace": traceback.format_exc()[-1500:],
        }
    results[name]["seconds"] = round(time.perf_counter() - t0, 2)
    print(f"check {name}: {results[name]['status']} ({results[name]['seconds']} s)", flush=True)
    if path is not None:
        save_checks(path, results)


def short_fit(method: str, data, teacher, proto: Protocol, device, cache_dir: Path, **trainer_kw) -> dict:
    """One epoch of ``method`` on the protocol's (small) training set; its history record and the loss scale."""
    _, distiller, dm = make_run(method, 0, data, teacher, proto)
    cache = None
    build = 0.0
    if trainer_kw.pop("cached", False):
        t0 = time.perf_counter()
        cache = open_cache(CacheSettings(mode="views", views=1), dm, teacher, directory=cache_dir, device=device,
                           channels_last=proto.channels_last, progress=False)  # fmt: skip
        build = time.perf_counter() - t0
    kw = {"amp": proto.amp, "channels_last": proto.channels_last, "compile": proto.compile, **trainer_kw}
    trainer = Trainer(distiller, dm, proto.optim(1), device=device, cache=cache, **kw)
    state = trainer.fit()
    distiller.close()
    rec = state.history[-1]
    loss = rec["train"]["loss"]
    if not loss == loss or loss in (float("inf"), float("-inf")):
        raise DistillError(f"loss {loss}")
    return {
        "images_per_second": rec["images_per_second"],
        "train_seconds": rec["train_seconds"],
        "train_loss": loss,
        "val_acc": rec["val"]["acc"] if "val" in rec else None,
        "cache_build_seconds": build if cache is not None else None,
        "grad_scale": float(trainer.scaler.get_scale()) if trainer.scaler.is_enabled() else None,
    }


def run_checks(args, device: torch.device) -> int:
    """fp16 + grad scaler, bf16 + channels_last, torch.compile, one-process DDP under torchrun (NCCL on CUDA,
    gloo on the CPU) and the throughput of the student alone, cached KD and KD with the teacher every step;
    each check passes or fails on its own and all go into ``args.checks`` (JSON)."""
    data = load_dataset("fashion_mnist")
    base = replace(make_protocol(args, device), train_subset=args.throughput_images, val_subset=1000, test_subset=1000)
    teacher, _ = load_teacher(teacher_folder(base), data)
    teacher = teacher.to(device).eval()
    results: dict[str, Any] = {"device": str(device), "cuda": device.type == "cuda"}
    if device.type == "cuda":
        results["gpu"] = torch.cuda.get_device_name(device)
    with tempfile.TemporaryDirectory() as tmp:
        cache_dir = Path(tmp)
        tp: dict[str, Any] = {}

        def throughput() -> dict:
            warm = replace(base, train_subset=min(1024, args.throughput_images))
            short_fit("scratch", data, teacher, warm, device, cache_dir)  # warm-up (CUDA context, cuDNN autotuning)
            for label, method, cached in (("student_alone", "scratch", False), ("kd_cached", "kd", True),
                                          ("kd_teacher_every_step", "kd", False)):  # fmt: skip
                tp[label] = short_fit(method, data, teacher, base, device, cache_dir, cached=cached)
            a = tp["student_alone"]["images_per_second"]
            return {
                "images": args.throughput_images,
                "amp": base.amp,
                "channels_last": base.channels_last,
                **{k: v["images_per_second"] for k, v in tp.items()},
                "cache_build_seconds": tp["kd_cached"]["cache_build_seconds"],
                "ratio_cached_vs_student": a and tp["kd_cached"]["images_per_second"] / a,
                "ratio_teacher_vs_student": a and tp["kd_teacher_every_step"]["images_per_second"] / a,
            }

        run_check("throughput", throughput, results, args.checks)
        small = replace(base, train_subset=min(2048, args.throughput_images))

        def fit(method: str, **changes: Any):
            return lambda: short_fit(method, data, teacher, replace(small, **changes), device, cache_dir)

        if device.type == "cuda":
            run_check("fp16_grad_scaler", fit("kd", amp="fp16"), results, args.checks)
        else:
            results["fp16_grad_scaler"] = {"status": "skipped", "why": "fp16 autocast needs CUDA"}
        run_check("bf16_channels_last", fit("at", amp="bf16", channels_last=True), results, args.checks)
        if device.type == "cuda" or os.environ.get("DISTILL_CHECK_COMPILE") == "1":
            run_check("compile", fit("kd", compile=True), results, args.checks)
        else:
            results["compile"] = {"status": "skipped", "why": "CPU check (set DISTILL_CHECK_COMPILE=1 to run it)"}
        run_check("ddp_torchrun", lambda: ddp_check(args, device, small), results, args.checks)
    save_checks(args.checks, results)
    print(f"wrote {args.checks}: passed {results['passed']}, failed {results['failed']}")
    return 0


def ddp_check(args, device: torch.device, proto: Protocol) -> dict:
    """One process under ``torchrun --standalone --nproc_per_node=1``: the worker joins an NCCL (CUDA) or gloo
    (CPU) process group, wraps the distiller in DDP and trains one short epoch."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ddp.json"
        cmd = [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", str(Path(__file__)),
            "--ddp-worker", "--checks", str(out), "--device", device.type, "--teacher", args.teacher,
            "--train-subset", str(proto.train_subset), "--val-subset", "500", "--test-subset", "500",
        ]  # fmt: skip
        if proto.amp:
            cmd += ["--amp", proto.amp]
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        if p.returncode != 0 or not out.exists():
            raise DistillError(f"torchrun exited {p.returncode}: {(p.stderr or p.stdout)[-800:]}")
        return json.loads(out.read_text())


def ddp_worker(args, device: torch.device) -> int:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend)
    try:
        t = torch.ones(1, device=device)
        dist.all_reduce(t)
        data = load_dataset("fashion_mnist")
        proto = make_protocol(args, device)
        teacher, _ = load_teacher(teacher_folder(proto), data)
        teacher = teacher.to(device).eval()
        _, distiller, dm = make_run("kd", 0, data, teacher, proto)
        trainer = Trainer(distiller, dm, proto.optim(1), device=device, amp=proto.amp)
        # distill wraps in DDP only for world_size > 1; one process wraps here the same way (teacher excluded)
        ignore = [n for n, _ in distiller.named_parameters() if n.startswith("teacher.")]
        ignore += [n for n, _ in distiller.named_buffers() if n.startswith("teacher.")]
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(distiller, ignore)
        ids = [device.index or 0] if device.type == "cuda" else None
        trainer.forward_model = DistributedDataParallel(distiller, device_ids=ids)
        state = trainer.fit()
        rec = state.history[-1]
        res = {
            "backend": backend,
            "world_size": dist.get_world_size(),
            "all_reduce": float(t.item()),
            "train_loss": rec["train"]["loss"],
            "images_per_second": rec["images_per_second"],
        }
        args.checks.write_text(json.dumps(res))
    finally:
        dist.destroy_process_group()
    return 0


# -- main --------------------------------------------------------------------------------------------------------


def run_workers(args: argparse.Namespace, argv: list[str], threads: int) -> int:
    """``--workers N``: N copies of this command, each with ``--shard I/N`` and its share of the threads (small
    models use two one-thread processes better than one two-thread process), then ``--collect-only``."""
    rest, skip = [], False
    for a in argv:  # drop --workers / --threads (and their values): each worker gets its own
        if skip:
            skip = False
        elif a in ("--workers", "--threads"):
            skip = True
        elif not a.startswith(("--workers=", "--threads=")):
            rest.append(a)
    per = str(max(1, threads // args.workers))
    env = {**os.environ, "OMP_NUM_THREADS": per}
    cmd = [sys.executable, str(Path(__file__).resolve()), *rest, "--threads", per]
    procs = [subprocess.Popen([*cmd, "--shard", f"{i}/{args.workers}"], env=env) for i in range(args.workers)]
    try:
        codes = [p.wait() for p in procs]
    except KeyboardInterrupt:  # the workers got the terminal's Ctrl-C too: each checkpoints its run and stops
        codes = [p.wait() for p in procs]
    final = subprocess.run([*cmd, "--collect-only"], env={**env, "METHODS_WORKERS": str(args.workers)}).returncode
    bad = [c for c in codes if c]
    if bad:
        print(f"{len(bad)} worker(s) stopped early (exit {bad}); run the same command again", file=sys.stderr)
    return bad[0] if bad else final


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    threads = args.threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or os.cpu_count() or 1
    torch.set_num_threads(max(1, threads))
    device = resolve_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if args.ddp_worker:
        return ddp_worker(args, device)
    if args.checks:
        return run_checks(args, device)
    proto = make_protocol(args, device)
    proto = replace(proto, teacher_sha=file_sha(teacher_folder(proto) / "model.safetensors"))
    n_seeds = args.seeds if args.seeds is not None else (1 if args.quick else 3)
    out = args.out or (args.cache / "quick" if args.quick else HERE / "results")
    names = args.methods.split(",") if args.methods else DISTILLERS.names()
    unknown = [n for n in names if n not in DISTILLERS]
    if unknown:
        print(f"unknown method(s) {unknown}; registered: {', '.join(DISTILLERS.names())}", file=sys.stderr)
        return 2
    methods = [BASELINE] + [n for n in names if n != BASELINE]
    runs_path = args.cache / f"methods-runs-{proto.key()}.jsonl"
    work = args.cache / "methods-work" / proto.key()
    done = read_runs(runs_path)
    if args.retry_failed:
        done = {k: v for k, v in done.items() if v["status"] == "ok"}

    data = load_dataset(proto.dataset)
    dm0 = make_dm(data, proto, 0)
    teacher, t_info = get_teacher(proto, data, device)
    print(
        f"teacher {t_info['model']} {t_info['kwargs']} ({t_info['params']:,} parameters): test acc "
        f"{100 * t_info['test_acc']:.2f}%; runs file {runs_path}",
        flush=True,
    )
    if args.convergence:
        run_convergence(args, proto, data, teacher, device, runs_path, done)
        return 0
    conv_path = convergence_path(args.cache, proto)
    conv = json.loads(conv_path.read_text()) if conv_path.exists() else None

    def finish(skipped: dict, run_seconds: float) -> None:
        res = collect(read_runs(runs_path) | done, methods, n_seeds, skipped, t_info, proto, dm0, data, device, conv)
        res["run_seconds"] = run_seconds
        write_results(out, args.name, res, args.attach)

    if args.workers > 1 and not args.shard and not args.plan:
        return run_workers(args, argv if argv is not None else sys.argv[1:], threads)
    if args.collect_only:
        finish({}, 0.0)
        print(f"wrote {out / args.name}.json and .md")
        return 0

    # Row by row (all seeds of a method before the next), scratch and kd first, then the cheaper cached-logit
    # methods: a run stopped part-way leaves complete rows, the most asked-for first. The list is fixed (shards
    # split it), not ordered by a timing.
    first = [m for m in (BASELINE, "kd") if m in methods]
    rest = [m for m in methods if m not in first]
    ranked = first + sorted(rest, key=lambda m: (not uses_cache(m, proto), rest.index(m)))
    order = [(m, s) for m in ranked for s in range(n_seeds)]
    if args.shard:
        i, n = (int(v) for v in args.shard.split("/"))
        order = order[i::n]

    # Probe every method still to run: a few timed steps. One that cannot be built or stepped is skipped.
    skipped: dict[str, str] = {}
    step_s: dict[str, float] = {}
    for m in dict.fromkeys(m for m, s in order if (m, s) not in done):
        try:
            step_s[m] = probe(m, data, teacher, proto, device)
        except (DistillError, ValueError, RuntimeError, TypeError, NotImplementedError, AssertionError) as e:
            skipped[m] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
    spe = -(-len(dm0.x_train) // proto.batch_size)
    steps = spe * proto.epochs
    eval_s = (proto.epochs * len(dm0.x_val) + 2 * len(dm0.x_test)) * eval_seconds(data, proto, device)
    todo = [(m, s) for m, s in order if m in step_s and (m, s) not in done]
    cache_seeds = {s for m, s in todo if uses_cache(m, proto)}
    t_fwd = teacher_forward_seconds(teacher, dm0, device) if cache_seeds else 0.0
    cache_est = len(cache_seeds) * t_fwd * steps  # an upper bound: a seed's cache built earlier is reused
    estimate = cache_est + sum(step_s[m] * steps * 1.1 + eval_s for m, _ in todo)
    n_done = len([k for k in done if k[0] in methods and k[1] < n_seeds])
    print(
        f"plan: {len(todo)} runs of {proto.epochs} epochs on {len(dm0.x_train):,} images ({n_done} already done, "
        f"{len(skipped)} methods skipped); estimated {estimate / 60:.1f} min in all, teacher caches "
        f"~{cache_est / 60:.1f} min of it (budget {args.budget_minutes:g} min)",
        flush=True,
    )
    for m, why in skipped.items():
        print(f"  skipped {m}: {why}")
    if args.plan:
        for m in sorted(step_s, key=step_s.get):
            tag = " (cached logits)" if uses_cache(m, proto) else ""
            run_min = (step_s[m] * steps * 1.1 + eval_s) / 60
            print(f"  {m:12s} {1000 * step_s[m]:7.1f} ms/step  ~{run_min:.1f} min/run{tag}")
        if cache_seeds:
            k, build_min = proto.epochs, t_fwd * steps / 60
            print(f"  teacher forward {1000 * t_fwd:.1f} ms/batch: a cache of K={k} views ~{build_min:.1f} min/seed")
        return 0
    if estimate > 60 * args.budget_minutes and not args.force:
        fit = int(len(dm0.x_train) * 60 * args.budget_minutes / estimate) // 500 * 500
        print(
            f"over budget: try --train-subset {max(500, fit)} (or fewer --epochs / --seeds), raise --budget-minutes, "
            "or pass --force",
            file=sys.stderr,
        )
        return 3

    t_start = time.perf_counter()
    for i, (m, s) in enumerate(todo, 1):
        w = work / f"{m}-{s}"
        try:
            row = run_one(m, s, data, teacher, proto, device, args.cache, work=w)
        except (DistillError, ValueError, RuntimeError) as e:
            row = {"method": m, "seed": s, "status": "failed", "reason": f"{type(e).__name__}: {e}"[:300]}
        except KeyboardInterrupt as e:  # Ctrl-C / SIGTERM (a time limit): the run's last epoch is checkpointed
            where = str(e).split(";")[0]
            print(f"stopped during {m} seed {s}: {where}; run the same command again to continue", file=sys.stderr)
            if not args.shard:
                finish(skipped, time.perf_counter() - t_start)
            return 130
        append_run(runs_path, row)
        shutil.rmtree(w, ignore_errors=True)
        done[(m, s)] = row
        acc = f"{100 * row['acc']:.2f}%" if row["status"] == "ok" else row["reason"]
        print(f"[{i}/{len(todo)}] {m} seed {s}: {acc} ({time.perf_counter() - t_start:.0f} s elapsed)", flush=True)
        if not args.shard:  # the results stay current after every run (a shard leaves that to --collect-only)
            finish(skipped, time.perf_counter() - t_start)

    if not args.shard:
        finish(skipped, time.perf_counter() - t_start)
        print(f"wrote {out / args.name}.json and {out / args.name}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())

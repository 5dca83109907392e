"""Distillation at the cost of training the student: seconds per epoch and end to end, side by side, on the same data.

Per epoch: (a) the student alone (scratch), (b) KD with the teacher run every step, (c) KD from the teacher cache
(views mode, K recorded views), (d) a reference loop written the way common KD repositories do it: a torchvision
Dataset with per-sample PIL transforms through a torch DataLoader, the teacher's forward pass every step. Seconds per
epoch are the median over the epochs after the first (warm-up).

End to end (whole runs of E epochs, wall clock, the per-epoch validation included): one student distilled from the
cache with K = E views, the cache's build included, against the teacher every step; a second student that reuses
that cache (opened and verified, not rebuilt) against the student alone. Then the test accuracy against the number
of views K at the same E epochs, each K with its own build. Writes ``benchmarks/results/speed.json`` and
``speed.md``.

    python benchmarks/speed.py --train-subset 20000   # the demo's models on Fashion-MNIST (slow: a quiet machine)
    python benchmarks/speed.py --quick                 # a smoke run of every row; results in a temporary folder
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from distill.artifacts import versions
from distill.data.base import ImageData, load_dataset
from distill.data.module import DataModule
from distill.distillers import build_distiller
from distill.engine.cache import CacheSettings, TeacherCache, open_cache
from distill.engine.trainer import OptimSettings, Trainer
from distill.losses import kd_loss
from distill.models.zoo import create_model
from distill.report.metrics import classification_metrics, predict

RESULTS = Path(__file__).parent / "results"
GOALS = {
    "ratio_cached_vs_student": 1.05,  # per epoch, (c) / (a)
    "ratio_cached_vs_reference": 0.5,  # per epoch, (c) / (d)
    "e2e_cached_vs_teacher": 1.0,  # one student, K = E, the build included / the teacher every step
    "e2e_reused_vs_student": 1.05,  # a second student on the same cache / the student alone
}


def make(spec: dict, data: ImageData, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model(spec["model"], num_classes=data.num_classes, in_channels=data.in_channels, **spec["kwargs"])


def train_teacher(args, data: ImageData, dm: DataModule) -> torch.nn.Module:
    teacher = make(args.teacher, data, 0)
    d = build_distiller("scratch", teacher, None, dm.input_shape)
    Trainer(d, dm, OptimSettings(epochs=args.teacher_epochs, lr=0.05), channels_last=True).fit()
    return teacher.eval().to(memory_format=torch.contiguous_format)


def timed_trainer(args, dm, method, teacher, cache=None, seed: int = 1, **kw) -> dict:
    """Train one student for ``args.epochs``; its epoch seconds, the run's wall seconds and its test accuracy."""
    t0 = time.perf_counter()
    student = make(args.student, dm.data, seed)
    d = build_distiller(method, student, teacher, dm.input_shape, **({} if method == "scratch" else args.kd))
    t = Trainer(d, dm, OptimSettings(epochs=args.epochs, lr=0.05), cache=cache, channels_last=args.channels_last, **kw)
    state = t.fit()
    run_s = time.perf_counter() - t0
    secs = [r["train_seconds"] for r in state.history]
    logits, y = predict(student, dm.eval_batches("test"))
    return {"epoch_seconds": secs, "run_seconds": run_s, "test_acc": classification_metrics(logits, y)["acc"]}


def timed_cache(args, dm, teacher, directory: str, views: int) -> tuple[TeacherCache, float]:
    """Open (building it when absent) the views cache with ``views`` views; the cache and the seconds it took."""
    t0 = time.perf_counter()
    settings = CacheSettings("views", views=views)
    cache = open_cache(settings, dm, teacher, directory=directory, channels_last=args.channels_last)
    assert cache is not None
    return cache, time.perf_counter() - t0


class PILDataset(torch.utils.data.Dataset):
    """Per-sample PIL images and torchvision transforms: the usual KD-repository data path."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform) -> None:
        self.x, self.y, self.transform = x.numpy(), y.numpy(), transform

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        img = Image.fromarray(self.x[i, 0] if self.x.shape[1] == 1 else self.x[i].transpose(1, 2, 0))
        return self.transform(img), int(self.y[i])


def reference_loop(args, dm: DataModule, teacher: torch.nn.Module) -> dict:
    import torchvision.transforms as T

    data = dm.data
    tf = [T.RandomCrop(data.image_size, padding=data.crop_padding)] if data.crop_padding else []
    tf += [T.RandomHorizontalFlip()] if data.hflip else []
    tf += [T.ToTensor(), T.Normalize(data.mean, data.std)]
    ds = PILDataset(dm.x_train, dm.y_train, T.Compose(tf))
    loader = torch.utils.data.DataLoader(
        ds, batch_size=dm.batch_size, shuffle=True, num_workers=args.workers, persistent_workers=args.workers > 0
    )
    student = make(args.student, data, 1)
    opt = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    alpha, temp = args.kd["alpha"], args.kd["temperature"]
    secs = []
    for _ in range(args.epochs):
        student.train()
        t0 = time.perf_counter()
        for x, y in loader:
            with torch.no_grad():
                t_logits = teacher(x)
            s_logits = student(x)
            loss = (1 - alpha) * F.cross_entropy(s_logits, y) + alpha * kd_loss(s_logits, t_logits, temp)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss.item()  # the per-step host sync such loops usually have (logging)
        secs.append(time.perf_counter() - t0)
    logits, y = predict(student, dm.eval_batches("test"))
    return {"epoch_seconds": secs, "test_acc": classification_metrics(logits, y)["acc"]}


def median_after_warmup(secs: list[float]) -> float:
    return statistics.median(secs[1:] if len(secs) > 1 else secs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="fashion_mnist")
    ap.add_argument("--train-subset", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=8, help="E, per run; the first is the per-epoch rows' warm-up")
    ap.add_argument("--teacher-epochs", type=int, default=2)
    ap.add_argument("--views", type=int, default=None, help="K recorded views of the cached runs (default: E)")
    ap.add_argument("--k-sweep", default="1,2,4,8", help="the K values of the accuracy-against-views table")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers of the reference loop")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--quick", action="store_true", help="a smoke run: 1000 images, 2 epochs, K in {1, 2}")
    ap.add_argument("--out", type=Path, default=None, help=f"default: {RESULTS} ({{tmp}}/speed with --quick)")
    args = ap.parse_args()
    if args.quick:
        args.train_subset, args.epochs, args.teacher_epochs, args.k_sweep = 1000, 2, 1, "1,2"
        args.workers = min(args.workers, 1)
    args.out = args.out or (Path(tempfile.gettempdir()) / "speed" if args.quick else RESULTS)
    args.views = args.views or args.epochs
    sweep = sorted({int(k) for k in args.k_sweep.split(",") if k.strip()} | {args.views})
    if args.threads:
        torch.set_num_threads(args.threads)
    args.teacher = {"model": "cnn", "kwargs": {"width": 16}}
    args.student = {"model": "cnn", "kwargs": {"width": 4, "blocks": 1}}
    args.kd = {"temperature": 4.0, "alpha": 0.9}

    data = load_dataset(args.dataset)
    if args.train_subset:
        data = data.subset(args.train_subset, None, seed=0)
    dm = DataModule(data, args.batch_size, val_size=0.1, seed=0)
    print(f"{data.name}: {len(dm.x_train)} train, {len(dm.x_test)} test; training the teacher ...", flush=True)
    teacher = train_teacher(args, data, dm)
    teacher_acc = classification_metrics(*predict(teacher, dm.eval_batches("test")))["acc"]

    rows, sweep_rows = {}, []
    print("(a) student alone", flush=True)
    rows["a_student"] = timed_trainer(args, dm, "scratch", None)
    print("(b) KD, teacher every step", flush=True)
    rows["b_kd_teacher"] = timed_trainer(args, dm, "kd", teacher)
    with tempfile.TemporaryDirectory() as tmp:
        print(f"(c) KD from the cache (K = {args.views}, built here)", flush=True)
        cache, build_s = timed_cache(args, dm, teacher, tmp, args.views)
        rows["c_kd_cached"] = {**timed_trainer(args, dm, "kd", teacher, cache=cache), "cache_seconds": build_s}
        print("(e) a second student on the same cache (reused)", flush=True)
        cache, open_s = timed_cache(args, dm, teacher, tmp, args.views)
        rows["e_kd_reused"] = {**timed_trainer(args, dm, "kd", teacher, cache=cache, seed=2), "cache_seconds": open_s}
        for k in sweep:
            if k == args.views:
                row = rows["c_kd_cached"]
            else:
                print(f"accuracy against views: K = {k}", flush=True)
                cache, k_build = timed_cache(args, dm, teacher, tmp, k)
                row = {**timed_trainer(args, dm, "kd", teacher, cache=cache), "cache_seconds": k_build}
            sweep_rows.append({"views": k, **{f: row[f] for f in ("cache_seconds", "run_seconds", "test_acc")}})
    print("(d) reference loop (PIL + DataLoader, teacher every step)", flush=True)
    rows["d_reference"] = reference_loop(args, dm, teacher)

    n = len(dm.x_train)
    for r in rows.values():
        r["sec_per_epoch"] = median_after_warmup(r["epoch_seconds"])
        r["images_per_second"] = n / r["sec_per_epoch"]
    a, b, c, d = (rows[k]["sec_per_epoch"] for k in ("a_student", "b_kd_teacher", "c_kd_cached", "d_reference"))
    for r in sweep_rows:
        r["build_images_per_second"] = r["views"] * n / r["cache_seconds"]
    total = {k: r["run_seconds"] + r.get("cache_seconds", 0.0) for k, r in rows.items() if "run_seconds" in r}
    result = {
        "ratio_cached_vs_student": c / a,
        "ratio_cached_vs_reference": c / d,
        "end_to_end": {
            "seconds": total,
            "e2e_cached_vs_teacher": total["c_kd_cached"] / total["b_kd_teacher"],
            "e2e_reused_vs_student": total["e_kd_reused"] / total["a_student"],
            # the cache's build against the teacher's forward pass inside the KD loop ((b) − (a) per epoch)
            "build_images_per_second": args.views * n / rows["c_kd_cached"]["cache_seconds"],
            "loop_teacher_images_per_second": n / (b - a) if b > a else None,
        },
        "views_sweep": sweep_rows,
        "goals": GOALS,
        "rows": rows,
        "teacher_test_acc": teacher_acc,
        "setting": {
            "dataset": data.name,
            "train_samples": n,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "views": args.views,
            "teacher": args.teacher,
            "student": args.student,
            "kd": args.kd,
            "reference_workers": args.workers,
            "channels_last": args.channels_last,
            "quick": args.quick,
        },
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        },
        "versions": versions(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "speed.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "speed.md").write_text(markdown(result))
    print(markdown(result))
    print(f"written to {args.out}")


def goal(value: float, key: str) -> str:
    return f"{value:.3f} (goal ≤ {GOALS[key]}: {'met' if value <= GOALS[key] else 'NOT met'})"


def markdown(r: dict) -> str:
    names = {
        "a_student": "(a) student alone",
        "b_kd_teacher": "(b) KD, teacher every step",
        "c_kd_cached": "(c) KD from the cache (views)",
        "d_reference": "(d) reference loop (PIL + DataLoader)",
    }
    s, e = r["setting"], r["end_to_end"]
    lines = [
        f"# Speed: {s['dataset']}, {s['train_samples']} training images, teacher {s['teacher']['kwargs']}, "
        f"student {s['student']['kwargs']}",
        "",
        "| mode | s/epoch | images/s | test acc |",
        "|---|---:|---:|---:|",
    ]
    for k, name in names.items():
        row = r["rows"][k]
        acc = f"{row['test_acc']:.4f}"
        lines.append(f"| {name} | {row['sec_per_epoch']:.2f} | {row['images_per_second']:.0f} | {acc} |")
    loop = e["loop_teacher_images_per_second"]
    lines += [
        "",
        f"- c/a = {goal(r['ratio_cached_vs_student'], 'ratio_cached_vs_student')}; "
        f"c/d = {goal(r['ratio_cached_vs_reference'], 'ratio_cached_vs_reference')}",
        f"- cache build ({s['views']} views): {r['rows']['c_kd_cached']['cache_seconds']:.1f} s, "
        f"{e['build_images_per_second']:.0f} images/s; the teacher's forward in the KD loop ((b) − (a)): "
        + (f"{loop:.0f} images/s" if loop else "not measurable (b ≤ a)")
        + f"; teacher test acc {r['teacher_test_acc']:.4f}",
        "",
        f"## End to end: {s['epochs']} epochs, K = {s['views']} views (wall seconds, validation included)",
        "",
        "| run | cache s | training s | total s | test acc |",
        "|---|---:|---:|---:|---:|",
    ]
    e2e = {
        "a_student": "student alone",
        "b_kd_teacher": "KD, teacher every step",
        "c_kd_cached": "KD from the cache, build included",
        "e_kd_reused": "second student, cache reused (opened, verified)",
    }
    for k, name in e2e.items():
        row = r["rows"][k]
        lines.append(
            f"| {name} | {row.get('cache_seconds', 0.0):.1f} | {row['run_seconds']:.1f} | {e['seconds'][k]:.1f} "
            f"| {row['test_acc']:.4f} |"
        )
    lines += [
        "",
        f"- one student, cached / teacher every step = {goal(e['e2e_cached_vs_teacher'], 'e2e_cached_vs_teacher')}",
        f"- second student, reused / student alone = {goal(e['e2e_reused_vs_student'], 'e2e_reused_vs_student')}",
        "",
        f"## Test accuracy against the number of views K ({s['epochs']} epochs, each K built here)",
        "",
        "| K | build s | build images/s | total s | test acc |",
        "|---:|---:|---:|---:|---:|",
    ]
    for row in r["views_sweep"]:
        lines.append(
            f"| {row['views']} | {row['cache_seconds']:.1f} | {row['build_images_per_second']:.0f} "
            f"| {row['cache_seconds'] + row['run_seconds']:.1f} | {row['test_acc']:.4f} |"
        )
    lines += [
        "",
        f"- per-epoch rows: median of {s['epochs'] - 1} epochs after a warm-up epoch; reference DataLoader workers: "
        f"{s['reference_workers']}; {r['machine']['cpus']} CPUs, {r['machine']['torch_threads']} torch threads; "
        f"torch {r['versions']['torch']}; {r['date']}" + ("; QUICK smoke run" if s.get("quick") else ""),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    np.random.seed(0)
    main()

"""Distillation at the cost of training the student: seconds per epoch side by side, on the same data and models.

(a) the student alone (scratch), (b) KD with the teacher run every step, (c) KD from the teacher cache (views
mode, K recorded views), (d) a reference loop written the way common KD repositories do it: a torchvision Dataset
with per-sample PIL transforms through a torch DataLoader, the teacher's forward pass every step.

Seconds per epoch are the median over the epochs after the first (warm-up); the cache's build time is reported on
its own (it is paid once). Writes ``benchmarks/results/speed.json`` and ``speed.md``.

    python benchmarks/speed.py                       # the demo's models on Fashion-MNIST (full: slow)
    python benchmarks/speed.py --train-subset 2000 --epochs 2   # a quick check
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
from distill.engine.cache import CacheSettings, open_cache
from distill.engine.trainer import OptimSettings, Trainer
from distill.losses import kd_loss
from distill.models.zoo import create_model
from distill.report.metrics import classification_metrics, predict

RESULTS = Path(__file__).parent / "results"


def make(spec: dict, data: ImageData, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model(spec["model"], num_classes=data.num_classes, in_channels=data.in_channels, **spec["kwargs"])


def train_teacher(args, data: ImageData, dm: DataModule) -> torch.nn.Module:
    teacher = make(args.teacher, data, 0)
    d = build_distiller("scratch", teacher, None, dm.input_shape)
    Trainer(d, dm, OptimSettings(epochs=args.teacher_epochs, lr=0.05), channels_last=True).fit()
    return teacher.eval().to(memory_format=torch.contiguous_format)


def timed_trainer(args, dm, method, teacher, cache=None, **kw) -> dict:
    student = make(args.student, dm.data, 1)
    d = build_distiller(method, student, teacher, dm.input_shape, **({} if method == "scratch" else args.kd))
    t = Trainer(d, dm, OptimSettings(epochs=args.epochs, lr=0.05), cache=cache, channels_last=args.channels_last, **kw)
    state = t.fit()
    secs = [r["train_seconds"] for r in state.history]
    logits, y = predict(student, dm.eval_batches("test"))
    return {"epoch_seconds": secs, "test_acc": classification_metrics(logits, y)["acc"]}


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
    ap.add_argument("--epochs", type=int, default=4, help="per mode; the first is a warm-up")
    ap.add_argument("--teacher-epochs", type=int, default=2)
    ap.add_argument("--views", type=int, default=8, help="K recorded views for the cache")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers of the reference loop")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
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

    rows = {}
    print("(a) student alone", flush=True)
    rows["a_student"] = timed_trainer(args, dm, "scratch", None)
    print("(b) KD, teacher every step", flush=True)
    rows["b_kd_teacher"] = timed_trainer(args, dm, "kd", teacher)
    with tempfile.TemporaryDirectory() as tmp:
        print("(c) KD from the cache", flush=True)
        t0 = time.perf_counter()
        cache = open_cache(CacheSettings("views", views=args.views), dm, teacher, directory=tmp, channels_last=True)
        build_s = time.perf_counter() - t0
        rows["c_kd_cached"] = timed_trainer(args, dm, "kd", teacher, cache=cache)
        rows["c_kd_cached"]["cache_build_seconds"] = build_s
    print("(d) reference loop (PIL + DataLoader, teacher every step)", flush=True)
    rows["d_reference"] = reference_loop(args, dm, teacher)

    n = len(dm.x_train)
    for r in rows.values():
        r["sec_per_epoch"] = median_after_warmup(r["epoch_seconds"])
        r["images_per_second"] = n / r["sec_per_epoch"]
    a, c, d = (rows[k]["sec_per_epoch"] for k in ("a_student", "c_kd_cached", "d_reference"))
    result = {
        "ratio_cached_vs_student": c / a,
        "ratio_cached_vs_reference": c / d,
        "goals": {"ratio_cached_vs_student": 1.05, "ratio_cached_vs_reference": 0.5},
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


def markdown(r: dict) -> str:
    names = {
        "a_student": "(a) student alone",
        "b_kd_teacher": "(b) KD, teacher every step",
        "c_kd_cached": "(c) KD from the cache (views)",
        "d_reference": "(d) reference loop (PIL + DataLoader)",
    }
    s = r["setting"]
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
    build = r["rows"]["c_kd_cached"]["cache_build_seconds"]
    lines += [
        "",
        f"- c/a = {r['ratio_cached_vs_student']:.3f} (goal ≤ 1.05); c/d = {r['ratio_cached_vs_reference']:.3f} "
        "(goal ≤ 0.5)",
        f"- cache build ({s['views']} views, paid once): {build:.1f} s; teacher test acc {r['teacher_test_acc']:.4f}",
        f"- median of {s['epochs'] - 1} epochs after a warm-up epoch; reference DataLoader workers: "
        f"{s['reference_workers']}; {r['machine']['cpus']} CPUs, {r['machine']['torch_threads']} torch threads; "
        f"torch {r['versions']['torch']}; {r['date']}",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    np.random.seed(0)
    main()

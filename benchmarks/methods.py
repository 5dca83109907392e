"""Every registered distillation method, measured the same way on Fashion-MNIST.

One teacher (trained once and cached under ``benchmarks/cache/``), one small student, the same optimiser, epochs,
augmentation and training subset for every method, several seeds each. Each finished (method, seed) is appended
to a JSONL file under ``benchmarks/cache/`` and skipped when the script is run again, so an interrupted table is
resumed, not restarted. The planned time is estimated from a few timed steps of every method before anything is
trained; when it exceeds ``--budget-minutes`` the script says which training subset would fit and stops (unless
``--force``).

    python benchmarks/methods.py                      # the table: writes benchmarks/results/methods.{json,md}
    python benchmarks/methods.py --quick              # a seconds-long smoke run of the whole pipeline
    python benchmarks/methods.py --methods kd,at --seeds 1 --epochs 2

Results: ``methods.json`` (``teacher`` and ``scratch`` rows, ``methods``: name -> accuracy mean/std, per-seed
accuracies, seconds per epoch, best epoch, last-epoch accuracy, share of the teacher-student gap recovered; plus
``machine``, ``versions``, ``date``, ``protocol``) and ``methods.md`` (the same as a table sorted by accuracy).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from distill import config as C
from distill.api import build_model, load_data, load_teacher, model_spec, resolve_device, seed_everything
from distill.artifacts import load_weights, save_model, versions
from distill.data.base import ImageData
from distill.data.module import DataModule
from distill.distillers import DISTILLERS, build_distiller
from distill.engine.trainer import OptimSettings, Trainer
from distill.errors import DistillError
from distill.report.metrics import predict

HERE = Path(__file__).resolve().parent
BASELINE = "scratch"


@dataclass(frozen=True)
class Protocol:
    """Everything that decides a result; its hash keys the cached teacher and the finished runs."""

    dataset: str = "fashion_mnist"
    teacher: str = "cnn"
    teacher_kwargs: tuple[tuple[str, Any], ...] = (("width", 16), ("blocks", 2))
    student: str = "cnn"
    student_kwargs: tuple[tuple[str, Any], ...] = (("width", 8), ("blocks", 1))
    train_subset: int = 10_000
    test_subset: int | None = None
    val_size: int = 1000
    epochs: int = 3
    teacher_subset: int = 20_000
    teacher_epochs: int = 5
    batch_size: int = 128
    lr: float = 0.05
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    augment: bool = True

    def key(self, *fields: str) -> str:
        d = asdict(self)
        blob = json.dumps({f: d[f] for f in fields} if fields else d, sort_keys=True, default=str)
        return hashlib.sha1(blob.encode()).hexdigest()[:10]

    def teacher_key(self) -> str:
        return self.key("dataset", "teacher", "teacher_kwargs", "teacher_subset", "teacher_epochs", "val_size")

    def optim(self, epochs: int) -> OptimSettings:
        return OptimSettings(epochs=epochs, lr=self.lr, weight_decay=self.weight_decay, schedule=self.schedule)

    def config(self, subset: int) -> C.Config:
        data = C.DataConfig(
            name=self.dataset,
            val_size=self.val_size,
            batch_size=self.batch_size,
            augment=self.augment,
            train_subset=subset,
            test_subset=self.test_subset,
        )
        return C.Config(seed=0, data=data)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--epochs", type=int, help="student epochs (default 3)")
    p.add_argument("--train-subset", type=int, help="training images for the students (default 10000)")
    p.add_argument("--seeds", type=int, default=None, help="seeds per method (default 3)")
    p.add_argument("--methods", help="comma-separated methods (default: every registered one)")
    p.add_argument("--budget-minutes", type=float, default=40.0, help="refuse a plan longer than this (default 40)")
    p.add_argument("--plan", action="store_true", help="print the plan and the timed cost of each method, then stop")
    p.add_argument("--force", action="store_true", help="run even when the estimate exceeds the budget")
    p.add_argument("--retry-failed", action="store_true", help="run again the (method, seed) pairs that failed")
    p.add_argument("--quick", action="store_true", help="tiny settings: a smoke run of the whole pipeline")
    p.add_argument("--out", type=Path, help="results folder (default benchmarks/results; quick: cache/quick)")
    p.add_argument("--cache", type=Path, default=HERE / "cache", help="teacher and finished runs (reused)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads")
    return p.parse_args(argv)


def make_protocol(args: argparse.Namespace) -> Protocol:
    if args.quick:
        base = Protocol(train_subset=600, test_subset=500, val_size=100, epochs=1, teacher_subset=600, teacher_epochs=1)
    else:
        base = Protocol()
    kw: dict[str, Any] = {}
    if args.epochs is not None:
        kw["epochs"] = args.epochs
    if args.train_subset is not None:
        kw["train_subset"] = args.train_subset
    return Protocol(**{**asdict(base), **kw})


# -- teacher -----------------------------------------------------------------------------------------------------


def get_teacher(proto: Protocol, cache: Path, test_data: ImageData, device: torch.device) -> tuple[Any, dict]:
    """The cached teacher for ``proto`` (trained now when absent) and its test accuracy."""
    folder = cache / f"teacher-{proto.teacher_key()}"
    m_cfg = C.ModelConfig(proto.teacher, dict(proto.teacher_kwargs))
    if not (folder / "info.json").exists():
        data, dm = load_data(proto.config(proto.teacher_subset))
        print(f"training the teacher {proto.teacher} {dict(proto.teacher_kwargs)} on {len(dm.x_train)} images ...")
        seed_everything(0)
        model = build_model(m_cfg, data)
        d = build_distiller("scratch", model, None, dm.input_shape)
        t0 = time.perf_counter()
        Trainer(d, dm, proto.optim(proto.teacher_epochs), device=device).fit()
        save_model(folder, model.cpu(), model_spec(m_cfg, data))
        (folder / "info.json").write_text(json.dumps({"train_seconds": time.perf_counter() - t0}))
    model, _ = load_teacher(folder, test_data)
    model = model.to(device).eval()
    info = json.loads((folder / "info.json").read_text())
    if "test_acc" not in info or info.get("test_key") != proto.key("test_subset"):
        info["test_acc"] = test_accuracy(model, test_data, proto, device)
        info["test_key"] = proto.key("test_subset")
        (folder / "info.json").write_text(json.dumps(info))
    params = sum(p.numel() for p in model.parameters())
    return model, {**info, "model": proto.teacher, "kwargs": dict(proto.teacher_kwargs), "params": params}


def test_accuracy(model: torch.nn.Module, data: ImageData, proto: Protocol, device: torch.device) -> float:
    dm = DataModule(data, proto.batch_size, 0, seed=0, augment=False)
    logits, y = predict(model, dm.eval_batches("test", device), device)
    return float((logits.argmax(1) == y).float().mean())


# -- one (method, seed) ------------------------------------------------------------------------------------------


def make_run(method: str, seed: int, data: ImageData, teacher: Any, proto: Protocol, epochs: int | None = None):
    """The student, its distiller and the data module of one run (all from distill's own pieces)."""
    seed_everything(seed)
    dm = DataModule(data, proto.batch_size, proto.val_size, seed=seed, augment=proto.augment)
    torch.manual_seed(seed)
    student = build_model(C.ModelConfig(proto.student, dict(proto.student_kwargs)), data)
    distiller = build_distiller(method, student, teacher, dm.input_shape, len(dm.x_train), dm.num_classes)
    return student, distiller, dm


def run_one(method: str, seed: int, data: ImageData, teacher: Any, proto: Protocol, device: torch.device) -> dict:
    student, distiller, dm = make_run(method, seed, data, teacher, proto)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(distiller, dm, proto.optim(proto.epochs), device=device, out_dir=Path(tmp))
        t0 = time.perf_counter()
        state = trainer.fit()
        seconds = time.perf_counter() - t0
        distiller.close()
        last = test_accuracy(student, data, proto, device)
        best = last
        if state.best_epoch != state.epoch and (Path(tmp) / "best.safetensors").exists():
            load_weights(student, Path(tmp) / "best.safetensors", what=f"{method} student")
            best = test_accuracy(student, data, proto, device)
    return {
        "method": method,
        "seed": seed,
        "status": "ok",
        "acc": last,
        "best_val_acc": state.best_acc,
        "best_epoch": state.best_epoch,
        "best_acc": best,
        "sec_per_epoch": sum(r["train_seconds"] for r in state.history) / max(1, len(state.history)),
        "seconds": seconds,
    }


def probe(method: str, data: ImageData, teacher: Any, proto: Protocol, device: torch.device) -> float:
    """Seconds per training step of ``method`` (timing does not depend on the weights, so an untrained teacher
    of the right architecture will do); raises if the method cannot be built or stepped with these models."""
    _, distiller, dm = make_run(method, 0, data, teacher, proto)
    return time_steps(distiller, next(dm.train_batches(0, device)), device)


def time_steps(distiller: Any, batch: Any, device: torch.device) -> float:
    """The faster of two timed training steps after a warm-up one."""
    distiller.to(device).train()
    opt = torch.optim.SGD(distiller.trainable_parameters(), lr=1e-3)
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        out = distiller(batch.x, batch.y, index=batch.index)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    distiller.close()
    return min(times[1:])


def teacher_seconds(proto: Protocol, data: ImageData, device: torch.device) -> float:
    """Estimated seconds to train the teacher."""
    model = build_model(C.ModelConfig(proto.teacher, dict(proto.teacher_kwargs)), data)
    dm = DataModule(data, proto.batch_size, proto.val_size, seed=0, augment=proto.augment)
    step = time_steps(build_distiller("scratch", model, None, dm.input_shape), next(dm.train_batches(0)), device)
    n = proto.teacher_subset - proto.val_size
    return 1.1 * step * -(-n // proto.batch_size) * proto.teacher_epochs


def eval_seconds(data: ImageData, proto: Protocol, device: torch.device) -> float:
    """Seconds per evaluated image of a fresh student (for the estimate)."""
    student = build_model(C.ModelConfig(proto.student, dict(proto.student_kwargs)), data).to(device)
    dm = DataModule(data, proto.batch_size, proto.val_size, seed=0, augment=False)
    t0 = time.perf_counter()
    predict(student, dm.eval_batches("val", device), device)
    return (time.perf_counter() - t0) / max(1, proto.val_size)


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
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def machine(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def summarise(rows: list[dict], teacher_acc: float | None, scratch_mean: float | None) -> dict[str, Any]:
    accs = [r["acc"] for r in rows]
    mean = statistics.fmean(accs)
    gap = teacher_acc - scratch_mean if teacher_acc is not None and scratch_mean is not None else None
    return {
        "acc_mean": mean,
        "acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
        "seeds": accs,
        "seed_ids": [r["seed"] for r in rows],
        "sec_per_epoch": statistics.fmean(r["sec_per_epoch"] for r in rows),
        "best_epoch": statistics.fmean(r["best_epoch"] for r in rows),
        "best_acc": statistics.fmean(r["best_acc"] for r in rows),
        "last_acc": mean,
        "gap_recovered": (mean - scratch_mean) / gap if gap and gap > 0 else None,
    }


def pct(x: float | None, std: float | None = None) -> str:
    if x is None:
        return "–"
    return f"{100 * x:.2f} ± {100 * std:.2f}" if std is not None else f"{100 * x:.2f}"


def write_markdown(path: Path, res: dict[str, Any]) -> None:
    p = res["protocol"]
    lines = [
        "# Distillation methods on Fashion-MNIST",
        "",
        f"Teacher `{p['teacher']}` {p['teacher_kwargs']} ({res['teacher']['params']:,} parameters) → student "
        f"`{p['student']}` {p['student_kwargs']} ({p['student_params']:,} parameters). Students: {p['train_subset']:,} "
        f"training images ({p['val_size']} of them held out for validation), {p['epochs']} epochs, SGD lr {p['lr']} "
        f"{p['schedule']}, weight decay {p['weight_decay']}, batch {p['batch_size']}, "
        f"augmentation {'on' if p['augment'] else 'off'}, each method's default hyper-parameters, "
        f"{p['seeds']} seeds. Teacher: {p['teacher_subset']:,} images, {p['teacher_epochs']} epochs. "
        f"Test accuracy on {p['test_images']:,} test images, last epoch (mean ± std over seeds).",
        "",
        "| # | method | test acc % | best-val-epoch acc % | gap recovered | s / epoch | best epoch |",
        "|---|---|---|---|---|---|---|",
        f"| | **teacher** | {pct(res['teacher']['acc_mean'])} | | | | |",
    ]
    s = res["scratch"]
    if s:
        lines.append(
            f"| | **scratch** | {pct(s['acc_mean'], s['acc_std'])} | {pct(s['best_acc'])} | 0 | "
            f"{s['sec_per_epoch']:.1f} | {s['best_epoch']:.1f} |"
        )
    ranked = sorted(res["methods"].items(), key=lambda kv: -kv[1]["acc_mean"])
    for i, (name, m) in enumerate(ranked, 1):
        gap = f"{m['gap_recovered']:+.2f}" if m["gap_recovered"] is not None else "–"
        lines.append(
            f"| {i} | {name} | {pct(m['acc_mean'], m['acc_std'])} | {pct(m['best_acc'])} | {gap} | "
            f"{m['sec_per_epoch']:.1f} | {m['best_epoch']:.1f} |"
        )
    if res["skipped"]:
        lines += ["", "Not run:", ""] + [f"- `{k}`: {v}" for k, v in sorted(res["skipped"].items())]
    mach = res["machine"]
    lines += [
        "",
        "Gap recovered = (method − scratch) / (teacher − scratch). Seconds per epoch include the teacher's forward.",
        "",
        f"Machine: {mach['cpu']}, {mach['cores']} cores, {mach['torch_threads']} torch threads, device "
        f"{mach.get('gpu', mach['device'])}; torch {res['versions'].get('torch')}, distill "
        f"{res['versions'].get('distill')}. Date: {res['date']}. Wall time of the runs: "
        f"{res['run_seconds'] / 60:.1f} min.",
        "",
    ]
    path.write_text("\n".join(lines))


# -- main --------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(max(1, args.threads or 1))
    proto = make_protocol(args)
    n_seeds = args.seeds if args.seeds is not None else (1 if args.quick else 3)
    out = args.out or (args.cache / "quick" if args.quick else HERE / "results")
    device = resolve_device(args.device)
    names = args.methods.split(",") if args.methods else DISTILLERS.names()
    unknown = [n for n in names if n not in DISTILLERS]
    if unknown:
        print(f"unknown method(s) {unknown}; registered: {', '.join(DISTILLERS.names())}", file=sys.stderr)
        return 2
    methods = [BASELINE] + [n for n in names if n != BASELINE]
    runs_path = args.cache / f"methods-runs-{proto.key()}.jsonl"
    done = read_runs(runs_path)
    if args.retry_failed:
        done = {k: v for k, v in done.items() if v["status"] == "ok"}

    data, _ = load_data(proto.config(proto.train_subset))
    t_dir = args.cache / f"teacher-{proto.teacher_key()}"
    teacher_cached = (t_dir / "info.json").exists()
    if teacher_cached:
        timing_teacher = load_teacher(t_dir, data)[0].to(device)
    else:
        timing_teacher = build_model(C.ModelConfig(proto.teacher, dict(proto.teacher_kwargs)), data).to(device)

    # Probe every method: a few timed steps. A method that cannot be built or stepped is skipped with the reason.
    skipped: dict[str, str] = {}
    step_s: dict[str, float] = {}
    for m in methods:
        if all((m, s) in done for s in range(n_seeds)):
            continue
        try:
            step_s[m] = probe(m, data, timing_teacher, proto, device)
        except (DistillError, ValueError, RuntimeError, TypeError, NotImplementedError, AssertionError) as e:
            skipped[m] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
    del timing_teacher
    steps = -(-(len(data.x_train) - proto.val_size) // proto.batch_size) * proto.epochs
    eval_s = (proto.epochs * proto.val_size + 2 * len(data.x_test)) * eval_seconds(data, proto, device)
    todo = [(m, s) for m in methods if m in step_s for s in range(n_seeds) if (m, s) not in done]
    t_est = 0.0 if teacher_cached else teacher_seconds(proto, data, device)
    estimate = t_est + sum(step_s[m] * steps * 1.1 + eval_s for m, _ in todo)
    n_done = len([k for k in done if k[0] in methods and k[1] < n_seeds])
    print(
        f"plan: {len(todo)} runs of {proto.epochs} epochs on {len(data.x_train) - proto.val_size} images "
        f"({n_done} already done, {len(skipped)} methods skipped)"
        + ("" if teacher_cached else f", after training the teacher (~{t_est / 60:.1f} min)")
        + f"; estimated {estimate / 60:.1f} min in all (budget {args.budget_minutes:g} min)"
    )
    for m, why in skipped.items():
        print(f"  skipped {m}: {why}")
    if args.plan:
        for m in sorted(step_s, key=step_s.get):
            print(f"  {m:12s} {1000 * step_s[m]:7.0f} ms/step  ~{(step_s[m] * steps * 1.1 + eval_s) / 60:.1f} min/run")
        return 0
    if estimate > 60 * args.budget_minutes and not args.force:
        fit = int(proto.train_subset * (60 * args.budget_minutes - t_est) / (estimate - t_est)) // 500 * 500
        print(
            f"over budget: try --train-subset {max(500, fit)} (or fewer --epochs / --seeds), raise --budget-minutes, "
            "or pass --force",
            file=sys.stderr,
        )
        return 3

    teacher, t_info = get_teacher(proto, args.cache, data, device)
    print(
        f"teacher: {proto.teacher} {dict(proto.teacher_kwargs)}, test acc {100 * t_info['test_acc']:.2f}%"
        + ("" if teacher_cached else f" (trained in {t_info['train_seconds']:.0f} s, cached)")
    )

    t_start = time.perf_counter()
    for i, (m, s) in enumerate(todo, 1):
        try:
            row = run_one(m, s, data, teacher, proto, device)
        except (DistillError, ValueError, RuntimeError) as e:
            row = {"method": m, "seed": s, "status": "failed", "reason": f"{type(e).__name__}: {e}"[:300]}
        append_run(runs_path, row)
        done[(m, s)] = row
        acc = f"{100 * row['acc']:.2f}%" if row["status"] == "ok" else row["reason"]
        print(f"[{i}/{len(todo)}] {m} seed {s}: {acc} ({time.perf_counter() - t_start:.0f} s elapsed)", flush=True)

    res = collect(done, methods, n_seeds, skipped, t_info, proto, data, device)
    res["run_seconds"] = time.perf_counter() - t_start
    out.mkdir(parents=True, exist_ok=True)
    (out / "methods.json").write_text(json.dumps(res, indent=2) + "\n")
    write_markdown(out / "methods.md", res)
    print(f"wrote {out / 'methods.json'} and {out / 'methods.md'}")
    return 0


def collect(
    done: dict, methods: list[str], n_seeds: int, skipped: dict, t_info: dict, proto: Protocol, data, device
) -> dict[str, Any]:
    def ok(m: str) -> list[dict]:
        return [done[(m, s)] for s in range(n_seeds) if done.get((m, s), {}).get("status") == "ok"]

    for m in methods:
        failed = [done[(m, s)] for s in range(n_seeds) if done.get((m, s), {}).get("status") == "failed"]
        if failed and not ok(m):
            skipped[m] = f"failed: {failed[0]['reason']}"
    t_acc = t_info["test_acc"]
    scratch = summarise(ok(BASELINE), None, None) if ok(BASELINE) else None
    s_mean = scratch["acc_mean"] if scratch else None
    student = build_model(C.ModelConfig(proto.student, dict(proto.student_kwargs)), data)
    return {
        "teacher": {"acc_mean": t_acc, "acc_std": 0.0, **{k: v for k, v in t_info.items() if k != "test_key"}},
        "scratch": scratch,
        "methods": {m: summarise(ok(m), t_acc, s_mean) for m in methods if m != BASELINE and ok(m)},
        "skipped": {k: v for k, v in skipped.items() if k != BASELINE or not scratch},
        "machine": machine(device),
        "versions": versions(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "protocol": {
            **asdict(proto),
            "teacher_kwargs": dict(proto.teacher_kwargs),
            "student_kwargs": dict(proto.student_kwargs),
            "student_params": sum(p.numel() for p in student.parameters()),
            "seeds": n_seeds,
            "test_images": len(data.x_test),
            "selection": "last epoch (best-validation-epoch accuracy reported beside it)",
        },
    }


if __name__ == "__main__":
    sys.exit(main())

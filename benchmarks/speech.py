"""Keyword spotting: a ResNet teacher distilled into microcontroller-size students (log-mel speech commands).

Data: ``audio_folder`` at ``data/speech``: uint8 log-mel spectrograms (1, 40, 101), 12 classes (yes no up down left
right on off stop go _unknown_ _silence_), the dataset's speech augmentation (time shift, background noise,
SpecAugment) on every training batch. Protocol (``PROTOCOL``):

- The teacher (``kws_resnet``, 482 K parameters) trains once (seed 0), keeping its best validation epoch; every run
  uses the teacher's validation split (``split_seed``). Test accuracy is read once per model, at the end.
- Each student (``kws_tiny`` 12 K, ``ds_cnn`` s 23 K and m 137 K parameters) trains from scratch and by KD (teacher
  logits cached on ``views`` recorded augmentations per clip) with the same optimiser, epochs and initial weights
  per seed, keeping its best validation epoch; mean ± std over the seeds.
- Ensemble row: the teacher plus ``ensemble`` (other seeds/widths) into one student by ``multi_kd``.
- int8: the best small student (≤ 1/20 of the teacher's parameters, best KD mean; its best-validation seed) by
  ``distill.compress`` static post-training quantization, saved and reloaded: accuracy and latency.
- ``goals``: a student with ≤ 1/20 of the teacher's parameters keeps ≥ 98 % of the teacher's test accuracy with KD
  and KD beats the same student from scratch (means over ≥ 3 seeds): met / not met.

Latency: batch 1, one thread (``distill.report.bench.time_ms``). Finished runs go to
``benchmarks/cache/speech/runs.jsonl`` (keyed by the protocol and the data's fingerprint) and are skipped when the
script runs again; trained teachers stay under ``benchmarks/cache/speech/teachers/``.

    OMP_NUM_THREADS=1 python benchmarks/speech.py              # -> benchmarks/results/speech.{json,md}
    python benchmarks/speech.py --estimate [--synthetic 3000]  # the protocol's time on this data; trains nothing
    python benchmarks/speech.py --quick                        # synthetic spectrograms, 1 epoch: a smoke run
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import machine_info  # noqa: E402

from distill import config as C  # noqa: E402
from distill.api import load_teacher, seed_everything  # noqa: E402
from distill.api.recipe import build_model, model_spec  # noqa: E402
from distill.artifacts import load_weights, save_model  # noqa: E402
from distill.compress import load_compressed, quantize_static, save_quantized  # noqa: E402
from distill.compress.quantize import int8_bytes  # noqa: E402
from distill.data.base import ImageData, load_dataset  # noqa: E402
from distill.data.module import DataModule  # noqa: E402
from distill.distillers import build_distiller  # noqa: E402
from distill.distillers.multi_teacher import MultiTeacher  # noqa: E402
from distill.engine.cache import open_cache  # noqa: E402
from distill.engine.trainer import OptimSettings, Trainer  # noqa: E402
from distill.report.bench import count_params, time_ms  # noqa: E402
from distill.report.metrics import predict  # noqa: E402
from distill.settings import CacheSettings  # noqa: E402

CLASSES = "yes no up down left right on off stop go _unknown_ _silence_".split()
SHAPE = (1, 40, 101)
PROTOCOL: dict[str, Any] = {
    "dataset": "audio_folder",
    "val_size": 0.1,
    "split_seed": 0,
    "batch_size": 64,
    "augment": True,
    "teacher": {"model": "kws_resnet", "kwargs": {"width": 40}, "seed": 0},
    "ensemble": [{"model": "kws_resnet", "kwargs": {"width": 32}, "seed": 1}],  # besides the teacher
    "ensemble_student": "ds_cnn_s",
    "students": {
        "kws_tiny": ["kws_tiny", {}],
        "ds_cnn_s": ["ds_cnn", {"size": "s"}],
        "ds_cnn_m": ["ds_cnn", {"size": "m"}],
    },
    "teacher_epochs": 15,
    "epochs": 10,
    "lr": 0.05,
    "weight_decay": 5e-4,
    "schedule": "cosine",
    "kd": {"alpha": 0.9, "temperature": 4.0},
    "multi_kd": {"ce_weight": 0.1, "kd_weight": 0.9, "temperature": 4.0},
    "views": 4,  # recorded augmentations per clip in the teacher cache (epoch e replays view e mod 4)
    "seeds": [0, 1, 2],
    "channels_last": True,
}
GOAL_RATIO, GOAL_KEEP = 20, 0.98
LATENCY = {"repeats": 20, "min_seconds": 0.3}  # time_ms's settings (a smoke run takes fewer)


def synthetic_speech(n_train: int, n_test: int, seed: int = 0) -> ImageData:
    """Seeded stand-in spectrograms (N, 1, 40, 101), 12 classes: a smooth random time-frequency prototype per class,
    randomly shifted in time, plus noise; with a noise bank and the speech augmentation ``audio_folder`` asks for."""
    g = torch.Generator().manual_seed(seed)
    protos = torch.nn.functional.interpolate(torch.rand(12, 1, 6, 10, generator=g), size=SHAPE[1:], mode="bilinear")

    def sample(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = (torch.arange(n) % 12)[torch.randperm(n, generator=g)]
        shifts = torch.randint(-8, 9, (n,), generator=g).tolist()
        x = torch.stack([p.roll(s, -1) for p, s in zip(protos[y], shifts, strict=True)])
        x = 0.6 * x + 0.5 * torch.rand(n, *SHAPE, generator=g)
        return x.clamp(0, 1).mul(255).round().to(torch.uint8), y

    (x_train, y_train), (x_test, y_test) = sample(n_train), sample(n_test)
    noise, s = (0.3 * torch.rand(16, *SHAPE, generator=g)).mul(255).to(torch.uint8), x_train.float().div(255)
    augment = {"time_shift": 10, "noise_prob": 0.8, "snr_db": (0.0, 20.0), "freq_mask": 7, "time_mask": 10,
               "top_db": 80.0}  # fmt: skip
    return ImageData("speech_synthetic", x_train, y_train, x_test, y_test, list(CLASSES), (round(float(s.mean()), 4),),
                     (round(float(s.std()), 4),), meta={"noise_bank": noise, "augment": augment})  # fmt: skip


def digest(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def load_data(args: argparse.Namespace) -> ImageData:
    if args.synthetic:
        return synthetic_speech(args.synthetic, max(96, args.synthetic // 5))
    return load_dataset(PROTOCOL["dataset"], root=args.root)


def make_dm(data: ImageData, p: dict[str, Any], seed: int) -> DataModule:
    return DataModule(data, p["batch_size"], p["val_size"], seed=seed, augment=p["augment"], split_seed=p["split_seed"])


def accuracy(model: torch.nn.Module, dm: DataModule, split: str = "test") -> float:
    logits, y = predict(model.eval(), dm.eval_batches(split, "cpu"), "cpu")
    return float((logits.argmax(1) == y).float().mean())


def latency_b1(model: torch.nn.Module) -> float:
    model, x = model.eval().cpu().to(memory_format=torch.contiguous_format), torch.randn(1, *SHAPE)
    with torch.inference_mode():
        return round(time_ms(lambda: model(x), threads=1, **LATENCY), 4)


def fit(student, teacher, method: str, params: dict, dm: DataModule, epochs: int, p: dict, work: Path, cache=None):
    """Train ``student`` by ``method``, keep its best validation epoch; returns the trainer's state."""
    d = build_distiller(method, student, teacher, dm.input_shape, len(dm.x_train), dm.num_classes, **params)
    optim = OptimSettings(epochs=epochs, lr=p["lr"], weight_decay=p["weight_decay"], schedule=p["schedule"])
    trainer = Trainer(d, dm, optim, out_dir=work, channels_last=p["channels_last"], cache=cache)
    state = trainer.fit(resume=True)
    d.close()
    if (work / "best.safetensors").exists():
        load_weights(student, work / "best.safetensors", what=f"{method} student")
    return state


def get_teacher(spec: dict, data: ImageData, p: dict, root: Path) -> tuple[torch.nn.Module, dict]:
    """A kws_resnet trained on the data with labels (cached by spec, optimiser and data fingerprint)."""
    key = digest({**spec, **{k: p[k] for k in ("teacher_epochs", "lr", "weight_decay", "batch_size", "val_size",
                                               "split_seed", "augment")}, "data": data.fingerprint()})  # fmt: skip
    folder = root / "teachers" / f"{spec['model']}-{key}"
    dm = make_dm(data, p, spec["seed"])
    if not (folder / "model.json").exists():
        seed_everything(spec["seed"])
        mcfg, t0 = C.ModelConfig(spec["model"], dict(spec["kwargs"])), time.perf_counter()
        model = build_model(mcfg, data)
        state = fit(model, None, "scratch", {}, dm, p["teacher_epochs"], p, folder / "work")
        info = {"best_val_acc": state.best_acc, "best_epoch": state.best_epoch, "train_s": time.perf_counter() - t0}
        save_model(folder, model, model_spec(mcfg, data, train=info))
    model, saved = load_teacher(folder, data)
    info = {"model": spec["model"], "kwargs": spec["kwargs"], "seed": spec["seed"], "params": count_params(model),
            "accuracy": round(accuracy(model, dm), 4), **saved["train"], "dir": str(folder)}  # fmt: skip
    return model.eval(), info


def run_one(
    name: str, method: str, seed: int, data: ImageData, teacher, p: dict, root: Path, key: str, epochs: int = 0
) -> dict[str, Any]:
    """One student run; its best-validation weights are kept as a model directory (for the int8 export). Its work
    directory is keyed by the protocol and the epochs, so an interrupted run resumes only into the same run."""
    epochs = epochs or p["epochs"]
    dm, mcfg = make_dm(data, p, seed), C.ModelConfig(*p["students"][name])
    seed_everything(seed)
    student = build_model(mcfg, data)  # the same initial weights for every method of this seed
    work = root / "runs" / key[:12] / f"{name}-{method}-e{epochs}-s{seed}"
    cache, params = None, p.get(method, {})  # the kd / multi_kd settings; scratch has none
    if method == "kd":  # the teacher's logits on `views` recorded augmentations per clip, shared by the students
        cache = open_cache(CacheSettings(mode="views", views=p["views"]), dm, teacher, directory=root / "teacher_cache",
                           channels_last=p["channels_last"], progress=False)  # fmt: skip
    t0 = time.perf_counter()
    state = fit(student, teacher, method, params, dm, epochs, p, work, cache)
    save_model(work / "model", student, model_spec(mcfg, data))
    return {
        "student": name, "method": method, "seed": seed, "epochs": epochs, "accuracy": accuracy(student, dm),
        "best_val_acc": state.best_acc, "best_epoch": state.best_epoch, "params": count_params(student),
        "latency_ms_b1": latency_b1(student), "seconds": round(time.perf_counter() - t0, 1),
        "sec_per_epoch": round(statistics.fmean(r["train_seconds"] for r in state.history), 2),
        "dir": str(work / "model"),
    }  # fmt: skip


def convergence(args, p: dict, data: ImageData, teacher, rows: list[dict], done: list[dict], runs_file: Path, key: str):
    """Each student's scratch run (seed 0) at E beside one at 2E: the protocol compares methods only where scratch
    has (nearly) converged. Converged: within 0.3 points or one test clip, whichever is larger (280 test clips:
    one clip is 0.36 points)."""
    out: dict[str, Any] = {}
    tol = max(0.3, 100.0 / len(data.x_test))
    for name in p["students"]:
        e_row = next((r for r in rows if (r["student"], r["method"], r["seed"]) == (name, "scratch", 0)), None)
        if e_row is None:
            continue
        twice = 2 * p["epochs"]
        hit = next((r for r in done if (r["student"], r["method"], r["seed"], r.get("epochs")) ==
                    (name, "scratch", 0, twice)), None)  # fmt: skip
        if hit is None:
            hit = {**run_one(name, "scratch", 0, data, teacher, p, args.cache, key, twice), "protocol": key}
            with runs_file.open("a") as fh:
                fh.write(json.dumps(hit) + "\n")
        diff = 100 * (hit["accuracy"] - e_row["accuracy"])
        out[name] = {"E": p["epochs"], "scratch_E": e_row["accuracy"], "scratch_2E": hit["accuracy"],
                     "best_epoch_2E": hit["best_epoch"], "diff_points": round(diff, 2), "tolerance_points":
                     round(tol, 2), "converged": abs(diff) <= tol}  # fmt: skip
        print(f"convergence {name}: {json.dumps(out[name])}", flush=True)
    return out


def summarise(rows: list[dict]) -> list[dict[str, Any]]:
    out = []
    for name, method in dict.fromkeys((r["student"], r["method"]) for r in rows):
        rs = sorted((r for r in rows if r["student"] == name and r["method"] == method), key=lambda r: r["seed"])
        accs = [r["accuracy"] for r in rs]
        out.append({
            "name": name, "method": method, "acc_mean": round(statistics.fmean(accs), 4),
            "acc_std": round(statistics.stdev(accs), 4) if len(accs) > 1 else 0.0, "accs": [round(a, 4) for a in accs],
            "seeds": [r["seed"] for r in rs], "params": rs[0]["params"],
            "latency_ms_b1": round(statistics.median(r["latency_ms_b1"] for r in rs), 4),
            "sec_per_epoch": round(statistics.fmean(r["sec_per_epoch"] for r in rs), 2),
        })  # fmt: skip
    return out


def goals(teacher: dict, students: list[dict], min_seeds: int = 3) -> dict[str, Any]:
    """Per student with ≤ 1/20 of the teacher's parameters: does KD keep ≥ 98 % of the teacher's accuracy, and does
    it beat scratch (mean over the seeds, with per-seed wins)? ``met`` needs both for one student, over ≥ 3 seeds."""
    by = {(s["name"], s["method"]): s for s in students}
    per: dict[str, Any] = {}
    for (name, method), kd in by.items():
        scratch = by.get((name, "scratch"))
        if method != "kd" or scratch is None or kd["params"] * GOAL_RATIO > teacher["params"]:
            continue
        wins = sum(a > b for a, b in zip(kd["accs"], scratch["accs"], strict=False))
        per[name] = {
            "params_ratio": round(teacher["params"] / kd["params"], 1),
            "kd_over_teacher": round(kd["acc_mean"] / teacher["accuracy"], 4) if teacher["accuracy"] else None,
            "keeps_98pct": kd["acc_mean"] >= GOAL_KEEP * teacher["accuracy"],
            "kd_minus_scratch": round(kd["acc_mean"] - scratch["acc_mean"], 4),
            "kd_wins_per_seed": f"{wins}/{len(kd['accs'])}",
            "kd_beats_scratch": kd["acc_mean"] > scratch["acc_mean"],
            # the methods table's test: the difference exceeds twice the larger of the two stds
            "kd_beyond_2sigma": kd["acc_mean"] - scratch["acc_mean"] > 2 * max(kd["acc_std"], scratch["acc_std"]),
            "seeds": len(kd["accs"]),
        }
        per[name]["met"] = per[name]["keeps_98pct"] and per[name]["kd_beats_scratch"] and len(kd["accs"]) >= min_seeds
    met = [n for n, g in per.items() if g["met"]]
    return {
        "goal": f"a student with <= 1/{GOAL_RATIO} of the teacher's parameters keeps >= {GOAL_KEEP:.0%} of its test "
        f"accuracy with KD, and KD beats the same student from scratch (mean over >= {min_seeds} seeds)",
        "met": bool(met), "met_by": met, "students": per,
    }  # fmt: skip


def export_int8(best: dict, rows: list[dict], data: ImageData, p: dict, root: Path) -> dict[str, Any]:
    """The best small student's best-validation KD seed, int8 by ``distill.compress`` (static PTQ), reloaded."""
    run = max(
        (r for r in rows if r["student"] == best["name"] and r["method"] == "kd"), key=lambda r: r["best_val_acc"]
    )
    model, spec = load_compressed(run["dir"])
    dm = make_dm(data, p, run["seed"])
    calib = [b.x for b in dm.eval_batches("train", "cpu")][:8]  # up to 8 x 1024 un-augmented training clips
    q = quantize_static(model.eval(), calib)
    save_quantized(out := root / "int8" / f"{best['name']}-s{run['seed']}", q, spec)
    reloaded = load_compressed(out)[0]
    return {
        "name": best["name"], "method": "kd", "seed": run["seed"], "float_accuracy": round(run["accuracy"], 4),
        "accuracy": round(accuracy(reloaded, dm), 4), "params": run["params"], "int8_bytes": int8_bytes(reloaded),
        "float_latency_ms_b1": run["latency_ms_b1"], "latency_ms_b1": latency_b1(reloaded),
        "quantization": "static post-training int8 (x86, per-channel weights), distill.compress", "dir": str(out),
    }  # fmt: skip


def estimate(data: ImageData, p: dict[str, Any]) -> dict[str, Any]:
    """What the protocol costs on ``data`` without running it: per-clip seconds of a training step (the faster of
    two after a warm-up, channels_last) and of a teacher forward, times the clips, epochs, seeds and views."""
    dm, t0 = make_dm(data, p, 0), time.perf_counter()
    batches = list(dm.train_batches(0))
    n, n_val, batch = len(dm.x_train), len(dm.x_val), batches[0]
    aug = (time.perf_counter() - t0) / n  # drawing and applying the speech augmentation (one epoch's)

    def cost(name: str, kwargs: dict) -> tuple[float, float]:
        model = build_model(C.ModelConfig(name, dict(kwargs)), data).to(memory_format=torch.channels_last)
        x, times = batch.x.contiguous(memory_format=torch.channels_last), []
        opt = torch.optim.SGD(model.parameters(), lr=1e-3)
        for _ in range(3):
            t = time.perf_counter()
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), batch.y).backward()
            opt.step()
            times.append(time.perf_counter() - t)
        with torch.inference_mode():
            model.eval()(x)
            t = time.perf_counter()
            model(x)
        return min(times[1:]) / len(x) + aug, (time.perf_counter() - t) / len(x)

    teachers = [cost(t["model"], t["kwargs"]) for t in [p["teacher"], *p["ensemble"]]]
    students = {k: cost(*v) for k, v in p["students"].items()}
    seeds, e, e_t = len(p["seeds"]), p["epochs"], p["teacher_epochs"]
    parts = {
        "teachers": e_t * (n * sum(t for t, _ in teachers) + n_val * sum(f for _, f in teachers)),
        "students": seeds * 2 * e * sum(n * t + n_val * f for t, f in students.values()),
        "kd_cache": seeds * p["views"] * n * (teachers[0][1] + aug),
        "ensemble": seeds * e * n * (students[p["ensemble_student"]][0] + sum(f for _, f in teachers)),
    }
    names = ["teacher", *(f"ensemble{i + 1}" for i in range(len(p["ensemble"]))), *students]
    per_clip = {k: round(1000 * t, 3) for k, (t, _) in zip(names, [*teachers, *students.values()], strict=True)}
    return {"train_clips": n, "train_ms_per_clip": per_clip, "seconds": {k: round(v) for k, v in parts.items()},
            "minutes": round(sum(parts.values()) / 60, 1)}  # fmt: skip


def markdown(res: dict[str, Any]) -> str:
    t, g, d = res["teacher"], res["goals"], res["data"]
    lines = [
        "# Keyword spotting: kws_resnet → microcontroller-size students", "",
        f"Data `{d['name']}` ({d['train']} train / {d['test']} test clips, {d['classes']} classes). "
        f"Teacher `kws_resnet` {t['kwargs']}: {t['params']:,} parameters, test accuracy {t['accuracy']:.4f}. "
        f"Students: mean ± std test accuracy over seeds {res['protocol']['seeds']}; latency at batch 1, 1 thread.", "",
        "| student | method | accuracy | params | ≤ 1/20 teacher | latency (ms) | s/epoch |",
        "|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for s in [*res["students"], *([res["ensemble"]["student"]] if res.get("ensemble") else [])]:
        small = "yes" if s["params"] * GOAL_RATIO <= t["params"] else "no"
        lines.append(f"| {s['name']} | {s['method']} | {s['acc_mean']:.4f} ± {s['acc_std']:.4f} | {s['params']:,} | "
                     f"{small} | {s['latency_ms_b1']:.3f} | {s['sec_per_epoch']} |")  # fmt: skip
    if q := res.get("int8"):
        lines.append(f"| {q['name']} int8 (seed {q['seed']}) | kd + int8 | {q['accuracy']:.4f} | {q['params']:,} | | "
                     f"{q['latency_ms_b1']:.3f} | |")  # fmt: skip
    lines += ["", f"Goal: {g['goal']} — **{'met' if g['met'] else 'not met'}**"
              + (f" by {', '.join(g['met_by'])}" if g["met_by"] else "") + ".", ""]  # fmt: skip
    for name, s in g["students"].items():
        lines.append(f"- {name} (1/{s['params_ratio']}): KD/teacher {s['kd_over_teacher']}, KD − scratch "
                     f"{s['kd_minus_scratch']:+.4f} (wins {s['kd_wins_per_seed']} seeds; "
                     f"{'beyond' if s['kd_beyond_2sigma'] else 'within'} 2σ).")  # fmt: skip
    for name, c in res.get("convergence", {}).items():
        lines.append(
            f"- convergence, {name} from scratch (seed 0): {c['scratch_E']:.4f} at {c['E']} epochs, "
            f"{c['scratch_2E']:.4f} at {2 * c['E']} ({c['diff_points']:+.2f} points): "
            f"{'converged' if c['converged'] else 'NOT converged'} (tolerance {c['tolerance_points']})."
        )
    m = res["machine"]
    lines += ["", f"Machine: {m['cpu']}, {m['threads']} thread(s); {m['versions']}; {res['date']}; "
              f"{res['wall_s'] / 60:.1f} min of training.", ""]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default="data/speech", help="the audio_folder corpus")
    ap.add_argument("--synthetic", type=int, default=0, help="N synthetic training clips instead of the corpus")
    ap.add_argument("--epochs", type=int, default=PROTOCOL["epochs"], help="student epochs")
    ap.add_argument("--teacher-epochs", type=int, default=PROTOCOL["teacher_epochs"])
    ap.add_argument("--seeds", default=",".join(map(str, PROTOCOL["seeds"])))
    ap.add_argument("--students", default=",".join(PROTOCOL["students"]))
    ap.add_argument("--no-ensemble", action="store_true")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for training (latency: always 1)")
    ap.add_argument("--quick", action="store_true", help="240 synthetic clips, 1 epoch, seed 0: a smoke run")
    ap.add_argument("--estimate", action="store_true", help="print the protocol's time on the data; train nothing")
    ap.add_argument("--convergence", action="store_true", help="also train each student's scratch (seed 0) at 2E")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--cache", type=Path, default=HERE / "cache" / "speech")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    p = {**PROTOCOL, "epochs": args.epochs, "teacher_epochs": args.teacher_epochs,
         "seeds": [int(s) for s in args.seeds.split(",")]}  # fmt: skip
    p["students"] = {k: v for k, v in PROTOCOL["students"].items() if k in args.students.split(",")}
    if args.quick:
        args.synthetic = args.synthetic or 240
        args.out = args.cache / "quick" if args.out == HERE / "results" else args.out  # never the real results
        p.update(epochs=1, teacher_epochs=1, seeds=[0], views=1)
        LATENCY.update(repeats=5, min_seconds=0.05)
    data = load_data(args)
    if args.estimate:
        print(json.dumps(estimate(data, p), indent=2))
        return 0
    t_start = time.perf_counter()
    teacher, t_info = get_teacher(p["teacher"], data, p, args.cache)
    print(f"teacher: {json.dumps(t_info)}", flush=True)
    same = {k: v for k, v in p.items() if k not in ("students", "seeds")}  # a row names its student and seed
    key = digest({**same, "data": data.fingerprint(), "teacher": t_info["dir"]})
    runs_file = args.cache / ("quick.jsonl" if args.quick else "runs.jsonl")
    done = [json.loads(x) for x in runs_file.read_text().splitlines()] if runs_file.exists() else []
    done = [r for r in done if r.get("protocol") == key]
    rows, ens_rows = [], []
    jobs = [(n, m, s) for n in p["students"] for m in ("scratch", "kd") for s in p["seeds"]]
    members, ens = [], None
    if not args.no_ensemble and p["ensemble_student"] in p["students"]:
        members = [get_teacher(spec, data, p, args.cache) for spec in p["ensemble"]]
        ens = MultiTeacher([teacher, *(m for m, _ in members)])
        jobs += [(p["ensemble_student"], "multi_kd", s) for s in p["seeds"]]
    for name, method, seed in jobs:
        hit = next((r for r in done if (r["student"], r["method"], r["seed"]) == (name, method, seed)
                    and r.get("epochs", p["epochs"]) == p["epochs"]), None)  # fmt: skip
        if hit is None:
            hit = {**run_one(name, method, seed, data, ens if method == "multi_kd" else teacher, p, args.cache, key),
                   "protocol": key}  # fmt: skip
            runs_file.parent.mkdir(parents=True, exist_ok=True)
            with runs_file.open("a") as fh:
                fh.write(json.dumps(hit) + "\n")
        (ens_rows if method == "multi_kd" else rows).append(hit)
        print(json.dumps({k: v for k, v in hit.items() if k not in ("protocol", "dir")}), flush=True)
    students = summarise(rows)
    conv = convergence(args, p, data, teacher, rows, done, runs_file, key) if args.convergence else {}
    t_info["latency_ms_b1"] = latency_b1(teacher)
    result: dict[str, Any] = {"teacher": t_info, "students": students, "goals": goals(t_info, students)}
    if conv:
        result["convergence"] = conv
    if ens is not None:
        e_student = {**summarise(ens_rows)[0], "method": f"multi_kd ({len(ens)} teachers)"}
        e_acc = round(accuracy(ens, make_dm(data, p, 0)), 4)
        result["ensemble"] = {"teachers": [t_info, *(i for _, i in members)], "accuracy": e_acc, "student": e_student}
    small = [s for s in students if s["method"] == "kd" and s["params"] * GOAL_RATIO <= t_info["params"]]
    if small:
        result["int8"] = export_int8(max(small, key=lambda s: s["acc_mean"]), rows, data, p, args.cache)
    result.update({
        "data": {"name": data.name, "train": len(data.x_train), "test": len(data.x_test), "classes": data.num_classes,
                 "fingerprint": data.fingerprint()[:16]},
        "protocol": {**p, "quick": args.quick, "synthetic": bool(args.synthetic)},
        "wall_s": round(sum(r["seconds"] for r in rows + ens_rows)
                        + sum(i.get("train_s", 0) for i in [t_info, *(i for _, i in members)]), 1),
        "this_invocation_s": round(time.perf_counter() - t_start, 1), **machine_info(),
    })  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "speech.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (args.out / "speech.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

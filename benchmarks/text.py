"""Text distillation benchmark: all-MiniLM-L6-v2 fine-tuned on Rotten Tomatoes (split by movie) → students.

The teacher is fine-tuned as a user would: up to ``--teacher-epochs`` epochs, stopped when validation accuracy has not
improved for ``--teacher-patience`` epochs, the best validation epoch's weights kept (cached by its starting weights,
data and settings). Students:

* TF-IDF + logistic regression; logistic regression on the pretrained MiniLM's frozen sentence embeddings;
* a TextCNN and a BiLSTM over the teacher's tokenizer (word embeddings PCA-initialised from the teacher), with labels
  only (``ce``), with KD from cached teacher logits (``kd``), and with KD on a transfer set (``kd+transfer``: the
  training texts plus up to 20 augmented copies of each that the teacher labels, Tang et al. 2019), 3 seeds each;
* the curve of the TextCNN's accuracy against the number of copies (1, 4, 10, 20: nested prefixes of one
  20-copy set, labelled by the teacher once);
* 2-layer MiniLM students (DistilBERT-style, initialised from teacher layers 2 and 5): ``ce``, ``kd``, and
  TinyBERT's two stages on the transfer set (hidden states + attention matrices + embeddings, then soft targets).

Rules, fixed before any test accuracy was seen: each student keeps its best validation epoch's weights; a transfer-set
run of k copies trains ``max(1, round(20 / (k + 1)))`` epochs, so every point of the copies curve costs the same number
of training steps (20 passes over the labelled texts' size); test accuracy is computed once per run.

Latency: median CPU forward time at the test split's mean length, batch 1 and 32, in PyTorch (eager) and in
onnxruntime, each student timed in rounds alternating with the teacher in the same runtime; speed-up is the median of
the per-round ratios. It is measured last, in one process, after all training (``--worker`` runs train only).

Resumable: every run is kept under ``benchmarks/cache/text_rows/<key>/`` (its row and weights); a rerun skips what
is done. ``--worker`` processes share the runs (each claims one at a time; two processes with one thread each use
two cores better than one with two); the invocation without ``--worker`` trains what is left, measures latency and
writes ``benchmarks/results/text.json`` and ``text.md`` with the wall time of everything (cached parts at the time
they took).

    OMP_NUM_THREADS=2 python benchmarks/text.py --prepare          # teacher + the transfer set's labels (~50 min)
    OMP_NUM_THREADS=1 python benchmarks/text.py --worker &         # the runs, on two cores
    OMP_NUM_THREADS=1 python benchmarks/text.py --worker &
    OMP_NUM_THREADS=2 python benchmarks/text.py                    # what is left, latency, the tables
    python benchmarks/text.py --quick --out /tmp/textbench         # smoke: a tiny slice, ~2 min
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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
COPIES_MAX = 20
CURVE = (1, 4, 10, 20)
SEEDS = (0, 1, 2)
KD = {"alpha": 0.9, "temperature": 2.0}
SMALL = {  # name: (student spec, epochs on the labelled texts, lr)
    "cnn": ({"model": "cnn", "embed_dim": 128, "channels": 128, "init": "pca"}, 4, 2e-3),
    "bilstm": ({"model": "bilstm", "embed_dim": 128, "hidden": 128, "init": "pca"}, 3, 2e-3),
}
L2 = {"model": "layers", "layers": [2, 5]}  # TinyBERT's uniform map g(m) = 3m: student layer 1, 2 <- teacher 3, 6


def transfer_epochs(copies: int) -> int:
    """Equal steps along the copies curve: ``max(1, round(20 / (k + 1)))`` passes over a set of ``k + 1`` times the
    labelled texts ≈ 20 passes' worth of the labelled set (k = 1: 10 epochs; 4: 4; 10: 2; 20: 1)."""
    return max(1, round(20 / (copies + 1)))


@dataclass(frozen=True)
class Run:
    """One trained student: ``model`` (cnn, bilstm, minilm-L2), ``method`` (ce, kd, kd+transfer, tinybert+transfer),
    ``copies`` of each training text in its transfer set (0: none), ``seed``."""

    model: str
    method: str
    seed: int = 0
    copies: int = 0
    spec: dict[str, Any] = field(default_factory=dict, hash=False)
    stages: tuple = ()  # ((text method, params, copies, epochs, lr), ...)

    @property
    def name(self) -> str:
        return f"{self.model}-{self.method}" + (f"@{self.copies}" if self.copies else "")

    def key(self, context: str) -> str:
        blob = json.dumps([context, asdict(self)], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def plan(quick: bool = False) -> list[Run]:
    """Every run of the benchmark, in the order they are trained (the most informative first, so that a partial
    result is the most useful one: the TextCNN with its copies curve, the transformers, then the BiLSTM)."""
    seeds = (0,) if quick else SEEDS
    top = 2 if quick else COPIES_MAX

    def small(model: str, method: str, seed: int, copies: int = 0) -> Run:
        spec, epochs, lr = SMALL[model]
        if method == "ce":
            return Run(model, "ce", seed, 0, spec, (("text_ce", {}, 0, epochs, lr),))
        if method == "kd":
            return Run(model, "kd", seed, 0, spec, (("text_kd", KD, 0, epochs, lr),))
        return Run(model, "kd+transfer", seed, copies, spec, (("text_kd", KD, copies, transfer_epochs(copies), lr),))

    runs = [small("cnn", m, seed, top) for seed in seeds for m in ("ce", "kd", "kd+transfer")]
    runs += [small("cnn", "kd+transfer", 0, k) for k in ((1,) if quick else CURVE[:-1])]  # the copies curve
    runs.append(Run("minilm-L2", "ce", 0, 0, L2, (("text_ce", {}, 0, 2, 1e-4),)))
    runs.append(Run("minilm-L2", "kd", 0, 0, L2, (("text_kd", KD, 0, 2, 1e-4),)))
    # TinyBERT (Jiao et al., 2020): intermediate layers on the transfer set, then soft targets only (alpha 1, T 1);
    # shortened to one epoch each for a CPU (the paper: 10-20 and 3 epochs on ~20x augmented data)
    k1, k2 = (1, 2) if quick else (1, 4)
    tiny = (("tinybert", {}, k1, 1, 1e-4), ("text_kd", {"alpha": 1.0, "temperature": 1.0}, k2, 1, 1e-4))
    runs.append(Run("minilm-L2", "tinybert+transfer", 0, k2, L2, tiny))
    runs += [small("bilstm", m, seed) for seed in seeds for m in ("ce", "kd")]
    runs += [small("bilstm", "kd+transfer", seed, top) for seed in seeds]
    return runs


def mean_std(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def aggregate(rows: list[dict], teacher_acc: float) -> list[dict]:
    """Runs with the same model, method and copies → one row: test accuracy mean ± sample std over seeds."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["method"], r.get("copies", 0)), []).append(r)
    out = []
    for rs in groups.values():
        rs = sorted(rs, key=lambda r: r.get("seed", 0))
        acc, std = mean_std([r["acc"] for r in rs])
        row = {k: v for k, v in rs[0].items() if k not in ("acc", "seed", "train_seconds", "best_val_acc")}
        row.update(
            name=rs[0]["name"], acc=acc, acc_std=std, accs=[r["acc"] for r in rs], seeds=[r.get("seed", 0) for r in rs],
            accuracy_ratio=acc / teacher_acc, agreement=statistics.fmean(r.get("agreement", 0.0) for r in rs),
            train_seconds=sum(r.get("train_seconds", 0.0) for r in rs),
        )  # fmt: skip
        out.append(row)
    return out


MODEL_ORDER = ("cnn", "bilstm", "minilm-L2", "tfidf+logreg", "minilm-embeddings+logreg")
METHOD_ORDER = ("ce", "kd", "kd+transfer", "tinybert+transfer", "labels")


def order(r: dict) -> tuple:
    """Table order: by model, then method, then copies."""
    m, k = r["model"], r["method"]
    return (MODEL_ORDER.index(m) if m in MODEL_ORDER else 99, METHOD_ORDER.index(k) if k in METHOD_ORDER else 99,
            r.get("copies", 0))  # fmt: skip


def pick(rows: list[dict], speedup: float, runtimes: tuple[str, ...] = ("pytorch", "onnx")) -> dict[str, Any] | None:
    """The most accurate row at ≥ ``speedup`` × the teacher's batch-1 speed in some runtime (teacher and student in
    the same one); ``None`` when no row is that fast. The runtime is the one where it is fastest."""
    best = None
    for r in rows:
        speeds = {rt: r.get(f"speedup_b1_{rt}") for rt in runtimes if r.get(f"speedup_b1_{rt}") is not None}
        if not speeds or max(speeds.values()) < speedup:
            continue
        if best is None or r["acc"] > best["row"]["acc"]:
            rt = max(speeds, key=speeds.__getitem__)
            best = {"row": r, "runtime": rt, "speed": speeds[rt]}
    return best


def goal(rows: list[dict], ratio: float, speedup: float) -> dict[str, Any]:
    """``{name, accuracy, accuracy_ratio, accuracy_std, seeds, speedup, runtime, goal_met}`` for the best row at the
    speed (or the most accurate row when none is that fast: then the goal is not met)."""
    hit = pick(rows, speedup)
    if hit is None:
        r = max(rows, key=lambda r: r["acc"])
        hit = {"row": r, "runtime": "pytorch", "speed": r.get("speedup_b1_pytorch", 0.0)}
    r = hit["row"]
    return {
        "name": r["name"],
        "accuracy": r["acc"],
        "accuracy_std": r.get("acc_std", 0.0),
        "seeds": len(r.get("seeds", [0])),
        "accuracy_ratio": r["accuracy_ratio"],
        "speedup": hit["speed"],
        "runtime": hit["runtime"],
        "speedup_pytorch": r.get("speedup_b1_pytorch"),
        "speedup_onnx": r.get("speedup_b1_onnx"),
        "goal": {"accuracy_ratio": ratio, "speedup": speedup},
        "goal_met": bool(r["accuracy_ratio"] >= ratio and hit["speed"] >= speedup),
    }


def claim(lock: Path) -> Path | None:
    """``lock`` made atomically with this process's pid in it, or None when a live process holds it (a dead
    process's lock, or an empty one, is taken over: a worker killed mid-run does not block its run forever)."""
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            if _alive(lock):
                return None
            lock.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        return lock
    return None


def _alive(lock: Path) -> bool:
    try:
        pid = int(lock.read_text() or 0)
        if pid <= 0:
            return False
        os.kill(pid, 0)
    except (ProcessLookupError, ValueError, OSError):
        return False
    return True


# -- the work ---------------------------------------------------------------------------------------------------------
class Bench:
    """Data, teacher and the teacher's logits, shared by every run; runs kept under ``cache/text_rows``."""

    def __init__(self, args: argparse.Namespace) -> None:
        from distill.text.data import TextDataModule, rotten_tomatoes
        from distill.text.models import load_tokenizer, minilm_path
        from distill.text.pipeline import TextRecipe

        self.args, self.seed = args, 0
        torch.manual_seed(self.seed)
        data = rotten_tomatoes(seed=self.seed)
        self.data = subset(data, 256, 128) if args.quick else data
        self.tok = load_tokenizer(minilm_path())
        self.dm = TextDataModule(
            self.data, self.tok, 32, args.max_length, val_size=0.1, seed=self.seed, cache_dir=args.cache / "tokens"
        )
        self.recipe = TextRecipe(
            seed=self.seed,
            max_length=args.max_length,
            teacher={"model": "minilm", "patience": args.teacher_patience},
            teacher_train={  # BERT fine-tuning practice: AdamW 5e-5, weight decay 0.01, warm-up ~6 % of the run
                "epochs": 1 if args.quick else args.teacher_epochs,
                "optimizer": "adamw",
                "lr": 5e-5,
                "weight_decay": 0.01,
                "warmup_epochs": 0.3,
            },
            cache_dir=str(args.cache),
        )
        self._dms: dict[int, Any] = {}
        self._teacher: Any = None
        self.full_logits: torch.Tensor | None = None

    @property
    def teacher(self) -> Any:
        if self._teacher is None:
            from distill.text.pipeline import get_teacher

            self._teacher, self.t_info = get_teacher(self.recipe, self.dm, self.data)
            self._teacher.eval()
        return self._teacher

    def augment(self, copies: int) -> Any:
        from distill.text.augment import TransferAugment

        top = 2 if self.args.quick else COPIES_MAX
        return TransferAugment(copies=top, seed=self.seed, keep=copies)

    def transfer_dm(self, copies: int) -> Any:
        from distill.text.data import TextDataModule

        if copies not in self._dms:
            self._dms[copies] = TextDataModule(
                self.data, self.tok, 32, self.args.max_length, val_size=0.1, seed=self.seed,
                cache_dir=self.args.cache / "tokens", augment=self.augment(copies),
            )  # fmt: skip
        return self._dms[copies]

    def label(self) -> dict[str, Any]:
        """The teacher's logits on the labelled texts and the full transfer set (cached; timed when computed)."""
        from distill.text.pipeline import teacher_logits

        top = 2 if self.args.quick else COPIES_MAX
        t0 = time.perf_counter()
        self.train_logits = teacher_logits(self.teacher, self.dm, "train", self.args.cache)
        full = self.transfer_dm(top)
        self.full_logits = teacher_logits(self.teacher, full, "train", self.args.cache)
        n_train = len(self.dm.ids["train"])
        info_path = self.args.cache / "text_rows" / f"labels-{self.context()}.json"
        seconds = time.perf_counter() - t0
        if info_path.is_file():
            seconds = json.loads(info_path.read_text())["labelling_seconds"]
        else:
            info_path.parent.mkdir(parents=True, exist_ok=True)
            info_path.write_text(json.dumps({"labelling_seconds": seconds}))
        texts = {k: len(self.augment(k).positions(self.dm.texts["train"])) for k in sorted({*CURVE, top}) if k <= top}
        return {
            "settings": self.augment(top).to_dict() | {"keep": None},
            "texts": len(full.ids["train"]) - n_train,
            "texts_by_copies": texts,
            "labelling_seconds": seconds,
        }

    def logits_for(self, copies: int) -> torch.Tensor:
        """The teacher's logits for the labelled texts plus the first ``copies`` variants of each: a slice of the
        full set's (checked: the token ids at those positions are the smaller set's)."""
        if copies == 0:
            return self.train_logits
        assert self.full_logits is not None
        n = len(self.dm.ids["train"])
        pos = [n + p for p in self.augment(copies).positions(self.dm.texts["train"])]
        dm_k, full = self.transfer_dm(copies), self.transfer_dm(2 if self.args.quick else COPIES_MAX)
        if [full.ids["train"][p] for p in pos] != dm_k.ids["train"][n:]:
            raise AssertionError(f"the {copies}-copy transfer set is not a prefix of the full one")
        return self.full_logits[torch.cat([torch.arange(n), torch.tensor(pos, dtype=torch.long)])]

    def context(self) -> str:
        """What every run depends on besides its own settings: teacher, data, length, quick."""
        from distill.engine.cache import model_hash

        if not hasattr(self, "_context"):
            self._context = hashlib.sha256(
                json.dumps(
                    [model_hash(self.teacher), self.data.fingerprint(), self.args.max_length, self.args.quick]
                ).encode()
            ).hexdigest()[:16]
        return self._context

    def run_dir(self, run: Run) -> Path:
        return self.args.cache / "text_rows" / run.key(self.context())

    def done(self, run: Run) -> dict | None:
        path = self.run_dir(run) / "row.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def claim(self, run: Run) -> Path | None:
        d = self.run_dir(run)
        d.mkdir(parents=True, exist_ok=True)
        return claim(d / "claimed")

    def train(self, run: Run) -> dict:
        from safetensors.torch import save_file

        from distill.engine.callbacks import KeepBest
        from distill.report.bench import count_params
        from distill.report.metrics import classification_metrics, predict
        from distill.text.pipeline import build_student, fit

        torch.manual_seed(self.seed + 1 + run.seed)
        student = build_student(run.spec, self.teacher, self.data.num_classes)
        t0 = time.perf_counter()
        stages = []
        for method, params, copies, epochs, lr in run.stages:
            dm = self.transfer_dm(copies) if copies else self.dm
            optim = {"epochs": 1 if self.args.quick else epochs, "optimizer": "adamw", "lr": lr, "weight_decay": 0.01}
            optim["warmup_epochs"] = 0.1 * optim["epochs"]
            logits = self.logits_for(copies) if method == "text_kd" else None
            state = fit(student, self.teacher, method, params, dm, optim, logits, callbacks=[KeepBest()])
            stages.append({"method": method, "params": params, "copies": copies, "epochs": optim["epochs"], "lr": lr,
                           "best_epoch": state.best_epoch, "best_val_acc": state.best_acc})  # fmt: skip
        t_test, y_test = self.teacher_test()
        row = {
            "name": run.name, "model": run.model, "method": run.method, "seed": run.seed, "copies": run.copies,
            "student": run.spec, "stages": stages, "params": count_params(student),
            **classification_metrics(predict(student, self.dm.eval_batches("test"))[0], y_test, t_test),
            "best_val_acc": stages[-1]["best_val_acc"], "train_seconds": time.perf_counter() - t0,
        }  # fmt: skip
        d = self.run_dir(run)
        d.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in student.state_dict().items()}, str(d / "model.safetensors"))
        (d / "row.json").write_text(json.dumps(row, indent=1, default=str))  # last: a row present is a run done
        print(f"{run.name} seed {run.seed}: acc {row['acc']:.4f} in {row['train_seconds']:.0f} s", flush=True)
        return row

    def teacher_test(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The teacher's test logits and the labels (computed once)."""
        from distill.report.metrics import predict

        if not hasattr(self, "_t_test"):
            self._t_test = predict(self.teacher, self.dm.eval_batches("test"))
        return self._t_test

    def load(self, run: Run) -> torch.nn.Module:
        from safetensors.torch import load_file

        from distill.text.pipeline import build_student

        student = build_student(run.spec, self.teacher, self.data.num_classes)
        student.load_state_dict(load_file(str(self.run_dir(run) / "model.safetensors")))
        return student.eval()


def subset(data: Any, n_train: int, n_test: int) -> Any:
    from distill.text.data import TextData

    g = data.train_groups[:n_train] if data.train_groups else None
    return TextData(
        data.name, data.train_texts[:n_train], data.y_train[:n_train], data.test_texts[:n_test], data.y_test[:n_test],
        data.classes, g, (data.test_groups or [])[:n_test] or None,
    )  # fmt: skip


def sklearn_latency_ms(predict_fn: Any, texts: list[str], repeats: int = 20) -> float:
    predict_fn(texts)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        predict_fn(texts)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


@torch.inference_mode()
def breakdown_ms(model: Any, seq: int, vocab: int, threads: int = 0, repeats: int = 30) -> dict[str, float]:
    """Where a transformer's batch-1 PyTorch time goes: the embeddings, one block (times the number of blocks),
    pooler + head, and the rest of the forward (mask preparation, output objects, Python between modules: a cost
    per call that does not shrink with depth)."""
    from distill.report.bench import time_ms
    from distill.text.models import transformer_layers

    hf = model.eval().hf
    base, layers = hf.base_model, transformer_layers(hf)
    ids = torch.randint(1000, vocab, (1, seq), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    h = base.embeddings(input_ids=ids)
    t = {
        "total": time_ms(lambda: model(ids, mask), repeats, 3, threads or None, min_seconds=0.0),
        "embeddings": time_ms(lambda: base.embeddings(input_ids=ids), repeats, 3, threads or None, min_seconds=0.0),
        "blocks": len(layers) * time_ms(lambda: layers[0](h), repeats, 3, threads or None, min_seconds=0.0),
        "pooler_head": time_ms(lambda: hf.classifier(base.pooler(h)), repeats, 3, threads or None, min_seconds=0.0),
    }
    t["per_call_rest"] = t["total"] - t["embeddings"] - t["blocks"] - t["pooler_head"]
    return t


def latencies(b: Bench, models: dict[str, Any], rounds: int, reps: int) -> dict[str, dict[str, float]]:
    """Per model name: PyTorch and onnxruntime ms at batch 1 and 32 and speed-ups, each runtime paired with the
    teacher in the same runtime (``models``: name → nn.Module, or a ``(bs, n) -> ms`` timer for scikit-learn)."""
    from distill.text.latency import onnx_timed, paired_latency, timed

    teacher = b.teacher
    seq = round(b.dm.mean_length("test"))
    vocab = teacher.hf.get_input_embeddings().num_embeddings
    threads = b.args.threads
    tmp = Path(tempfile.mkdtemp(prefix="textbench-onnx-"))
    t_torch = timed(teacher, seq, vocab, threads)
    t_onnx = onnx_timed(teacher, tmp / "teacher.onnx", seq, vocab, threads, b.args.max_length)
    out: dict[str, dict[str, float]] = {
        "teacher": {
            **{f"latency_ms_b{bs}_pytorch": t_torch(bs, rounds * reps) for bs in (1, 32)},
            **{f"latency_ms_b{bs}_onnx": t_onnx(bs, rounds * reps) for bs in (1, 32)},
        }
    }
    for name, m in models.items():
        row: dict[str, float] = {}
        if callable(m) and not isinstance(m, torch.nn.Module):  # a scikit-learn timer: the same in both columns
            lat = paired_latency(t_torch, m, (1, 32), rounds, reps)
            row.update({f"{k}_pytorch": v for k, v in lat.items()})
        else:
            lat = paired_latency(t_torch, timed(m, seq, vocab, threads), (1, 32), rounds, reps)
            row.update({f"{k}_pytorch": v for k, v in lat.items()})
            s_onnx = onnx_timed(m, tmp / f"{name}.onnx", seq, vocab, threads, b.args.max_length)
            lat = paired_latency(t_onnx, s_onnx, (1, 32), rounds, reps)
            row.update({f"{k}_onnx": v for k, v in lat.items()})
        out[name] = row
        print(f"latency {name}: ×{row['speedup_b1_pytorch']:.1f} PyTorch, "
              f"×{row.get('speedup_b1_onnx', float('nan')):.1f} onnxruntime at batch 1", flush=True)  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a tiny slice, 1 epoch each: checks the script only")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--cache", type=Path, default=HERE / "cache")
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--teacher-epochs", type=int, default=5, help="most fine-tuning epochs (early stopping on val)")
    ap.add_argument("--teacher-patience", type=int, default=1, help="epochs without a better validation accuracy")
    ap.add_argument("--threads", type=int, default=0, help="threads for latency (0: torch's default)")
    ap.add_argument(
        "--prepare", action="store_true", help="fine-tune the teacher and label the transfer set, then stop"
    )
    ap.add_argument("--worker", action="store_true", help="train runs not done or claimed by another worker, then stop")
    ap.add_argument("--without-transfer", action="store_true", help="a worker for the runs without a transfer set")
    ap.add_argument("--report-only", action="store_true", help="tables from the runs done so far (the rest listed)")
    ap.add_argument("--only", nargs="*", default=None, help="train only runs whose name starts with one of these")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    b = Bench(args)
    _ = b.teacher  # fine-tuned or loaded now
    print(f"teacher: {b.t_info}", flush=True)
    runs = plan(args.quick)
    if args.without_transfer:  # a worker that can start while the transfer set is still being labelled
        from distill.text.pipeline import teacher_logits

        runs = [r for r in runs if not any(stage[2] for stage in r.stages)]
        b.train_logits = teacher_logits(b.teacher, b.dm, "train", args.cache)
        transfer = {}
    else:
        transfer = b.label()
        print(f"transfer set: {transfer['texts']} texts labelled in {transfer['labelling_seconds']:.0f} s", flush=True)
    if args.prepare:
        return 0
    if args.only:
        runs = [r for r in runs if r.name.startswith(tuple(args.only))]
    for run in (
        [] if args.report_only else runs
    ):  # workers share the queue: each run is claimed by one process (a lock file), then kept
        if b.done(run) is None and (claim := b.claim(run)) is not None:
            try:
                b.train(run)
            finally:
                claim.unlink(missing_ok=True)
    if args.worker or args.only or args.without_transfer:
        return 0
    return report(b, runs, transfer, t_start)


def report(b: Bench, runs: list[Run], transfer: dict, t_start: float) -> int:
    from distill.report.bench import count_params
    from distill.report.metrics import classification_metrics
    from distill.text.models import embedding_logreg, load_hf_classifier, minilm_path, sentence_embeddings, tfidf_logreg

    args = b.args
    teacher = b.teacher
    t_test, y_test = b.teacher_test()
    t_row = {"name": "teacher (MiniLM-L6, fine-tuned)", **classification_metrics(t_test, y_test)}
    t_row.update(params=count_params(teacher), **{k: v for k, v in b.t_info.items() if k != "source"})
    rows = [row for r in runs if (row := b.done(r)) is not None]
    missing = [f"{r.name} seed {r.seed}" for r in runs if b.done(r) is None]
    runs = [r for r in runs if b.done(r) is not None]
    # classical students: cheap, fitted here
    t0 = time.perf_counter()
    train_texts, y_train = b.dm.split("train")
    test_texts = b.dm.split("test")[0]
    clf = tfidf_logreg().fit(train_texts, y_train.numpy())
    classical = [{
        "name": "tfidf+logreg", "model": "tfidf+logreg", "method": "labels",
        **classification_metrics(torch.from_numpy(clf.predict_log_proba(test_texts)).float(), y_test, t_test),
        "params": int(clf[-1].coef_.size + clf[-1].intercept_.size), "train_seconds": time.perf_counter() - t0,
    }]  # fmt: skip
    t0 = time.perf_counter()
    encoder = load_hf_classifier(minilm_path(), num_labels=2)  # the pretrained sentence embedder, frozen
    e_train = sentence_embeddings(encoder, b.dm.eval_batches("train", by_length=True)).numpy()
    e_test = sentence_embeddings(encoder, b.dm.eval_batches("test", by_length=True)).numpy()
    lr = embedding_logreg().fit(e_train, y_train.numpy())
    classical.append({
        "name": "minilm-embeddings+logreg", "model": "minilm-embeddings+logreg", "method": "labels",
        **classification_metrics(torch.from_numpy(lr.predict_log_proba(e_test)).float(), y_test, t_test),
        "params": count_params(encoder.hf.base_model) + int(lr.coef_.size + lr.intercept_.size),
        "train_seconds": time.perf_counter() - t0,
    })  # fmt: skip
    # latency: one trained model per architecture (weights do not change the time), after all training
    rounds, reps = (1, 3) if args.quick else (5, 10)
    models: dict[str, Any] = {
        "tfidf+logreg": lambda bs, n: sklearn_latency_ms(clf.predict_proba, test_texts[:bs], n),
        "minilm-embeddings+logreg": encoder,  # the encoder dominates; the regression adds microseconds
    }
    for run in runs:
        if run.model not in models:
            models[run.model] = b.load(run)
    lat = latencies(b, models, rounds, reps)
    t_row.update(lat["teacher"])
    seq, vocab = round(b.dm.mean_length("test")), teacher.hf.get_input_embeddings().num_embeddings
    where = {name: breakdown_ms(m, seq, vocab, args.threads) for name, m in (("teacher", teacher),
             *((r.model, b.load(r)) for r in runs if r.model.startswith("minilm-L") and r.method == "ce"))}  # fmt: skip
    students = aggregate(rows, t_row["acc"]) + [
        {**c, "accs": [c["acc"]], "acc_std": 0.0, "seeds": [0], "accuracy_ratio": c["acc"] / t_row["acc"]}
        for c in classical
    ]
    for r in students:
        r.update(lat[r["model"]])
    students.sort(key=order)
    small = [r for r in students if r["model"] in SMALL]
    transformers_ = [r for r in students if r["model"].startswith("minilm-L")]
    curve = [
        {"copies": r["copies"], "texts": transfer["texts_by_copies"].get(r["copies"], 0), "acc": r["acc"],
         "acc_std": r["acc_std"], "seeds": len(r["seeds"]), "epochs": r["stages"][-1]["epochs"]}
        for r in sorted(students, key=lambda r: r.get("copies", 0))
        if r["model"] == "cnn" and r["method"] in ("kd", "kd+transfer")
    ]  # fmt: skip
    result = {
        "task": "Rotten Tomatoes sentiment (fresh vs rotten), train/val/test split by movie",
        "quick": args.quick,
        "data": {
            "train": len(train_texts),
            "val": len(b.dm.split("val")[0]),
            "test": len(test_texts),
            "max_length": args.max_length,
            "mean_test_tokens": b.dm.mean_length("test"),
            "latency_sequence_length": round(b.dm.mean_length("test")),
        },
        "teacher": t_row,
        "transfer_set": transfer,
        "students": students,
        "copies_curve": curve,
        "latency_breakdown_b1_pytorch_ms": where,
        "best_student": goal(small + [r for r in students if r["model"] == "tfidf+logreg"], 0.98, 10.0),
        "transformer_student": goal(transformers_, 0.97, 3.0),
        "complete": not missing,
        "missing_runs": missing,
        "rules": {
            "checkpoint": "each run keeps its best validation epoch's weights",
            "transfer_epochs": "max(1, round(20 / (copies + 1)))",
            "seeds": "3 for the TextCNN and BiLSTM rows, 1 for the MiniLM-L2 rows and the copies curve below 20",
            "speed": "batch-1 speed-up over the teacher in the same runtime (PyTorch eager or onnxruntime); a goal "
            "counts in the runtime where the student is fastest relative to the teacher",
        },
        "machine": machine(args.threads),
        "versions": versions(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "seconds_this_invocation": time.perf_counter() - t_start,
    }
    result["wall_seconds"] = (
        (b.t_info.get("finetune_seconds") or b.t_info.get("train_seconds") or 0.0)
        + transfer["labelling_seconds"]
        + sum(r.get("train_seconds", 0.0) for r in rows)
        + result["seconds_this_invocation"]
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "text.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (args.out / "text.md").write_text(markdown(result))
    for k in ("best_student", "transformer_student"):
        g = result[k]
        print(f"{k}: {g['name']} — {g['accuracy_ratio']:.1%} of the teacher at ×{g['speedup']:.1f} ({g['runtime']}); "
              f"goal {'met' if g['goal_met'] else 'NOT met'}")  # fmt: skip
    print(f"wrote {args.out / 'text.json'} and text.md")
    return 0


def machine(threads: int) -> dict[str, object]:
    cpu = platform.processor()
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": threads or torch.get_num_threads()}


def versions() -> dict[str, str]:
    import onnxruntime
    import sklearn
    import transformers

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnxruntime": onnxruntime.__version__,
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
    }


def _acc(r: dict) -> str:
    return f"{r['acc']:.4f}" + (f" ± {r['acc_std']:.4f}" if len(r.get("seeds", [])) > 1 else "")


def markdown(r: dict) -> str:
    t = r["teacher"]
    d = r["data"]
    ti = t
    tune = (
        f"fine-tuned {ti.get('epochs_trained', '?')} epochs, best validation epoch {ti.get('best_epoch', '?')} kept "
        f"(validation accuracy per epoch: {', '.join(f'{a:.4f}' for a in ti.get('val_acc_per_epoch', []))})"
    )
    lines = [
        "# Text distillation benchmark" + (" (QUICK smoke run — not a result)" if r["quick"] else ""),
        "",
        f"{r['task']}: {d['train']} train / {d['val']} val / {d['test']} test snippets, max {d['max_length']} tokens. "
        f"Teacher: all-MiniLM-L6-v2 with a new head, {tune}. Latency: median CPU forward time at sequence length "
        f"{d['latency_sequence_length']} (the test texts' mean), in PyTorch (eager) and in onnxruntime; each student "
        "is timed in rounds alternating with the teacher in the same runtime, and the speed-up is the median of the "
        "per-round ratios. Accuracy: mean ± std over the seeds (n).",
        "",
        "| model | method | copies | accuracy (n) | ÷ teacher | params | ms b1 PyTorch | ms b1 ONNX | speed-up b1 "
        "PyTorch | speed-up b1 ONNX | speed-up b32 PyTorch |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| teacher (MiniLM-L6) | fine-tuned | – | {t['acc']:.4f} (1) | 100.0% | {t['params']:,} "
        f"| {t['latency_ms_b1_pytorch']:.2f} | {t['latency_ms_b1_onnx']:.2f} | 1.0× | 1.0× | 1.0× |",
    ]
    for s in r["students"]:
        onnx_ms = f"{s['latency_ms_b1_onnx']:.2f}" if "latency_ms_b1_onnx" in s else "–"
        onnx_x = f"{s['speedup_b1_onnx']:.1f}×" if "speedup_b1_onnx" in s else "–"
        lines.append(
            f"| {s['model']} | {s['method']} | {s.get('copies') or '–'} | {_acc(s)} ({len(s['seeds'])}) "
            f"| {s['accuracy_ratio']:.1%} | {s['params']:,} | {s['latency_ms_b1_pytorch']:.2f} | {onnx_ms} "
            f"| {s['speedup_b1_pytorch']:.1f}× | {onnx_x} | {s['speedup_b32_pytorch']:.1f}× |"
        )
    for name, w in r.get("latency_breakdown_b1_pytorch_ms", {}).items():
        lines += [
            "",
            f"Where {name}'s batch-1 PyTorch time goes: {w['total']:.2f} ms = embeddings "
            f"{w['embeddings']:.2f} + blocks {w['blocks']:.2f} + pooler and head {w['pooler_head']:.2f} + the rest "
            f"of the call {w['per_call_rest']:.2f} (mask preparation, output objects, Python between modules).",
        ]
    ts = r["transfer_set"]
    st = ts["settings"]
    lines += [
        "",
        f"Transfer set: up to {st['copies']} augmented copies of each training text (mask p={st['p_mask']}, replace "
        f"p={st['p_replace']}, n-gram p={st['p_ngram']} up to {st['max_ngram']} words), {ts['texts']:,} texts, "
        f"unlabeled; the teacher labelled them in {ts['labelling_seconds']:.0f} s "
        f"({1000 * ts['labelling_seconds'] / max(ts['texts'], 1):.1f} ms a text). Students train on its soft targets "
        "(and the labelled texts' labels).",
        "",
        "## What the teacher's labelling buys: TextCNN accuracy against copies per text",
        "",
        "Every point trains the same number of steps (epochs = max(1, round(20 / (copies + 1)))); 0 copies is KD on "
        "the labelled texts alone.",
        "",
        "| copies | transfer texts | teacher labelling (s) | epochs | accuracy (n) | ÷ teacher |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    per_text = ts["labelling_seconds"] / max(ts["texts"], 1)
    for c in r["copies_curve"]:
        lines.append(
            f"| {c['copies']} | {c['texts']:,} | {per_text * c['texts']:.0f} | {c['epochs']} | "
            f"{_acc({'acc': c['acc'], 'acc_std': c['acc_std'], 'seeds': [0] * c['seeds']})} ({c['seeds']}) "
            f"| {c['acc'] / t['acc']:.1%} |"
        )
    lines.append("")
    if r.get("missing_runs"):
        lines += [f"**Incomplete**: {len(r['missing_runs'])} runs not done yet ({', '.join(r['missing_runs'])}); "
                  "rerun `python benchmarks/text.py` to finish them (done runs are kept).", ""]  # fmt: skip
    for key, label in (("best_student", "Best small student"), ("transformer_student", "Best transformer student")):
        g = r[key]
        lines.append(
            f"{label}: **{g['name']}** — {g['accuracy_ratio']:.1%} of the teacher's accuracy ({g['seeds']} seed(s)) at "
            f"{g['speedup']:.1f}× its batch-1 CPU speed ({g['runtime']}); goal (≥ {g['goal']['accuracy_ratio']:.0%} at "
            f"≥ {g['goal']['speedup']:.0f}×) {'met' if g['goal_met'] else 'NOT met'}."
        )
        lines.append("")
    lines += [
        f"Machine: {r['machine']['cpu']}, {r['machine']['cores']} cores, {r['machine']['torch_threads']} threads. "
        f"Versions: {', '.join(f'{k} {v}' for k, v in r['versions'].items())}. Date: {r['date']}. Wall time of "
        f"everything (teacher, labels, every run, this report): {r['wall_seconds'] / 60:.0f} min.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

"""Text distillation benchmark: all-MiniLM-L6-v2 fine-tuned on Rotten Tomatoes (split by movie) → students.

Rows: the teacher; a 2-layer and a 1-layer MiniLM (DistilBERT-style, initialised from teacher layers), a TextCNN
and a BiLSTM over the teacher's tokenizer (word embeddings PCA-initialised from the teacher), each trained with
labels only (CE), with KD from cached teacher logits, and with KD on a transfer set (the training texts plus
augmented copies that the teacher labels: Tang et al. 2019); TF-IDF + logistic regression; logistic regression on
the pretrained MiniLM's frozen sentence embeddings. For each: test accuracy, parameters, CPU latency at batch 1 and 32
(the test split's mean token length), speed-up over the teacher.

Writes ``benchmarks/results/text.json`` (``best_student``: the most accurate student at ≥ 3× the teacher's batch-1
speed, else the most accurate one) and ``text.md``. Budget: ≈ 45–60 min on a 2-core CPU (teacher fine-tuning
≈ 6 min and the transfer set's labels ≈ 5 min, both cached under ``benchmarks/cache``). ``--quick`` checks the
script on a tiny slice in ~1 min.

    OMP_NUM_THREADS=2 python benchmarks/text.py            # full
    python benchmarks/text.py --quick --out /tmp/textbench # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import torch

from distill.report.bench import count_params
from distill.report.metrics import classification_metrics, predict
from distill.text.augment import TransferAugment
from distill.text.data import TextData, TextDataModule, rotten_tomatoes
from distill.text.models import (
    embedding_logreg,
    load_hf_classifier,
    load_tokenizer,
    minilm_path,
    sentence_embeddings,
    tfidf_logreg,
)
from distill.text.pipeline import (
    TextRecipe,
    build_student,
    fit,
    get_teacher,
    paired_latency,
    teacher_logits,
    timed,
)

HERE = Path(__file__).resolve().parent

STUDENTS = [  # name, student spec, epochs, epochs on the transfer set (None: no such row; it is 5× the data), lr
    ("minilm-L2", {"model": "layers", "layers": [0, 3]}, 2, None, 1e-4),
    ("minilm-L1", {"model": "layers", "layers": [0]}, 2, None, 1e-4),
    ("cnn", {"model": "cnn", "embed_dim": 128, "channels": 128, "init": "pca"}, 4, 4, 2e-3),
    ("bilstm", {"model": "bilstm", "embed_dim": 128, "hidden": 128, "init": "pca"}, 3, 3, 2e-3),
]


def subset(data: TextData, n_train: int, n_test: int) -> TextData:
    g = data.train_groups[:n_train] if data.train_groups else None
    return TextData(
        data.name, data.train_texts[:n_train], data.y_train[:n_train], data.test_texts[:n_test], data.y_test[:n_test],
        data.classes, g, (data.test_groups or [])[:n_test] or None,
    )  # fmt: skip


def sklearn_latency_ms(predict_fn, texts: list[str], repeats: int = 20) -> float:
    predict_fn(texts)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        predict_fn(texts)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a tiny slice, 1 epoch each: checks the script only")
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--cache", type=Path, default=HERE / "cache")
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--teacher-epochs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch threads for latency (0: torch's default)")
    ap.add_argument("--copies", type=int, default=4, help="augmented variants per training text in the transfer set")
    ap.add_argument(
        "--skip",
        nargs="*",
        default=["minilm-L1"],
        help="student names to leave out (default: minilm-L1, ~5 min more; pass --skip with no names for all)",
    )
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    seed = 0
    torch.manual_seed(seed)
    data = rotten_tomatoes(seed=seed)
    if args.quick:
        data = subset(data, 256, 128)
    tok = load_tokenizer(minilm_path())
    dm = TextDataModule(data, tok, 32, args.max_length, val_size=0.1, seed=seed, cache_dir=args.cache / "tokens")
    recipe = TextRecipe(
        seed=seed,
        max_length=args.max_length,
        teacher_train={
            "epochs": args.teacher_epochs,
            "optimizer": "adamw",
            "lr": 5e-5,
            "weight_decay": 0.01,
            "warmup_epochs": 0.1,
        },
        cache_dir=str(args.cache),
    )
    teacher, t_info = get_teacher(recipe, dm, data)
    teacher.eval()
    t_test, y_test = predict(teacher, dm.eval_batches("test"))
    train_logits = teacher_logits(teacher, dm, "train", args.cache)
    # the transfer set (Tang et al. 2019): augmented training texts, labelled by the teacher once (cached)
    t0 = time.perf_counter()
    augment = TransferAugment(copies=args.copies, seed=seed)
    dm_t = TextDataModule(
        data, tok, 32, args.max_length, val_size=0.1, seed=seed, cache_dir=args.cache / "tokens", augment=augment
    )
    transfer_logits = teacher_logits(teacher, dm_t, "train", args.cache)
    transfer = {
        "settings": augment.to_dict(),
        "texts": len(dm_t.split("train")[0]) - len(dm.split("train")[0]),
        "labelling_seconds": time.perf_counter() - t0,
    }
    print(f"transfer set: {transfer['texts']} augmented texts, labelled in {transfer['labelling_seconds']:.0f} s")
    seq = round(dm.mean_length("test"))
    vocab = teacher.hf.get_input_embeddings().num_embeddings
    rounds, reps = (1, 3) if args.quick else (5, 10)
    test_texts = dm.split("test")[0]

    def sk_timed(predict_fn):  # (batch size, repeats) -> ms of a scikit-learn pipeline on the first test texts
        return lambda bs, n: sklearn_latency_ms(predict_fn, test_texts[:bs], n)

    def lat(student_timed) -> dict[str, float]:
        return paired_latency(t_timed, student_timed, (1, 32), rounds, reps)

    t_timed = timed(teacher, seq, vocab, args.threads)
    t_row = {
        "name": "teacher (MiniLM-L6, fine-tuned)",
        **classification_metrics(t_test, y_test),
        "params": count_params(teacher),
        **{f"latency_ms_b{bs}": t_timed(bs, rounds * reps) for bs in (1, 32)},
        **{k: v for k, v in t_info.items() if k != "source"},
    }
    rows = []

    def add(row: dict) -> None:
        row["accuracy_ratio"] = row["acc"] / t_row["acc"]
        print(f"{row['name']:<28} acc {row['acc']:.4f} ({row['accuracy_ratio']:.1%})  ×{row['speedup_b1']:.1f} b1")
        rows.append(row)

    # classical students
    t0 = time.perf_counter()
    train_texts, y_train = dm.split("train")
    clf = tfidf_logreg().fit(train_texts, y_train.numpy())
    logits = torch.from_numpy(clf.predict_log_proba(test_texts)).float()
    add({
        "name": "tfidf+logreg", "method": "labels", **classification_metrics(logits, y_test, t_test),
        "params": int(clf[-1].coef_.size + clf[-1].intercept_.size),
        **lat(sk_timed(clf.predict_proba)),
        "train_seconds": time.perf_counter() - t0,
    })  # fmt: skip
    t0 = time.perf_counter()
    encoder = load_hf_classifier(minilm_path(), num_labels=2)  # the pretrained sentence embedder, frozen
    e_train = sentence_embeddings(encoder, dm.eval_batches("train", by_length=True)).numpy()
    e_test = sentence_embeddings(encoder, dm.eval_batches("test", by_length=True)).numpy()
    lr = embedding_logreg().fit(e_train, y_train.numpy())
    logits = torch.from_numpy(lr.predict_log_proba(e_test)).float()
    add({
        "name": "minilm-embeddings+logreg", "method": "labels", **classification_metrics(logits, y_test, t_test),
        "params": count_params(encoder.hf.base_model) + int(lr.coef_.size + lr.intercept_.size),
        **lat(timed(encoder, seq, vocab, args.threads)),  # the encoder dominates; the regression adds microseconds
        "train_seconds": time.perf_counter() - t0,
    })  # fmt: skip
    del encoder

    for name, spec, epochs, transfer_epochs, lr_ in STUDENTS:
        if name in args.skip:
            continue
        kd = {"alpha": 0.9, "temperature": 2.0}
        runs = [("ce", "text_ce", {}, dm, None, epochs), ("kd", "text_kd", kd, dm, train_logits, epochs)]
        if transfer_epochs:
            runs.append(("kd+transfer", "text_kd", kd, dm_t, transfer_logits, transfer_epochs))
        for tag, method, params, sdm, logits, n_epochs in runs:
            torch.manual_seed(seed + 1)
            student = build_student(spec, teacher, data.num_classes)
            optim = {"epochs": 1 if args.quick else n_epochs, "optimizer": "adamw", "lr": lr_, "weight_decay": 0.01}
            optim["warmup_epochs"] = 0.1
            t0 = time.perf_counter()
            state = fit(student, teacher, method, params, sdm, optim, logits)
            add({
                "name": f"{name}-{tag}", "method": method + ("+transfer" if sdm is dm_t else ""), "student": spec,
                **classification_metrics(predict(student, dm.eval_batches("test"))[0], y_test, t_test),
                "params": count_params(student), **lat(timed(student, seq, vocab, args.threads)),
                "epochs": optim["epochs"], "lr": lr_, "best_val_acc": state.best_acc,
                "train_seconds": time.perf_counter() - t0,
            })  # fmt: skip

    fast = [r for r in rows if r["speedup_b1"] >= 3.0]
    best = max(fast or rows, key=lambda r: r["acc"])
    result = {
        "task": "Rotten Tomatoes sentiment (fresh vs rotten), train/val/test split by movie",
        "quick": args.quick,
        "data": {
            "train": len(train_texts),
            "val": len(dm.split("val")[0]),
            "test": len(test_texts),
            "max_length": args.max_length,
            "mean_test_tokens": dm.mean_length("test"),
            "latency_sequence_length": seq,
        },
        "teacher": t_row,
        "transfer_set": transfer,
        "students": rows,
        "best_student": {
            "name": best["name"],
            "accuracy": best["acc"],
            "accuracy_ratio": best["accuracy_ratio"],
            "speedup": best["speedup_b1"],
            "goal_met": bool(best["accuracy_ratio"] >= 0.97 and best["speedup_b1"] >= 3.0),
        },
        "machine": machine(args.threads),
        "versions": versions(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "seconds": time.perf_counter() - t_start,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "text.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (args.out / "text.md").write_text(markdown(result))
    print(f"best student: {best['name']} — {best['accuracy_ratio']:.1%} of the teacher at ×{best['speedup_b1']:.1f}")
    print(f"wrote {args.out / 'text.json'} and text.md in {result['seconds']:.0f} s")
    return 0


def machine(threads: int) -> dict[str, object]:
    cpu = platform.processor()
    try:
        cpu = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": threads or torch.get_num_threads()}


def versions() -> dict[str, str]:
    import sklearn
    import transformers

    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
    }


def markdown(r: dict) -> str:
    t = r["teacher"]
    lines = [
        "# Text distillation benchmark" + (" (QUICK smoke run — not a result)" if r["quick"] else ""),
        "",
        f"{r['task']}: {r['data']['train']} train / {r['data']['val']} val / {r['data']['test']} test snippets, "
        f"max {r['data']['max_length']} tokens. Latency: median CPU forward time at sequence length "
        f"{r['data']['latency_sequence_length']} (the test texts' mean); each student and the teacher are timed in "
        "alternating rounds, and the speed-up is the median of the per-round ratios.",
        "",
        "| model | method | accuracy | ÷ teacher | params | ms b1 | ms b32 | speed-up b1 | speed-up b32 |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| {t['name']} | fine-tuned | {t['acc']:.4f} | 100.0% | {t['params']:,} | {t['latency_ms_b1']:.2f} "
        f"| {t['latency_ms_b32']:.1f} | 1.0× | 1.0× |",
    ]
    for s in r["students"]:
        lines.append(
            f"| {s['name']} | {s['method']} | {s['acc']:.4f} | {s['accuracy_ratio']:.1%} | {s['params']:,} "
            f"| {s['latency_ms_b1']:.2f} | {s['latency_ms_b32']:.1f} | {s['speedup_b1']:.1f}× "
            f"| {s['speedup_b32']:.1f}× |"
        )
    b = r["best_student"]
    ts = r["transfer_set"]
    lines += [
        "",
        f"Transfer set (rows `+transfer`): {ts['texts']:,} augmented training texts ({ts['settings']['copies']} per "
        f"text: mask p={ts['settings']['p_mask']}, replace p={ts['settings']['p_replace']}, n-gram p="
        f"{ts['settings']['p_ngram']} up to {ts['settings']['max_ngram']} words), unlabeled, trained on the "
        f"teacher's soft targets only; the teacher labelled them in {ts['labelling_seconds']:.0f} s.",
        "",
        f"Best student: **{b['name']}** — {b['accuracy_ratio']:.1%} of the teacher's accuracy at {b['speedup']:.1f}× "
        f"its batch-1 CPU speed; goal (≥ 97 % at ≥ 3×) {'met' if b['goal_met'] else 'NOT met'}.",
        "",
        f"Machine: {r['machine']['cpu']}, {r['machine']['cores']} cores, {r['machine']['torch_threads']} torch "
        f"threads. Versions: {', '.join(f'{k} {v}' for k, v in r['versions'].items())}. Date: {r['date']}. "
        f"Total {r['seconds'] / 60:.1f} min.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

"""The report's figures, drawn with matplotlib (Agg) and returned as PNG ``data:`` URIs that an HTML page embeds.

Every function takes plain data (lists, arrays, dicts by model name) and knows nothing of run directories.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Sequence
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

DPI = 96
plt.rcParams.update(
    {
        "figure.dpi": DPI,
        "font.size": 9,
        "axes.titlesize": 10,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "legend.fontsize": 8,
        "legend.frameon": False,
    }
)
TEACHER_COLOR = "#222222"


def colors(n: int) -> list[str]:
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [matplotlib.colors.to_hex(cmap(i % cmap.N)) for i in range(n)]


def to_data_uri(fig: plt.Figure) -> str:
    """Render ``fig`` as a PNG ``data:`` URI and close it."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def pareto_front(costs: Sequence[float], accs: Sequence[float]) -> list[int]:
    """Indices of the points no other point beats (lower or equal cost and higher or equal accuracy, one strictly),
    sorted by cost."""
    idx = sorted(range(len(costs)), key=lambda i: (costs[i], -accs[i]))
    front, best = [], -math.inf
    for i in idx:
        if accs[i] > best:
            front.append(i)
            best = accs[i]
    return front


def training_curves(histories: dict[str, list[dict[str, Any]]]) -> str:
    """Training loss and accuracy (validation solid, training dashed) per epoch, one line per model."""
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.4))
    for (name, hist), c in zip(histories.items(), colors(len(histories)), strict=True):
        ep = [r["epoch"] for r in hist]
        ax_loss.plot(ep, [r["train"]["loss"] for r in hist], "o-", color=c, label=name, ms=3)
        val = [r.get("val", r.get("test", {})).get("acc") for r in hist]
        ax_acc.plot(ep, val, "o-", color=c, label=f"{name} (val)", ms=3)
        ax_acc.plot(ep, [r["train"].get("acc") for r in hist], "--", color=c, alpha=0.6, lw=1)
    ax_loss.set(title="training loss (total)", xlabel="epoch", ylabel="loss")
    ax_acc.set(title="accuracy — validation (solid), training (dashed)", xlabel="epoch", ylabel="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.xaxis.get_major_locator().set_params(integer=True)
    ax_acc.legend(loc="best")
    fig.tight_layout()
    return to_data_uri(fig)


def loss_parts(histories: dict[str, list[dict[str, Any]]]) -> str:
    """One panel per model: every weighted loss part (``ce``, ``kd`` ...) and the total, per epoch."""
    n = len(histories)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for ax, (name, hist) in zip(axes.flat, histories.items(), strict=False):
        ep = [r["epoch"] for r in hist]
        parts = [k for k in hist[0]["train"] if k != "acc"] if hist else []
        for part, c in zip(parts, colors(len(parts)), strict=True):
            style = "k-" if part == "loss" else "-"
            kw = {} if part == "loss" else {"color": c}
            ax.plot(ep, [r["train"].get(part) for r in hist], style, marker="o", ms=3, label=part, **kw)
        ax.set(title=name, xlabel="epoch")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(loc="best")
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.tight_layout()
    return to_data_uri(fig)


def pareto_plot(points: list[dict[str, Any]], xlabel: str, log_x: bool = True) -> str:
    """Accuracy against a cost (``x``) for every point; the Pareto front (cheapest for its accuracy) is joined
    by a step line and ringed. A point: ``{"name", "x", "y", "kind": teacher|student|trial}``."""
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    pts = [p for p in points if p.get("x") is not None and p.get("y") is not None]
    front = [pts[i] for i in pareto_front([p["x"] for p in pts], [p["y"] for p in pts])]
    trials = [p for p in pts if p["kind"] == "trial"]
    if trials:
        ax.scatter([p["x"] for p in trials], [p["y"] for p in trials], s=14, c="#9aa5b1", label="sweep trials")
    models = [p for p in pts if p["kind"] == "student"]
    for p, c in zip(models, colors(len(models)), strict=True):
        ax.scatter(p["x"], p["y"], s=36, color=c, label=p["name"], zorder=3)
    for p in (p for p in pts if p["kind"] == "teacher"):
        ax.scatter(p["x"], p["y"], s=90, marker="*", color=TEACHER_COLOR, label=p["name"], zorder=3)
    if front:
        xs, ys = [p["x"] for p in front], [p["y"] for p in front]
        ax.step(xs, ys, where="post", color="#d62728", lw=1.2, alpha=0.8, label="Pareto front")
        ax.scatter(xs, ys, s=120, facecolors="none", edgecolors="#d62728", lw=1.2, zorder=4)
    xs_all = [p["x"] for p in pts]
    if log_x and xs_all and min(xs_all) > 0 and max(xs_all) / min(xs_all) > 20:  # log only over a wide range
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.6g}"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set(xlabel=xlabel, ylabel="test accuracy", title=f"accuracy vs {xlabel.split(' (')[0]}")
    labels = ax.get_legend_handles_labels()[1]
    if len(labels) <= 12:
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return to_data_uri(fig)


def per_class_accuracy(classes: Sequence[str], accs: dict[str, np.ndarray]) -> str:
    """Grouped bars: accuracy of every model on every class."""
    k, n = len(classes), len(accs)
    fig, ax = plt.subplots(figsize=(min(14, max(6, 0.5 * k * max(1, n / 2))), 3.4))
    width = 0.8 / max(1, n)
    x = np.arange(k)
    for i, ((name, a), c) in enumerate(zip(accs.items(), colors(n), strict=True)):
        ax.bar(x + (i - (n - 1) / 2) * width, a, width, label=name, color=TEACHER_COLOR if i == 0 else c)
    ax.set_xticks(x, [str(c) for c in classes], rotation=30 if k > 6 else 0, ha="right" if k > 6 else "center")
    ax.set(ylim=(0, 1.02), ylabel="accuracy", title="per-class test accuracy")
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.tight_layout()
    return to_data_uri(fig)


def confusion_matrices(classes: Sequence[str], matrices: dict[str, np.ndarray]) -> str:
    """Row-normalised confusion matrices (rows: true class, columns: predicted), one panel per model."""
    n, k = len(matrices), len(classes)
    cols = min(3, n)
    rows = math.ceil(n / cols)
    side = min(4.2, max(2.6, 0.32 * k + 1.2))
    fig, axes = plt.subplots(rows, cols, figsize=(side * cols, side * rows), squeeze=False)
    for ax, (name, m) in zip(axes.flat, matrices.items(), strict=False):
        norm = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        ax.grid(False)
        if k <= 12:
            for i in range(k):
                for j in range(k):
                    ax.text(
                        j,
                        i,
                        int(m[i, j]),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if norm[i, j] > 0.5 else "black",
                    )
        ticks = range(k)
        labels = [str(c)[:8] for c in classes] if k <= 20 else []
        ax.set_xticks(list(ticks) if labels else [], labels, rotation=90, fontsize=7)
        ax.set_yticks(list(ticks) if labels else [], labels, fontsize=7)
        ax.set(title=name, xlabel="predicted", ylabel="true")
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.tight_layout()
    return to_data_uri(fig)


def agreement_matrix(names: Sequence[str], m: np.ndarray) -> str:
    """Pairwise top-1 agreement between models (share of test images with the same predicted class)."""
    n = len(names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * n, 0.8 + 0.65 * n))
    lo = min(0.5, float(m.min()))
    ax.imshow(m, cmap="Greens", vmin=lo, vmax=1)
    ax.grid(False)
    for i in range(n):
        for j in range(n):
            dark = (m[i, j] - lo) / max(1e-9, 1 - lo) > 0.6
            ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=8, color="white" if dark else "black")
    ax.set_xticks(range(n), names, rotation=45, ha="right")
    ax.set_yticks(range(n), names)
    ax.set_title("top-1 agreement")
    fig.tight_layout()
    return to_data_uri(fig)


def reliability_bins(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> dict[str, np.ndarray]:
    """Per equal-width confidence bin: mean confidence, accuracy and count (empty bins give NaN)."""
    conf, pred = probs.max(axis=1), probs.argmax(axis=1)
    correct = (pred == labels).astype(float)
    which = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)  # (lo, hi] bins, as in the ECE
    count = np.bincount(which, minlength=bins).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(which, conf, minlength=bins) / count
        acc = np.bincount(which, correct, minlength=bins) / count
    return {"confidence": mean_conf, "accuracy": acc, "count": count, "edges": np.linspace(0, 1, bins + 1)}


def reliability_diagram(curves: dict[str, dict[str, np.ndarray]], eces: dict[str, float | None]) -> str:
    """Accuracy against confidence per bin for every model; the diagonal is perfect calibration."""
    fig, (ax, ax_hist) = plt.subplots(1, 2, figsize=(10, 3.8), gridspec_kw={"width_ratios": [3, 2]})
    ax.plot([0, 1], [0, 1], ":", color="grey", lw=1, label="perfectly calibrated")
    for i, ((name, r), c) in enumerate(zip(curves.items(), colors(len(curves)), strict=True)):
        ok = r["count"] > 0
        c = TEACHER_COLOR if i == 0 else c
        ece = eces.get(name)
        label = f"{name} (ECE {ece:.3f})" if ece is not None else name
        ax.plot(r["confidence"][ok], r["accuracy"][ok], "o-", color=c, ms=3, label=label)
        centers = (r["edges"][:-1] + r["edges"][1:]) / 2
        ax_hist.plot(centers, r["count"] / max(1.0, r["count"].sum()), "-", color=c, label=name)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (max softmax)", ylabel="accuracy", title="reliability")
    ax.legend(loc="upper left")
    ax_hist.set(xlim=(0, 1), xlabel="confidence", ylabel="share of test images", title="confidence histogram")
    fig.tight_layout()
    return to_data_uri(fig)


def temperature_example(
    classes: Sequence[str], logits: np.ndarray, temperatures: Sequence[float], label: int, title: str
) -> str:
    """The teacher's softmax over the classes for one image at T = 1 and at each training temperature."""
    k = len(classes)
    order = np.arange(k) if k <= 20 else np.argsort(-logits)[:15]
    temps = [1.0, *(t for t in temperatures if t != 1.0)]
    fig, ax = plt.subplots(figsize=(min(12, max(5.5, 0.55 * len(order) * len(temps) / 1.5)), 3.2))
    width = 0.8 / len(temps)
    x = np.arange(len(order))
    for i, (t, c) in enumerate(zip(temps, ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b"], strict=False)):
        z = logits / t
        p = np.exp(z - z.max())
        p /= p.sum()
        ax.bar(x + (i - (len(temps) - 1) / 2) * width, p[order], width, color=c, label=f"T = {t:g}")
    names = [str(classes[j]) + (" ✓" if j == label else "") for j in order]
    ax.set_xticks(x, names, rotation=30 if len(order) > 6 else 0, ha="right" if len(order) > 6 else "center")
    ax.set(ylabel="probability", ylim=(0, 1), title=title)
    ax.legend()
    fig.tight_layout()
    return to_data_uri(fig)


def _grid(n: int, panel: tuple[float, float], extra_w: float = 0.0) -> tuple[plt.Figure, np.ndarray]:
    cols = min(8, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(
        rows, cols, figsize=(panel[0] * cols + extra_w, panel[1] * rows + 0.3), squeeze=False, layout="constrained"
    )
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    return fig, axes


def spectrogram_grid(db: np.ndarray, titles: Sequence[str], hop_s: float, db_range: tuple[float, float]) -> str:
    """Log-mel spectrograms ``db`` ``(n, bands, frames)`` in dBFS, one panel each (low bands at the bottom, time in
    seconds with frame ``i`` centred at ``i * hop_s``), on one colour scale ``db_range`` with a shared colour bar."""
    n, bands, frames = db.shape
    fig, axes = _grid(n, (2.0, 1.45), extra_w=0.8)
    extent = (-hop_s / 2, (frames - 0.5) * hop_s, -0.5, bands - 0.5)
    im = None
    for i, (ax, title) in enumerate(zip(axes.flat, titles, strict=False)):
        im = ax.imshow(
            db[i], origin="lower", aspect="auto", extent=extent, cmap="magma", vmin=db_range[0], vmax=db_range[1]
        )
        ax.grid(False)
        ax.set_title(title, fontsize=8)
        ax.tick_params(labelsize=7)
        if i % axes.shape[1] == 0:
            ax.set_ylabel("mel band", fontsize=7)
        if i + axes.shape[1] >= n:
            ax.set_xlabel("time (s)", fontsize=7)
    if im is not None:
        fig.colorbar(im, ax=axes.ravel().tolist(), label="dBFS", shrink=0.9)
    return to_data_uri(fig)


def image_grid(images: np.ndarray, titles: Sequence[str]) -> str:
    """uint8 images ``(n, C, H, W)`` as stored, one panel each: grey for one channel, RGB for three (else the first)."""
    n, c, h, w = images.shape
    side = 1.3 if max(h, w) <= 64 else 1.8
    fig, axes = _grid(n, (side * min(2.0, max(0.5, w / h)), side + 0.2))
    for ax, img, title in zip(axes.flat, images, titles, strict=False):
        if c == 3:
            ax.imshow(np.transpose(img, (1, 2, 0)), interpolation="nearest")
        else:
            ax.imshow(img[0], cmap="gray", vmin=0, vmax=255, interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(title, fontsize=8)
    return to_data_uri(fig)

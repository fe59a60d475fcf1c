"""Every figure jumpray draws, and the one way it writes them (matplotlib, Agg backend).

Figures of the training run (selection curves), of the clean report (label scores, noise
matrix, gallery), and the helpers the tune and bench reports draw with. Each PNG is written
atomically (:func:`save_figure`), so a half-written figure never stands under its real name.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jumpray.files import atomic_path

__all__ = [
    "pyplot",
    "save_figure",
    "plot_selection_curves",
    "plot_label_scores",
    "plot_noise_matrix",
    "plot_gallery",
    "draw_ratio_spreads",
]

CURVES = (
    ("selected_fraction", "selected fraction"),
    ("precision", "selection precision"),
    ("recall", "selection recall"),
    ("test_accuracy", "test accuracy"),
)


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display needed), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | Path, **savefig: Any) -> Path:
    """Write ``fig`` as a PNG to ``path`` atomically and close it; returns the path."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", **savefig)
    pyplot().close(fig)
    return Path(path)


def plot_selection_curves(
    history: Sequence[dict[str, float]],
    path: str | Path,
    *,
    title: str = "training: selection over epochs",
) -> Path | None:
    """Per-epoch selected fraction, selection precision / recall and test accuracy (those
    present in ``history``); None when there is no history.

    Args:
        history: one metrics dict per epoch, in epoch order.
        path: the PNG to write.
        title: the figure title (method, data).
    """
    if not history:
        return None
    from matplotlib.ticker import MaxNLocator

    plt = pyplot()
    epochs = [int(h.get("epoch", i)) + 1 for i, h in enumerate(history)]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    for key, label in CURVES:
        values = [h.get(key) for h in history]
        if any(v is not None for v in values):
            ax.plot(epochs, [math.nan if v is None else v for v in values], marker="o", label=label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylim(0.0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    ax.set_title(title)
    fig.tight_layout()
    return save_figure(fig, path)


def _names(class_names: Sequence[str], num_classes: int) -> list[str]:
    return (
        list(class_names)
        if len(class_names) == num_classes
        else [str(c) for c in range(num_classes)]
    )


def plot_label_scores(hist: dict[str, Any], path: str | Path, *, threshold: float | None) -> Path:
    """Label-score histograms (clean vs wrong when known) with the threshold line (if one)."""
    plt = pyplot()
    edges = np.asarray(hist["edges"])
    centers, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    if "clean" in hist:
        ax.bar(
            centers,
            hist["clean"],
            width=width,
            alpha=0.6,
            label="given label correct",
            color="tab:blue",
        )
        ax.bar(
            centers,
            hist["wrong"],
            width=width,
            alpha=0.6,
            label="given label wrong",
            color="tab:red",
        )
    else:
        ax.bar(centers, hist["all"], width=width, alpha=0.8, label="all samples", color="tab:gray")
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:g}")
    if max(hist["all"] or [0]) > 0:
        ax.set_yscale("log")
    ax.set_xlabel("label_score (high = given label probably right)")
    ax.set_ylabel("samples (log scale)")
    ax.set_xlim(0.0, 1.0)
    ax.legend(loc="upper center")
    ax.set_title("label scores")
    fig.tight_layout()
    return save_figure(fig, path)


def _matrix(ax, matrix: np.ndarray, names: list[str], title: str, ylabel: str) -> None:
    c = matrix.shape[0]
    ax.imshow(matrix, vmin=0.0, vmax=1.0, cmap="Blues")
    ax.set_xticks(range(c), names, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(c), names, fontsize=7)
    ax.set_xlabel("given label")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    if c <= 20:
        for i in range(c):
            for j in range(c):
                v = matrix[i, j]
                if v >= 0.005:
                    ax.text(
                        j,
                        i,
                        f"{v:.2f}",
                        ha="center",
                        va="center",
                        fontsize=6,
                        color="white" if v > 0.5 else "black",
                    )


def plot_noise_matrix(
    estimated: Sequence[Sequence[float]],
    path: str | Path,
    *,
    class_names: Sequence[str] = (),
    true: Sequence[Sequence[float]] | None = None,
    method: str = "confident_samples",
) -> Path:
    """The estimated noise matrix, and the true one beside it when known.

    ``method``: ``confident_learning`` (rows = estimated true class) or ``confident_samples``
    (rows = predicted class, over confidently predicted samples).
    """
    plt = pyplot()
    est = np.asarray(estimated, dtype=np.float64)
    names = _names(class_names, est.shape[0])
    panels = 2 if true is not None else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 5.0), dpi=100, squeeze=False)
    if method == "confident_learning":
        title, ylabel = "estimated (confident learning): P(given | true class)", "true class"
    else:
        title, ylabel = "estimated: P(given | predicted class)", "predicted class"
    _matrix(axes[0][0], est, names, title, ylabel)
    if true is not None:
        _matrix(axes[0][1], np.asarray(true), names, "true: P(given | clean class)", "clean class")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_gallery(
    rows: Sequence[dict[str, Any]],
    images: Sequence[np.ndarray | None],
    path: str | Path,
    *,
    class_names: Sequence[str] = (),
    num_classes: int = 0,
    columns: int = 6,
) -> Path | None:
    """A grid of the most suspicious samples: image, given and predicted class, label score."""
    if not rows:
        return None
    plt = pyplot()
    names = _names(
        class_names,
        max(num_classes, 1 + max(max(r["given_label"], r["predicted_label"]) for r in rows)),
    )
    n = len(rows)
    cols = min(columns, n)
    lines = math.ceil(n / cols)
    height = 2.6 * lines + 0.9
    fig, axes = plt.subplots(lines, cols, figsize=(2.0 * cols, height), dpi=100, squeeze=False)
    # Fixed margins, not a constrained layout: solving one over 36 titled axes took about 2 s
    # of every clean job's report. The top inch holds the title and the first row's labels.
    fig.subplots_adjust(
        left=0.02, right=0.98, bottom=0.01, top=1 - 1.0 / height, wspace=0.1, hspace=0.35
    )
    for ax in axes.flat:
        ax.axis("off")
    for ax, row, image in zip(axes.flat, rows, images, strict=False):
        if image is not None:
            img = np.asarray(image)
            if img.shape[0] == 1:
                ax.imshow(img[0], cmap="gray", vmin=0, vmax=255)
            else:
                ax.imshow(np.transpose(img[:3], (1, 2, 0)))
        # A text, not an axes title: matplotlib re-places every title against its axes'
        # bounding box when drawing (0.7 of the 1.6 s that 36 thumbnails took).
        ax.text(
            0.5,
            1.03,
            f"given: {names[row['given_label']]}\npred: {names[row['predicted_label']]}\n"
            f"score {row['label_score']:.3g}",
            transform=ax.transAxes,
            ha="center",
            va="bottom",
            fontsize=8,
        )
    fig.suptitle(
        "most suspicious labels (lowest label_score first)", fontsize=11, y=1 - 0.12 / height
    )
    return save_figure(fig, path)


def draw_ratio_spreads(
    ax: Any,
    names: Sequence[str],
    spreads: Sequence[dict[str, float] | None],
    *,
    title: str,
    lines: Sequence[float] = (1.0,),
    points: Sequence[Sequence[float]] | None = None,
) -> None:
    """Ratios as bars at their median with a min-max error bar, and dashed goal lines.

    Args:
        ax: the matplotlib axes to draw on.
        names: one label per bar.
        spreads: per bar ``{"median", "min", "max"}`` (None: no bar).
        title: the axes title.
        lines: horizontal reference lines (goal lines, 1.0 = parity).
        points: per bar, the single measurements behind it, drawn as dots.
    """
    xs = range(len(names))
    med = [s["median"] if s else 0.0 for s in spreads]
    low = [s["median"] - s["min"] if s else 0.0 for s in spreads]
    high = [s["max"] - s["median"] if s else 0.0 for s in spreads]
    ax.bar(xs, med, 0.6, yerr=[low, high], capsize=6, color="tab:blue", alpha=0.8)
    for x, values in zip(xs, points or [[] for _ in names], strict=True):
        ax.plot([x] * len(values), values, "o", color="black", markersize=3, alpha=0.6)
    for x, s in zip(xs, spreads, strict=True):
        if s:
            ax.annotate(f"{s['median']:.2f}", (x, s["max"]), ha="center", va="bottom", fontsize=8)
    for y in lines:
        ax.axhline(y, color="gray", linestyle="-" if y == 1.0 else "--", linewidth=0.8)
    ax.set_xticks(list(xs), list(names))
    ax.set_title(title)

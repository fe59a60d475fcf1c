"""A sweep's outputs from its trial records: trials.csv, best.yaml, the PNGs, the numbers.

Records are :class:`~jumpray.tune.tracking.SweepTracker`'s: ``{"trial_id", "params",
"metrics", "status"}`` with ``metrics`` the last reported epoch's. A trial that ASHA stopped
early has ``status == "stopped_early"`` and fewer ``epochs_done`` than the budget; its metric is
from that earlier epoch, so the best trial is chosen among trials that ran the whole budget
(falling back to all trials only when none did).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from jumpray.config import RunConfig, apply_overrides
from jumpray.files import atomic_path, write_text
from jumpray.plots import pyplot, save_figure
from jumpray.tune.space import Dimension, trial_config
from jumpray.tune.tracking import FAILED, FINISHED, RUNNING, STOPPED

__all__ = [
    "best_record",
    "best_config",
    "write_best_yaml",
    "write_trials_csv",
    "plot_sweep",
    "sweep_numbers",
    "rank_correlation",
    "format_value",
    "BEST_FILE",
    "TRIALS_CSV",
]

BEST_FILE = "best.yaml"
TRIALS_CSV = "trials.csv"


def _value(record: dict[str, Any], metric: str) -> float | None:
    v = record.get("metrics", {}).get(metric)
    return float(v) if v is not None and math.isfinite(float(v)) else None


def best_record(
    records: Sequence[dict[str, Any]], *, metric: str, mode: str
) -> dict[str, Any] | None:
    """The best trial that ran the whole budget (else the best of all), or None."""
    for statuses in ((FINISHED,), (FINISHED, STOPPED, RUNNING)):
        scored = [
            r for r in records if r.get("status") in statuses and _value(r, metric) is not None
        ]
        if scored:
            pick = max if mode == "max" else min
            return pick(scored, key=lambda r: _value(r, metric))
    return None


def best_config(base: RunConfig, record: dict[str, Any]) -> RunConfig:
    """The best trial's config for a full run: its values on ``base``, ``train.epochs`` the
    base's (``tune.epochs`` is only the trials' budget)."""
    cfg = trial_config(base, record["params"])
    if base.tune.epochs is not None:
        cfg = apply_overrides(cfg, {"train": {"epochs": base.train.epochs}})
    return cfg


def write_best_yaml(path: Path, cfg: RunConfig, record: dict[str, Any], *, metric: str) -> Path:
    """``best.yaml``: the whole resolved config, usable as ``--config`` of train and clean."""
    value = _value(record, metric)
    header = (
        f"# jumpray tune: best trial {record['trial_id']}, {metric} = {value:.4f} after "
        f"{int(record['metrics'].get('epochs_done', 0))} epochs\n"
        f"# searched: {', '.join(f'{k}={format_value(v)}' for k, v in sorted(record['params'].items()))}\n"
        "# use: jumpray clean --shards DIR --out DIR --config best.yaml\n"
    )
    write_text(path, header + yaml.safe_dump(cfg.model_dump(), sort_keys=False))
    return path


def write_trials_csv(path: Path, records: Sequence[dict[str, Any]], *, metric: str) -> Path:
    """One row per trial: id, status, stopped_early, its searched values, its last metrics."""
    params = sorted({k for r in records for k in r.get("params", {})})
    metrics = sorted({k for r in records for k in r.get("metrics", {})} - {metric})
    metrics = ([metric] if any(metric in r.get("metrics", {}) for r in records) else []) + metrics
    header = ["trial_id", "status", "stopped_early", *params, *metrics]
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for r in records:
            row = [r["trial_id"], r.get("status", ""), r.get("status") == STOPPED]
            row += [r["params"].get(k, "") for k in params]
            row += [r["metrics"].get(k, "") for k in metrics]
            writer.writerow(row)
    return path


def rank_correlation(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rho: Pearson correlation of the ranks (ties share their mean rank).

    Returns:
        rho in [-1, 1]; NaN with fewer than 3 pairs or a constant input.
    """
    a, b = np.asarray(x, float), np.asarray(y, float)
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    ra, rb = _ranks(a), _ranks(b)
    return float(np.corrcoef(ra, rb)[0, 1])


def _ranks(v: np.ndarray) -> np.ndarray:
    order = np.argsort(v, kind="stable")
    ranks = np.empty(len(v))
    ranks[order] = np.arange(len(v), dtype=float)
    for value in np.unique(v):
        tied = v == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def sweep_numbers(
    records: Sequence[dict[str, Any]], *, metric: str, reference: str = "test_accuracy"
) -> dict[str, Any]:
    """Counts, the metric's spread over trials that ran the budget, and its rank correlation
    with ``reference`` (clean test accuracy) when the trials report it."""
    statuses = [r.get("status") for r in records]
    full = [_value(r, metric) for r in records if r.get("status") == FINISHED]
    full = [v for v in full if v is not None]
    out: dict[str, Any] = {
        "num_trials": len(records),
        "num_finished": statuses.count(FINISHED),
        "num_stopped_early": statuses.count(STOPPED),
        "num_failed": statuses.count(FAILED),
        "num_unfinished": statuses.count(RUNNING) + statuses.count(None),
    }
    if full:
        out |= {
            f"{metric}_max": max(full),
            f"{metric}_median": float(np.median(full)),
            f"{metric}_min": min(full),
            f"{metric}_spread": max(full) - min(full),
        }
    pairs = [
        (_value(r, metric), _value(r, reference)) for r in records if r.get("status") == FINISHED
    ]
    pairs = [(m, t) for m, t in pairs if m is not None and t is not None]
    if len(pairs) >= 3 and metric != reference:
        out[f"rank_correlation_{reference}"] = rank_correlation(*zip(*pairs, strict=True))
        out["rank_correlation_pairs"] = len(pairs)
    return out


def plot_sweep(
    out: Path,
    records: Sequence[dict[str, Any]],
    space: dict[str, Dimension],
    *,
    metric: str,
) -> list[Path]:
    """``tune_<key>.png`` (the metric against each searched key) and ``tune_interaction.png``
    (mean metric per J x K cell) when both are searched."""
    plt = pyplot()
    paths = []
    scored = [r for r in records if _value(r, metric) is not None]
    for key, dim in space.items():
        fig, ax = plt.subplots(figsize=(5.2, 3.6), dpi=100)
        for status, marker, fill in ((FINISHED, "o", True), (STOPPED, "o", False)):
            pts = [
                (float(r["params"][key]), _value(r, metric))
                for r in scored
                if r.get("status") == status and key in r["params"]
            ]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.scatter(
                    xs,
                    ys,
                    marker=marker,
                    facecolors="C0" if fill else "none",
                    edgecolors="C0",
                    label="ran the budget" if fill else "stopped early (ASHA)",
                )
        if dim.kind == "loguniform" or key == "model.semantic_dim":
            ax.set_xscale("log", base=2 if key == "model.semantic_dim" else 10)
        if dim.discrete:
            ax.set_xticks([float(v) for v in dim.values], [format_value(v) for v in dim.values])
        ax.set_xlabel(key)
        ax.set_ylabel(f"{metric} (last epoch)")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best", fontsize=8)
        fig.tight_layout()
        paths.append(save_figure(fig, out / f"tune_{key.replace('.', '_')}.png"))
    if "jump.interval" in space and "model.semantic_dim" in space:
        paths.append(_interaction(out / "tune_interaction.png", scored, space, metric=metric))
    return paths


def _interaction(
    path: Path, scored: Sequence[dict[str, Any]], space: dict[str, Dimension], *, metric: str
) -> Path:
    plt = pyplot()
    js = sorted({int(r["params"]["jump.interval"]) for r in scored} | _ints(space, "jump.interval"))
    ks = sorted(
        {int(r["params"]["model.semantic_dim"]) for r in scored}
        | _ints(space, "model.semantic_dim")
    )
    total = np.zeros((len(js), len(ks)))
    count = np.zeros_like(total)
    for r in scored:
        if r.get("status") == FINISHED:
            i = js.index(int(r["params"]["jump.interval"]))
            j = ks.index(int(r["params"]["model.semantic_dim"]))
            total[i, j] += _value(r, metric)
            count[i, j] += 1
    grid = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    fig, ax = plt.subplots(figsize=(5.2, 3.6), dpi=100)
    im = ax.imshow(grid, cmap="viridis", aspect="auto", origin="lower")
    for i in range(len(js)):
        for j in range(len(ks)):
            if count[i, j]:
                label = f"{grid[i, j]:.3f}\nn={int(count[i, j])}"
                ax.text(j, i, label, ha="center", va="center", fontsize=7, color="w")
    ax.set_xticks(range(len(ks)), [str(k) for k in ks])
    ax.set_yticks(range(len(js)), [str(j) for j in js])
    ax.set_xlabel("model.semantic_dim (K)")
    ax.set_ylabel("jump.interval (J)")
    ax.set_title(f"mean {metric}, trials that ran the budget", fontsize=9)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    return save_figure(fig, path)


def _ints(space: dict[str, Dimension], key: str) -> set[int]:
    dim = space[key]
    return {int(v) for v in dim.values} if dim.discrete else set()


def format_value(v: Any) -> str:
    """A searched value for a label: floats to 3 significant digits."""
    return f"{v:.3g}" if isinstance(v, float) else str(v)

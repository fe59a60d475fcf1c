"""Where the decision's probabilities come from (``score.source``): snapshots, training, or both.

- ``snapshots``: the scoring pass (:mod:`jumpray.score.scorer`): the last R snapshots look at every
  sample; the row's probabilities are their mean.
- ``training``: the per-sample running probabilities recorded during Jump-teaching training
  (:class:`jumpray.core.SampleHistory`, saved in the checkpoint). No forward pass: the rows come
  from a plain read of the shards (for key, shard and the count invariant), and
  :func:`training_scores` fills the score columns from the history.
- ``auto`` (the default): ``both`` when the checkpoint holds a history and the scored shards are
  the folder it was trained on (the clean job, ``jumpray score`` on the training shards), else
  ``snapshots`` (other data, other methods, older checkpoints): :func:`resolve_source`.
- ``both``: the scoring pass, then :func:`blend_scores` averages its probabilities with the
  history's (equal weights; the top-k sets are merged, exact when C <= k).

In both cases with a history the rows also get ``train_clean_rate`` (the fraction of selection
epochs in which the sample's clean flag was set). Labels and margins are recomputed from the
probabilities the decision reads; ``label_score`` is recomputed for the ``prob`` and ``margin``
formulas (:data:`HISTORY_FORMULAS`); with ``both``, the other formulas keep the snapshots' score.
Pure numpy + torch (the history is a torch object).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from jumpray.core import SampleHistory, merge_top_k
from jumpray.storage import same_location

__all__ = [
    "SOURCES",
    "HISTORY_FORMULAS",
    "resolve_source",
    "history_columns",
    "training_scores",
    "blend_scores",
]

SOURCES = ("auto", "snapshots", "training", "both")
# Score formulas that read only the classifier's probabilities (what a history holds).
HISTORY_FORMULAS = ("prob", "margin")


def resolve_source(
    source: str, *, has_history: bool, trained_on: str | None, scored: str | Path
) -> str:
    """The source ``score.source`` names, with ``auto`` decided (module docstring).

    Args:
        source: ``score.source``.
        has_history: the checkpoint holds a per-sample training history.
        trained_on: the shard folder the checkpoint was trained on (its ``data.shards``), or
            None (a checkpoint older than this field).
        scored: the shard folder being scored.
    """
    if source != "auto":
        return source
    same = trained_on is not None and same_location(trained_on, scored)
    return "both" if has_history and same else "snapshots"


def history_columns(history: SampleHistory, idx: np.ndarray, *, k: int) -> dict[str, np.ndarray]:
    """The history of the rows ``idx``, as k-wide columns.

    Returns:
        ``prob_given`` (B,) float64, ``top_labels`` (B, k) int64 (-1 = empty), ``top_probs``
        (B, k) float64, ``train_clean_rate`` (B,) float64 (NaN before any selection epoch),
        ``visits`` (B,) float64.

    Raises:
        ValueError: a row without any recorded visit (trained on other data?), naming its idx.
    """
    ids = torch.from_numpy(np.array(idx, dtype=np.int64))  # a writable copy
    if ids.numel() and int(ids.max()) >= history.num_samples:
        raise ValueError(
            f"sample idx {int(ids.max())} is outside the training history (N = "
            f"{history.num_samples}): score.source=training needs the training shards"
        )
    h = history.lookup(ids)
    missing = (h["visits"] <= 0).nonzero()
    if missing.numel():
        raise ValueError(
            f"sample idx {int(ids[missing[0, 0]])} has no training history: score.source "
            "needs the shards the checkpoint was trained on (or score.source=snapshots)"
        )
    labels, probs = h["top_labels"].numpy(), h["top_probs"].double().numpy()
    pad = k - labels.shape[1]
    if pad > 0:
        labels = np.pad(labels, ((0, 0), (0, pad)), constant_values=-1)
        probs = np.pad(probs, ((0, 0), (0, pad)))
    return {
        "prob_given": h["prob_given"].double().numpy(),
        "top_labels": labels[:, :k],
        "top_probs": probs[:, :k],
        "train_clean_rate": h["clean_rate"].double().numpy(),
        "visits": h["visits"].double().numpy(),
    }


def _derived(
    given: np.ndarray, prob_given: np.ndarray, labels: np.ndarray, probs: np.ndarray
) -> dict[str, np.ndarray]:
    """predicted_label, pred_prob and margin from p(given) and the top-k columns."""
    other = np.where((labels == given[:, None]) | (labels < 0), -np.inf, probs)
    best_other = np.maximum(other.max(axis=1, initial=-np.inf), 0.0)
    return {
        "prob_given": prob_given,
        "top_labels": labels,
        "top_probs": probs.astype(np.float32),
        "predicted_label": labels[:, 0].astype(np.int64),
        "pred_prob": probs[:, 0].astype(np.float64),
        "margin": prob_given - best_other,
    }


def _formula_score(formula: str, cols: Mapping[str, np.ndarray]) -> np.ndarray:
    if formula == "margin":
        return np.clip(0.5 * (1.0 + cols["margin"]), 0.0, 1.0)
    return np.clip(cols["prob_given"], 0.0, 1.0)


def training_scores(
    batch: Mapping[str, np.ndarray], hist: Mapping[str, np.ndarray], *, formula: str
) -> dict[str, np.ndarray]:
    """Score columns of a row batch from the training history alone (``score.source=training``).

    Args:
        batch: rows with ``given_label``.
        hist: :func:`history_columns` of the same rows.
        formula: ``prob`` or ``margin`` (:data:`HISTORY_FORMULAS`), the label score.

    Returns:
        The scorer's columns (:data:`jumpray.score.scorer.SCORE_COLUMNS`; the semantic-head ones
        NaN, ``votes`` -1) plus ``train_clean_rate``.
    """
    given = np.asarray(batch["given_label"], dtype=np.int64)
    cols = _derived(given, hist["prob_given"], hist["top_labels"], hist["top_probs"])
    score = _formula_score(formula, cols)
    nan = np.full(given.shape, np.nan)
    return cols | {
        "label_score": score,
        "is_label_issue": np.zeros(given.shape, bool),  # decided by the rule
        "bit_loss_mean": nan,
        "bit_loss_var": nan,
        "semantic_prob": nan,
        "votes": np.full(given.shape, -1, np.int64),
        "train_clean_rate": hist["train_clean_rate"],
    }


def blend_scores(
    batch: Mapping[str, np.ndarray], hist: Mapping[str, np.ndarray], *, formula: str
) -> dict[str, np.ndarray]:
    """The scored batch with its probabilities averaged with the history's (``both``).

    Args:
        batch: the scorer's output rows (``prob_given``, ``top_labels``, ``top_probs``, ...).
        hist: :func:`history_columns` of the same rows.
        formula: the score formula; ``prob`` and ``margin`` are recomputed from the average.

    Returns:
        ``batch`` with ``prob_given``, ``top_labels``, ``top_probs``, ``predicted_label``,
        ``pred_prob``, ``margin`` (and ``label_score`` for those formulas) replaced, and
        ``train_clean_rate`` added.
    """
    given = np.asarray(batch["given_label"], dtype=np.int64)
    # A copy: Arrow hands read-only buffers, which torch.from_numpy warns about.
    snap_labels = np.array(batch["top_labels"], dtype=np.int64)
    k = snap_labels.shape[1]
    labels, probs = merge_top_k(
        torch.from_numpy(snap_labels),
        torch.from_numpy(0.5 * np.asarray(batch["top_probs"], dtype=np.float64)),
        torch.from_numpy(np.array(hist["top_labels"], dtype=np.int64)),
        torch.from_numpy(0.5 * np.asarray(hist["top_probs"], dtype=np.float64)),
        k,
    )
    p_given = 0.5 * (np.asarray(batch["prob_given"], np.float64) + hist["prob_given"])
    cols = _derived(given, p_given, labels.numpy(), probs.numpy())
    out = dict(batch) | cols | {"train_clean_rate": hist["train_clean_rate"]}
    if formula in HISTORY_FORMULAS:
        out["label_score"] = _formula_score(formula, cols)
    return out

"""Accuracy and the quality of a clean/noisy split against known clean labels.

Inputs may be numpy arrays or torch tensors (any device); outputs are plain Python numbers, ready
for a metrics logger.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["accuracy", "selection_metrics", "detection_metrics"]

ArrayLike = Any  # np.ndarray | torch.Tensor | sequence


def _np(x: ArrayLike) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def _prf(hits: int, num_predicted: int, num_actual: int) -> tuple[float, float, float]:
    precision = hits / num_predicted if num_predicted else 0.0
    recall = hits / num_actual if num_actual else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def accuracy(pred: ArrayLike, target: ArrayLike) -> float:
    """Fraction of predictions equal to the target.

    Args:
        pred: (N,) predicted labels, or (N, C) scores (argmax is taken).
        target: (N,) labels.

    Returns:
        Accuracy in [0, 1]; 0.0 for N = 0.
    """
    p, t = _np(pred), _np(target)
    if p.ndim == 2:
        p = p.argmax(axis=1)
    if p.shape != t.shape:
        raise ValueError(f"pred {p.shape} and target {t.shape} must match")
    return float((p == t).mean()) if t.size else 0.0


def _check_same_length(*arrays: np.ndarray) -> None:
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1 or next(iter(shapes)) != (arrays[0].shape[0],):
        raise ValueError(f"inputs must be 1-D of equal length, got shapes {sorted(shapes)}")


def selection_metrics(
    selected: ArrayLike, given_label: ArrayLike, clean_label: ArrayLike
) -> dict[str, float | int]:
    """How well a selected ("clean") set matches the samples whose given label is correct.

    Args:
        selected: (N,) bool, True = kept as clean.
        given_label: (N,) int.
        clean_label: (N,) int true labels.

    Returns:
        ``precision`` (fraction of selected samples whose given label is correct; 0.0 when nothing
        is selected, no error), ``recall`` (fraction of correctly labelled samples that were
        selected; 0.0 when none is correct), ``f1`` (0.0 when both are 0), ``selected_fraction``,
        ``num_selected``.
    """
    sel = _np(selected).astype(bool)
    given, clean = _np(given_label), _np(clean_label)
    _check_same_length(sel, given, clean)
    correct = given == clean
    num_selected = int(sel.sum())
    precision, recall, f1 = _prf(int((sel & correct).sum()), num_selected, int(correct.sum()))
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "selected_fraction": num_selected / sel.size if sel.size else 0.0,
        "num_selected": num_selected,
    }


def detection_metrics(
    is_issue: ArrayLike, given_label: ArrayLike, clean_label: ArrayLike
) -> dict[str, float | int]:
    """How well flagged label issues match the truly wrong labels (given != clean).

    Args:
        is_issue: (N,) bool, True = flagged as a wrong label.
        given_label: (N,) int.
        clean_label: (N,) int true labels.

    Returns:
        ``precision`` (fraction of flagged samples that are truly wrong; 0.0 when nothing is
        flagged), ``recall`` (fraction of wrong labels flagged; 0.0 when no label is wrong),
        ``f1``, ``num_flagged``, ``flagged_fraction``, ``num_noisy`` (true wrong labels) and
        ``noise_rate`` (their fraction).
    """
    flagged = _np(is_issue).astype(bool)
    given, clean = _np(given_label), _np(clean_label)
    _check_same_length(flagged, given, clean)
    noisy = given != clean
    num_flagged, num_noisy = int(flagged.sum()), int(noisy.sum())
    precision, recall, f1 = _prf(int((flagged & noisy).sum()), num_flagged, num_noisy)
    n = flagged.size
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "num_flagged": num_flagged,
        "flagged_fraction": num_flagged / n if n else 0.0,
        "num_noisy": num_noisy,
        "noise_rate": num_noisy / n if n else 0.0,
    }

"""Streaming statistics of a label table: counts only, never the rows.

:class:`LabelStats` is fed the scored batches one at a time (from the Ray pipeline, or from
``labels.parquet`` read in record batches) and keeps O(C² + bins + gallery) numbers: the counts
behind ``summary.json`` (flagged, detection precision / recall / F1 when clean labels exist,
per-class flag rates), the estimated and true noise matrices, label-score histograms split by
truly clean / truly wrong, and the ``gallery_size`` most suspicious samples (the decided issues
by ``rank`` when the rows carry one, then the lowest label scores).
Pure numpy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from jumpray.score.decide import noise_matrix_counts, normalize_rows

__all__ = ["LabelStats", "GALLERY_COLUMNS"]

GALLERY_COLUMNS = ("key", "shard", "idx", "given_label", "predicted_label", "label_score")


def _prf(hits: int, flagged: int, actual: int) -> tuple[float, float, float]:
    precision = hits / flagged if flagged else 0.0
    recall = hits / actual if actual else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


class LabelStats:
    """Accumulates the summary of scored rows, batch by batch.

    Args:
        num_classes: C.
        bins: label-score histogram bins over [0, 1].
        gallery_size: how many of the lowest-scored samples to remember.
        confident_prob: only samples with ``pred_prob`` at least this enter the noise matrix.
    """

    def __init__(
        self,
        num_classes: int,
        *,
        bins: int = 20,
        gallery_size: int = 36,
        confident_prob: float = 0.8,
    ):
        c = int(num_classes)
        self.num_classes, self.bins = c, int(bins)
        self.gallery_size, self.confident_prob = int(gallery_size), float(confident_prob)
        self.num_samples = self.num_flagged = 0
        self.num_known = self.num_noisy = self.num_hits = self.num_flagged_known = 0
        self.num_pred_correct_on_noisy = 0
        self.flagged_by_class = np.zeros(c, np.int64)
        self.total_by_class = np.zeros(c, np.int64)
        self.estimated_counts = np.zeros((c, c), np.int64)
        self.true_counts = np.zeros((c, c), np.int64)
        self.hist_all = np.zeros(self.bins, np.int64)
        self.hist_clean = np.zeros(self.bins, np.int64)
        self.hist_wrong = np.zeros(self.bins, np.int64)
        self._gallery: dict[str, np.ndarray] = {}

    def _hist(self, values: np.ndarray) -> np.ndarray:
        return np.histogram(values, bins=self.bins, range=(0.0, 1.0))[0].astype(np.int64)

    def update(self, batch: Mapping[str, np.ndarray]) -> None:
        """Add one batch of scored rows (``given_label``, ``predicted_label``, ``label_score``,
        ``is_label_issue``, ``pred_prob``; ``clean_label`` >= 0 where known; the gallery also
        reads ``key``, ``shard``, ``idx``)."""
        given = np.asarray(batch["given_label"], np.int64)
        if given.size == 0:
            return
        pred = np.asarray(batch["predicted_label"], np.int64)
        score = np.asarray(batch["label_score"], np.float64)
        flagged = np.asarray(batch["is_label_issue"], bool)
        c = self.num_classes
        self.num_samples += given.size
        self.num_flagged += int(flagged.sum())
        self.total_by_class += np.bincount(given, minlength=c)
        self.flagged_by_class += np.bincount(given[flagged], minlength=c)
        confident = np.asarray(batch["pred_prob"], np.float64) >= self.confident_prob
        self.estimated_counts += noise_matrix_counts(pred, given, c, confident=confident)
        self.hist_all += self._hist(score)
        if "clean_label" in batch:
            self._update_truth(
                np.asarray(batch["clean_label"], np.int64), given, pred, score, flagged
            )
        self._update_gallery(batch, score)

    def _update_truth(self, clean, given, pred, score, flagged) -> None:
        known = clean >= 0
        if not known.any():
            return
        clean, given, pred, score, flagged = (
            a[known] for a in (clean, given, pred, score, flagged)
        )
        noisy = given != clean
        self.num_known += clean.size
        self.num_noisy += int(noisy.sum())
        self.num_hits += int((flagged & noisy).sum())
        self.num_flagged_known += int(flagged.sum())
        self.num_pred_correct_on_noisy += int((pred[noisy] == clean[noisy]).sum())
        self.true_counts += noise_matrix_counts(clean, given, self.num_classes)
        self.hist_clean += self._hist(score[~noisy])
        self.hist_wrong += self._hist(score[noisy])

    def _update_gallery(self, batch: Mapping[str, np.ndarray], score: np.ndarray) -> None:
        if self.gallery_size <= 0 or not all(k in batch for k in GALLERY_COLUMNS):
            return
        # The decided issues first, by rank (when the batch has one), then the lowest scores.
        rank = np.asarray(batch.get("rank", np.zeros(score.size)), np.float64)
        cand = {name: np.asarray(batch[name]) for name in GALLERY_COLUMNS}
        cand["_first"] = np.where(rank > 0, rank, np.inf)
        if self._gallery:
            cand = {n: np.concatenate([self._gallery[n], cand[n]]) for n in cand}
        # Stable order, ties by idx: reproducible across block orders.
        order = np.lexsort((cand["idx"], cand["label_score"], cand["_first"]))
        self._gallery = {n: v[order[: self.gallery_size]] for n, v in cand.items()}

    @property
    def has_truth(self) -> bool:
        """True when some rows carried a clean label."""
        return self.num_known > 0

    def gallery(self) -> list[dict[str, Any]]:
        """The most suspicious samples, most suspicious first (dicts of GALLERY_COLUMNS)."""
        if not self._gallery:
            return []
        n = len(self._gallery["key"])
        return [{name: _py(self._gallery[name][i]) for name in GALLERY_COLUMNS} for i in range(n)]

    def result(self) -> dict[str, Any]:
        """The summary numbers (JSON-ready): see the keys below.

        ``num_samples``, ``num_label_issues``, ``estimated_noise_rate`` (flagged fraction),
        ``estimated_noise_matrix`` (C x C, rows = predicted class, row-normalised over confident
        samples), ``noise_matrix_support`` (confident samples per row), ``flag_rate_by_class``;
        with clean labels also ``precision``, ``recall``, ``f1``, ``true_noise_rate``,
        ``true_noise_matrix`` (rows = clean class), ``predicted_label_accuracy_on_wrong``
        (how often the predicted label is the true one where the given label is wrong).
        """
        n = self.num_samples
        out: dict[str, Any] = {
            "num_samples": n,
            "num_label_issues": self.num_flagged,
            "estimated_noise_rate": self.num_flagged / n if n else 0.0,
            "estimated_noise_matrix": normalize_rows(self.estimated_counts).round(4).tolist(),
            "noise_matrix_support": self.estimated_counts.sum(axis=1).tolist(),
            "flag_rate_by_class": np.divide(
                self.flagged_by_class,
                self.total_by_class,
                out=np.zeros(self.num_classes),
                where=self.total_by_class > 0,
            )
            .round(4)
            .tolist(),
        }
        if self.has_truth:
            precision, recall, f1 = _prf(self.num_hits, self.num_flagged_known, self.num_noisy)
            out |= {
                "precision": precision,
                "recall": recall,
                "f1": f1,
                "num_true_label_issues": self.num_noisy,
                "true_noise_rate": self.num_noisy / self.num_known,
                "true_noise_matrix": normalize_rows(self.true_counts).round(4).tolist(),
                "predicted_label_accuracy_on_wrong": (
                    self.num_pred_correct_on_noisy / self.num_noisy if self.num_noisy else 0.0
                ),
            }
        return out

    def histograms(self) -> dict[str, Any]:
        """Bin edges and counts (``all``; ``clean``/``wrong`` when clean labels exist)."""
        out: dict[str, Any] = {
            "edges": np.linspace(0.0, 1.0, self.bins + 1).tolist(),
            "all": self.hist_all.tolist(),
        }
        if self.has_truth:
            out |= {"clean": self.hist_clean.tolist(), "wrong": self.hist_wrong.tolist()}
        return out


def _py(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value

"""Confident learning: per-class thresholds, the confident joint, and the label issues it implies.

Implemented from the paper (Northcutt, Jiang, Chuang, "Confident Learning: Estimating Uncertainty
in Dataset Labels", JAIR 70, 2021, sections 3.1-3.2), numpy only: no Ray, no files
(docs/architecture.md, 'Pure core, thin adapters').
Vocabulary: N samples, C classes, ``given_label`` (the possibly wrong label, the paper's noisy
label y~), ``pred_probs`` (N, C) out-of-sample predicted probabilities.

1. **Thresholds** (paper eq. 2): t_j = the mean of p_j(x) over the samples whose given label is j.
   A class with no sample gets t_j = +inf (it is never confidently predicted).
2. **Confident joint** (eq. 1): C[i][j] counts the samples with given label i whose confident
   class is j: among the classes l with p_l(x) >= t_l, the one with the largest p_l(x) (ties go
   to the lowest class index). Samples with no class above its threshold are not counted. The
   test is p_l >= t_l - :data:`THRESHOLD_EPS`, so a class whose samples all have the same
   probability still counts them (the rounding of the mean can land above the value).
3. **Calibration** (eq. 3): row i is rescaled to sum to n_i, the number of samples with given
   label i: C~[i][j] = C[i][j] / sum_j C[i][j] * n_i. A row with samples but no confident count
   puts its n_i on the diagonal (no evidence of noise). The **joint** is Q = C~ / N; the
   **noise matrix** returned here has rows = true class j and columns = given label i,
   P(given = i | true = j) = Q[i][j] / sum_i Q[i][j] (the transpose of the paper's
   Q_{y~|y*}, and the layout of ``summary.json``'s ``true_noise_matrix``).
4. **Prune counts**: n_ij = C~[i][j] rounded to integers that keep each row's total n_i
   (largest remainder, ties to the lower column); the off-diagonal total of a row is capped at
   n_i - ``min_examples_per_class`` (scaled down the same way), so no given class is emptied.
5. **Issues** (``filter_by``, :data:`FILTERS`; section 3.2 "Rank and Prune"):

   - ``prune_by_noise_rate`` (the paper's PBNR): for each off-diagonal cell (i, j), the n_ij
     samples with given label i and the largest margin p_j - p_i;
   - ``prune_by_class`` (PBC): for each class i, the sum_j!=i n_ij samples with given label i
     and the lowest self-confidence p_i;
   - ``both`` (C+NR): flagged by both of the above;
   - ``confident_joint`` (C_{y~,y*}): the off-diagonal samples of the confident joint.

   With ``exclude_predicted_given`` (default on) a sample whose argmax class is its given label is
   never an issue, whatever the filter chose; the paper's filters do not have this step.
   Ties in a ranking go to the lower ``idx``.
6. **Ranking** (:data:`RANKINGS`): ``self_confidence`` = p_given, ``normalized_margin`` =
   (p_given - max_{j != given} p_j + 1) / 2; both in [0, 1], low = suspicious.

**Top-k form.** The streaming :class:`ConfidentLearning` reads each sample as its p(given) plus
its k most probable classes and their probabilities (:class:`ProbBatch`), not the whole vector:
for C <= k this is exact. For C > k it approximates, in two places: (a) a class outside the
sample's top k is never its confident class (it could be only when its probability, at most the
k-th largest, still reaches its class threshold and no top-k class does); (b) in
``prune_by_noise_rate``, a sample can fill cell (i, j) only if j is in its top k, so a cell whose
n_ij exceeds the samples that have j in their top k is under-filled. The thresholds and
``prune_by_class`` are exact for any k (they read p_given only).

**Streaming.** :class:`ConfidentLearning` needs ``num_passes`` passes over the same batches, in
the same order or any other: pass 0 sums the thresholds (O(C) state), pass 1 counts the
confident joint (O(C^2)), and for the pruning filters pass 2 keeps, per cell, the n_ij best
candidates seen so far (O(C^2 + number of issues)). :meth:`ConfidentLearning.decide` then labels
any batch. The in-memory :func:`find_label_issues` runs the same passes over one batch.

**Against cleanlab 2.9** (``cleanlab.filter.find_label_issues``; not a dependency, AGPL): on the
same probabilities the issues agree exactly where the definitions coincide (the unit tests check
it). Differences: (i) cleanlab raises every diagonal entry of the confident joint to at least 1
before calibrating, which changes rows whose diagonal count is 0 (here such a row is calibrated
as counted); (ii) cleanlab keeps ``min_examples_per_class`` by lowering the off-diagonal counts of
a class uniformly, here they are scaled proportionally; (iii) ties in the margin ranking: cleanlab
takes the order of ``numpy.argsort``, here the lower idx wins, so the result does not depend on
the batching; (iv) cleanlab's rounding of the calibrated counts may differ by one in a cell.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "FILTERS",
    "RANKINGS",
    "THRESHOLD_EPS",
    "ProbBatch",
    "RankedIssues",
    "ConfidentLearning",
    "top_k",
    "class_thresholds",
    "confident_classes",
    "confident_joint",
    "calibrate_joint",
    "estimate_joint",
    "estimate_noise_matrix",
    "prune_counts",
    "label_quality_scores",
    "find_label_issues",
    "rank_label_issues",
    "check_inputs",
]

FILTERS = ("prune_by_noise_rate", "prune_by_class", "both", "confident_joint")
RANKINGS = ("self_confidence", "normalized_margin")
# p_l >= t_l - THRESHOLD_EPS counts as confident: the mean of equal values can round above them.
THRESHOLD_EPS = 1e-6


# ---------------------------------------------------------------------------------------------
# Inputs


@dataclass(frozen=True)
class ProbBatch:
    """A batch of samples as the decision reads them: p(given) and the top-k classes.

    Attributes:
        idx: (B,) int64 sample ids (unique over the whole dataset; ties break by them).
        given_label: (B,) int64 in [0, C).
        prob_given: (B,) float64, p(given label).
        top_labels: (B, k) int64, the k most probable classes, most probable first (ties: lower
            class first), so ``top_labels[:, 0]`` is the argmax; -1 marks an empty slot.
        top_probs: (B, k) float64, their probabilities (0 in empty slots).
    """

    idx: np.ndarray
    given_label: np.ndarray
    prob_given: np.ndarray
    top_labels: np.ndarray
    top_probs: np.ndarray

    @classmethod
    def from_probs(
        cls,
        given_label: np.ndarray,
        pred_probs: np.ndarray,
        *,
        idx: np.ndarray | None = None,
        k: int | None = None,
    ) -> ProbBatch:
        """From full (B, C) probabilities; ``k`` None keeps all C classes (exact)."""
        given = np.asarray(given_label, dtype=np.int64)
        probs = np.asarray(pred_probs, dtype=np.float64)
        labels, top = top_k(probs, k or probs.shape[1])
        ids = np.arange(given.size, dtype=np.int64) if idx is None else np.asarray(idx, np.int64)
        return cls(ids, given, probs[np.arange(given.size), given], labels, top)

    @classmethod
    def from_columns(cls, batch: Mapping[str, Any]) -> ProbBatch:
        """From a label-table batch: ``idx``, ``given_label``, ``prob_given``, ``top_labels``,
        ``top_probs`` (2-D arrays)."""
        return cls(
            np.asarray(batch["idx"], dtype=np.int64),
            np.asarray(batch["given_label"], dtype=np.int64),
            np.asarray(batch["prob_given"], dtype=np.float64),
            np.asarray(batch["top_labels"], dtype=np.int64),
            np.asarray(batch["top_probs"], dtype=np.float64),
        )

    def __len__(self) -> int:
        return int(self.given_label.size)

    @property
    def predicted_label(self) -> np.ndarray:
        """(B,) int64 argmax class."""
        return self.top_labels[:, 0]

    def max_other_prob(self) -> np.ndarray:
        """(B,) float64: the largest probability of a class other than the given one.

        Exact when the given class or the runner-up is in the top k (k >= 2 always suffices).
        """
        other = np.where(self.top_labels == self.given_label[:, None], -np.inf, self.top_probs)
        return np.maximum(other.max(axis=1), 0.0)


def top_k(pred_probs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k most probable classes of each row, most probable first, ties to the lower class.

    Args:
        pred_probs: (N, C) probabilities.
        k: how many classes to keep (at most C).

    Returns:
        ``(labels, probs)``: (N, min(k, C)) int64 and float64.
    """
    probs = np.asarray(pred_probs, dtype=np.float64)
    k = min(int(k), probs.shape[1])
    # A stable sort of -p puts equal probabilities in class order, as argmax breaks its ties.
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return order.astype(np.int64), np.take_along_axis(probs, order, axis=1)


def _check(given_label: np.ndarray, pred_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate the array-level inputs (ValueError names the argument and the fix)."""
    given = np.asarray(given_label)
    probs = np.asarray(pred_probs, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"pred_probs must be (N, C), got shape {probs.shape}")
    if given.ndim != 1 or given.shape[0] != probs.shape[0]:
        raise ValueError(
            f"given_label must be (N,) with N = {probs.shape[0]} (the rows of pred_probs), "
            f"got shape {given.shape}"
        )
    if given.size and not np.issubdtype(given.dtype, np.integer):
        raise ValueError(f"given_label must hold integers, got dtype {given.dtype}")
    c = probs.shape[1]
    if given.size and (given.min() < 0 or given.max() >= c):
        raise ValueError(f"given_label values must lie in [0, {c}) (the columns of pred_probs)")
    if not np.isfinite(probs).all() or probs.min(initial=0.0) < 0 or probs.max(initial=0.0) > 1:
        raise ValueError("pred_probs must be finite probabilities in [0, 1]")
    return given.astype(np.int64), probs


def check_inputs(given_label: np.ndarray, pred_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate array inputs at a public entry point.

    Returns:
        ``(given_label, pred_probs)`` as (N,) int64 and (N, C) float64.

    Raises:
        ValueError: the wrong shape, dtype or range (the message names the argument and the fix).
    """
    return _check(given_label, pred_probs)


def _check_choice(value: str, choices: Sequence[str], name: str) -> None:
    if value not in choices:
        raise ValueError(f"{name}={value!r} is unknown; choose one of {', '.join(choices)}")


# ---------------------------------------------------------------------------------------------
# Thresholds, confident joint, calibration (pure functions of small arrays)


def _thresholds_from_sums(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """(C,) t_j = sums_j / counts_j; +inf for a class with no sample."""
    return np.divide(sums, counts, out=np.full(sums.shape, np.inf), where=counts > 0)


def class_thresholds(
    given_label: np.ndarray, pred_probs: np.ndarray, *, num_classes: int | None = None
) -> np.ndarray:
    """Per-class thresholds t_j: the mean p_j over the samples whose given label is j (eq. 2).

    Args:
        given_label: (N,) int in [0, C).
        pred_probs: (N, C) probabilities.
        num_classes: C; None = the columns of ``pred_probs``.

    Returns:
        (C,) float64; +inf for a class with no sample.
    """
    given, probs = _check(given_label, pred_probs)
    c = num_classes or probs.shape[1]
    p_given = probs[np.arange(given.size), given]
    sums = np.bincount(given, weights=p_given, minlength=c)
    return _thresholds_from_sums(sums, np.bincount(given, minlength=c))


def _confident_class(batch: ProbBatch, thresholds: np.ndarray) -> np.ndarray:
    """(B,) int64: each sample's confident class (paper eq. 1), -1 where no class qualifies.

    Candidates are the top-k classes and the given class (with p_given), see the module notes.
    """
    b = len(batch)
    labels = np.concatenate([batch.top_labels, batch.given_label[:, None]], axis=1)
    probs = np.concatenate([batch.top_probs, batch.prob_given[:, None]], axis=1)
    # The given class always carries p_given, wherever it appears.
    probs = np.where(labels == batch.given_label[:, None], batch.prob_given[:, None], probs)
    # An empty slot (label -1) is never confident.
    confident = (labels >= 0) & (probs >= thresholds[np.maximum(labels, 0)] - THRESHOLD_EPS)
    masked = np.where(confident, probs, -np.inf)
    best = masked.max(axis=1, initial=-np.inf)
    # Among the confident classes with the largest probability, the lowest class index.
    c = len(thresholds)
    winner = np.where(confident & (masked == best[:, None]), labels, c).min(axis=1, initial=c)
    return np.where(winner < c, winner, -1).astype(np.int64) if b else np.zeros(0, np.int64)


def confident_classes(
    given_label: np.ndarray, pred_probs: np.ndarray, thresholds: np.ndarray
) -> np.ndarray:
    """Each sample's confident class (the argmax over the classes at or above their threshold).

    Args:
        given_label: (N,) int.
        pred_probs: (N, C) probabilities.
        thresholds: (C,) from :func:`class_thresholds`.

    Returns:
        (N,) int64; -1 where no class reaches its threshold.
    """
    given, probs = _check(given_label, pred_probs)
    return _confident_class(ProbBatch.from_probs(given, probs), np.asarray(thresholds, float))


def _joint_counts(given: np.ndarray, confident: np.ndarray, c: int) -> np.ndarray:
    counted = confident >= 0
    flat = given[counted] * c + confident[counted]
    return np.bincount(flat, minlength=c * c).reshape(c, c).astype(np.int64)


def confident_joint(
    given_label: np.ndarray,
    pred_probs: np.ndarray,
    *,
    thresholds: np.ndarray | None = None,
    num_classes: int | None = None,
) -> np.ndarray:
    """The confident joint C[i][j]: samples with given label i whose confident class is j (eq. 1).

    Args:
        given_label: (N,) int in [0, C).
        pred_probs: (N, C) probabilities.
        thresholds: (C,) per-class thresholds; None = :func:`class_thresholds`.
        num_classes: C; None = the columns of ``pred_probs``.

    Returns:
        (C, C) int64, rows = given label, columns = confident (likely true) class; uncalibrated.
    """
    given, probs = _check(given_label, pred_probs)
    c = num_classes or probs.shape[1]
    t = class_thresholds(given, probs, num_classes=c) if thresholds is None else thresholds
    return _joint_counts(given, confident_classes(given, probs, t), c)


def calibrate_joint(joint_counts: np.ndarray, given_counts: np.ndarray) -> np.ndarray:
    """Rescale each row of the confident joint to the given-label count of its class (eq. 3).

    Args:
        joint_counts: (C, C) confident joint, rows = given label.
        given_counts: (C,) n_i, samples per given label.

    Returns:
        (C, C) float64 whose row i sums to n_i; a row without counts puts n_i on the diagonal.
    """
    cj = np.asarray(joint_counts, dtype=np.float64)
    n = np.asarray(given_counts, dtype=np.float64)
    rows = cj.sum(axis=1)
    out = np.divide(cj * n[:, None], rows[:, None], out=np.zeros_like(cj), where=rows[:, None] > 0)
    empty = (rows == 0) & (n > 0)
    out[empty, empty.nonzero()[0]] = n[empty]
    return out


def estimate_joint(joint_counts: np.ndarray, given_counts: np.ndarray) -> np.ndarray:
    """The estimated joint Q[i][j] = p(given = i, true = j): the calibrated joint over N.

    Returns:
        (C, C) float64 summing to 1 (all zeros when there are no samples).
    """
    calibrated = calibrate_joint(joint_counts, given_counts)
    total = calibrated.sum()
    return calibrated / total if total > 0 else calibrated


def estimate_noise_matrix(joint: np.ndarray) -> np.ndarray:
    """P(given = i | true = j) from the joint, laid out with rows = true class j, columns = i.

    Args:
        joint: (C, C) Q, rows = given label, columns = true class.

    Returns:
        (C, C) float64 whose rows sum to 1 (a true class never confidently predicted: zeros).
    """
    q = np.asarray(joint, dtype=np.float64).T
    totals = q.sum(axis=1, keepdims=True)
    return np.divide(q, totals, out=np.zeros_like(q), where=totals > 0)


def _round_to_total(values: np.ndarray, total: int) -> np.ndarray:
    """Integers near ``values`` (>= 0) summing to ``total`` (largest remainder; ties to the lower
    index)."""
    floor = np.floor(values).astype(np.int64)
    missing = int(total) - int(floor.sum())
    if missing > 0:
        order = np.argsort(-(values - floor), kind="stable")[:missing]
        floor[order] += 1
    return floor


def prune_counts(
    joint_counts: np.ndarray, given_counts: np.ndarray, *, min_examples_per_class: int = 1
) -> np.ndarray:
    """How many samples of each (given i, true j) cell to prune: n * Q[i][j], as integers.

    Args:
        joint_counts: (C, C) confident joint, rows = given label.
        given_counts: (C,) samples per given label.
        min_examples_per_class: each given class keeps at least this many samples.

    Returns:
        (C, C) int64; the diagonal holds the kept count, row i sums to n_i.
    """
    calibrated = calibrate_joint(joint_counts, given_counts)
    n = np.asarray(given_counts, dtype=np.int64)
    out = np.zeros(calibrated.shape, np.int64)
    for i in range(len(n)):
        row = _round_to_total(calibrated[i], int(n[i]))
        off = np.delete(np.arange(len(n)), i)
        cap = max(int(n[i]) - int(min_examples_per_class), 0)
        if row[off].sum() > cap:
            row[off] = _round_to_total(row[off] * cap / row[off].sum(), cap)
        row[i] = int(n[i]) - int(row[off].sum())
        out[i] = row
    return out


def _quality(batch: ProbBatch, rank_by: str) -> np.ndarray:
    if rank_by == "self_confidence":
        return np.clip(batch.prob_given, 0.0, 1.0)
    return np.clip(0.5 * (batch.prob_given - batch.max_other_prob() + 1.0), 0.0, 1.0)


def label_quality_scores(
    given_label: np.ndarray, pred_probs: np.ndarray, *, rank_by: str = "self_confidence"
) -> np.ndarray:
    """Per-sample label quality in [0, 1] (low = suspicious): see :data:`RANKINGS`.

    Args:
        given_label: (N,) int.
        pred_probs: (N, C) probabilities.
        rank_by: ``self_confidence`` (p_given) or ``normalized_margin``.

    Returns:
        (N,) float64.
    """
    _check_choice(rank_by, RANKINGS, "rank_by")
    given, probs = _check(given_label, pred_probs)
    return _quality(ProbBatch.from_probs(given, probs), rank_by)


# ---------------------------------------------------------------------------------------------
# Streaming


class _TopPerGroup:
    """Keeps, for each group g, the ``capacity[g]`` entries with the largest key (ties: lower idx).

    Each entry carries a label quality and an "argmax = given" flag along. The result does not
    depend on how the entries are split into :meth:`add` calls.
    """

    def __init__(self, capacity: np.ndarray):
        self.capacity = np.asarray(capacity, dtype=np.int64)
        g = len(self.capacity)
        self.group = np.zeros(0, np.int64)
        self.key = np.zeros(0, np.float64)
        self.idx = np.zeros(0, np.int64)
        self.quality = np.zeros(0, np.float64)
        self.agrees = np.zeros(0, bool)
        # The worst kept entry of each full group (a candidate must beat it); -inf = not full.
        self.worst_key = np.full(g, -np.inf)
        self.worst_idx = np.full(g, np.iinfo(np.int64).max)

    def add(
        self,
        group: np.ndarray,
        key: np.ndarray,
        idx: np.ndarray,
        quality: np.ndarray,
        agrees: np.ndarray,
    ) -> None:
        """Offer entries, (M,) each: group, key (larger = kept first), idx and the payload."""
        wk, wi = self.worst_key[group], self.worst_idx[group]
        ok = (self.capacity[group] > 0) & ((key > wk) | ((key == wk) & (idx < wi)))
        if not ok.any():
            return
        g = np.concatenate([self.group, group[ok]])
        k = np.concatenate([self.key, key[ok]])
        i = np.concatenate([self.idx, idx[ok]])
        q = np.concatenate([self.quality, quality[ok]])
        a = np.concatenate([self.agrees, agrees[ok]])
        order = np.lexsort((i, -k, g))
        g, k, i, q, a = g[order], k[order], i[order], q[order], a[order]
        rank = np.arange(g.size) - np.searchsorted(g, g, side="left")
        keep = rank < self.capacity[g]
        self.group, self.key, self.idx = g[keep], k[keep], i[keep]
        self.quality, self.agrees, rank = q[keep], a[keep], rank[keep]
        # A full group's bar is its last kept entry.
        last = np.flatnonzero(np.r_[self.group[1:] != self.group[:-1], True])
        last = last[rank[last] + 1 >= self.capacity[self.group[last]]]
        self.worst_key[self.group[last]] = self.key[last]
        self.worst_idx[self.group[last]] = self.idx[last]


class RankedIssues:
    """The issues of a dataset in order of suspicion: membership and rank by idx.

    Args:
        idx: (M,) int64 unique sample ids of the issues.
        quality: (M,) float64 label quality (low = suspicious); ties go to the lower idx.
    """

    def __init__(self, idx: np.ndarray, quality: np.ndarray):
        idx = np.asarray(idx, dtype=np.int64)
        order = np.lexsort((idx, np.asarray(quality, dtype=np.float64)))
        self.ordered = idx[order]  # most suspicious first
        by_idx = np.argsort(self.ordered, kind="stable")
        self._sorted = self.ordered[by_idx]
        self._rank = (by_idx + 1).astype(np.int64)

    def __len__(self) -> int:
        return int(self.ordered.size)

    def lookup(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(B,) bool "is an issue" and (B,) int64 rank (1 = most suspicious, 0 = not an issue)."""
        idx = np.asarray(idx, dtype=np.int64)
        if not self._sorted.size:
            return np.zeros(idx.shape, bool), np.zeros(idx.shape, np.int64)
        pos = np.minimum(np.searchsorted(self._sorted, idx), self._sorted.size - 1)
        hit = self._sorted[pos] == idx
        return hit, np.where(hit, self._rank[pos], 0)


class ConfidentLearning:
    """Confident-learning label issues over a stream of :class:`ProbBatch` (module docstring).

    Usage: for each pass p in ``range(num_passes)``, call ``observe(p, batch)`` for every batch,
    then ``end_pass(p)``; afterwards ``decide(batch)`` labels any batch and ``result()`` holds
    the estimates.

    Args:
        num_classes: C.
        filter_by: one of :data:`FILTERS`; None = only the estimates (2 passes, no issues).
        rank_by: one of :data:`RANKINGS` (the label score and the order of the issues).
        min_examples_per_class: each given class keeps at least this many samples.
        exclude_predicted_given: a sample whose argmax is its given label is never an issue.

    Raises:
        ValueError: an unknown ``filter_by`` or ``rank_by`` (the message lists the choices).
    """

    def __init__(
        self,
        num_classes: int,
        *,
        filter_by: str | None = "prune_by_noise_rate",
        rank_by: str = "self_confidence",
        min_examples_per_class: int = 1,
        exclude_predicted_given: bool = True,
    ):
        if filter_by is not None:
            _check_choice(filter_by, FILTERS, "filter_by")
        _check_choice(rank_by, RANKINGS, "rank_by")
        c = int(num_classes)
        self.num_classes, self.filter_by, self.rank_by = c, filter_by, rank_by
        self.min_examples_per_class = int(min_examples_per_class)
        self.exclude_predicted_given = bool(exclude_predicted_given)
        self._sums = np.zeros(c, np.float64)
        self.given_counts = np.zeros(c, np.int64)
        self.thresholds = np.full(c, np.inf)
        self.joint_counts = np.zeros((c, c), np.int64)
        self.prune = np.zeros((c, c), np.int64)
        self._cells: _TopPerGroup | None = None
        self._classes: _TopPerGroup | None = None
        # The issues found so far: idx, label quality, argmax == given.
        self._found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.issues = RankedIssues(np.zeros(0, np.int64), np.zeros(0))

    @property
    def num_passes(self) -> int:
        """2 for ``confident_joint`` (and estimates only), 3 for the pruning filters."""
        return 2 if self.filter_by in (None, "confident_joint") else 3

    def observe(self, pass_index: int, batch: ProbBatch) -> None:
        """Feed one batch to pass ``pass_index`` (0 = thresholds, 1 = joint, 2 = pruning)."""
        if len(batch) == 0:
            return
        if pass_index == 0:
            self._sums += np.bincount(
                batch.given_label, weights=batch.prob_given, minlength=self.num_classes
            )
            self.given_counts += np.bincount(batch.given_label, minlength=self.num_classes)
        elif pass_index == 1:
            self._observe_joint(batch)
        elif pass_index == 2:
            self._observe_candidates(batch)
        else:
            raise ValueError(f"pass {pass_index} does not exist ({self.num_passes} passes)")

    def _observe_joint(self, batch: ProbBatch) -> None:
        confident = _confident_class(batch, self.thresholds)
        self.joint_counts += _joint_counts(batch.given_label, confident, self.num_classes)
        if self.filter_by == "confident_joint":
            off = (confident >= 0) & (confident != batch.given_label)
            self._keep_found(batch, off)

    def _keep_found(self, batch: ProbBatch, mask: np.ndarray) -> None:
        agrees = batch.predicted_label == batch.given_label
        quality = _quality(batch, self.rank_by)
        self._found.append((batch.idx[mask], quality[mask], agrees[mask]))

    def _observe_candidates(self, batch: ProbBatch) -> None:
        c = self.num_classes
        agrees = batch.predicted_label == batch.given_label
        quality = _quality(batch, self.rank_by)
        if self._classes is not None:
            self._classes.add(batch.given_label, -batch.prob_given, batch.idx, quality, agrees)
        if self._cells is None:
            return
        k = batch.top_labels.shape[1]
        given = np.repeat(batch.given_label, k)
        label = batch.top_labels.reshape(-1)
        cell = given * c + label
        ok = (label >= 0) & (label != given)
        ok[ok] = self._cells.capacity[cell[ok]] > 0
        margin = batch.top_probs.reshape(-1) - np.repeat(batch.prob_given, k)
        self._cells.add(
            cell[ok],
            margin[ok],
            np.repeat(batch.idx, k)[ok],
            np.repeat(quality, k)[ok],
            np.repeat(agrees, k)[ok],
        )

    def end_pass(self, pass_index: int) -> None:
        """Finish pass ``pass_index``: thresholds after 0, prune counts after 1, issues after the
        last pass."""
        if pass_index == 0:
            self.thresholds = _thresholds_from_sums(self._sums, self.given_counts)
        elif pass_index == 1:
            self.prune = prune_counts(
                self.joint_counts,
                self.given_counts,
                min_examples_per_class=self.min_examples_per_class,
            )
            self._start_pruning()
        if pass_index == self.num_passes - 1:
            self._finish()

    def _start_pruning(self) -> None:
        if self.filter_by in (None, "confident_joint"):
            return
        off = self.prune.copy()
        np.fill_diagonal(off, 0)
        if self.filter_by in ("prune_by_noise_rate", "both"):
            self._cells = _TopPerGroup(off.reshape(-1))
        if self.filter_by in ("prune_by_class", "both"):
            self._classes = _TopPerGroup(off.sum(axis=1))

    def _finish(self) -> None:
        if self.filter_by not in (None, "confident_joint"):
            self._collect_pruned()
        idx = np.concatenate([f[0] for f in self._found] or [np.zeros(0, np.int64)])
        quality = np.concatenate([f[1] for f in self._found] or [np.zeros(0)])
        agrees = np.concatenate([f[2] for f in self._found] or [np.zeros(0, bool)])
        if self.exclude_predicted_given:
            idx, quality = idx[~agrees], quality[~agrees]
        self.issues = RankedIssues(idx, quality)
        self._found = []
        self._cells = self._classes = None

    def _collect_pruned(self) -> None:
        """The union (PBNR, PBC) or intersection (both) of the kept candidates."""
        kept = [k for k in (self._cells, self._classes) if k is not None]
        parts = []
        for keeper in kept:
            _, first = np.unique(keeper.idx, return_index=True)
            parts.append((keeper.idx[first], keeper.quality[first], keeper.agrees[first]))
        idx, quality, agrees = parts[0]
        if len(parts) == 2:
            both = np.isin(idx, parts[1][0])
            idx, quality, agrees = idx[both], quality[both], agrees[both]
        self._found = [(idx, quality, agrees)]

    def decide(self, batch: ProbBatch) -> dict[str, np.ndarray]:
        """Label one batch after the last pass.

        Returns:
            ``is_label_issue`` (B,) bool; ``rank`` (B,) int64, 1 = most suspicious issue, 0 for
            samples that are not issues; ``label_score`` (B,) float64 in [0, 1] (``rank_by``);
            ``class_threshold`` (B,) float64, the threshold of the given class.
        """
        hit, rank = self.issues.lookup(batch.idx)
        return {
            "is_label_issue": hit,
            "rank": rank,
            "label_score": _quality(batch, self.rank_by),
            "class_threshold": self.thresholds[batch.given_label],
        }

    def result(self) -> dict[str, Any]:
        """The estimates (numpy arrays): ``thresholds`` (C,), ``given_counts`` (C,),
        ``confident_joint`` (C, C), ``prune_counts`` (C, C), ``joint`` (C, C) Q,
        ``noise_matrix`` (C, C) rows = true class, ``noise_rate_by_class`` (C,) the estimated
        fraction of wrong labels among each given class, ``noise_rate`` 1 - trace(Q)."""
        joint = estimate_joint(self.joint_counts, self.given_counts)
        rows = joint.sum(axis=1)
        diag = np.diagonal(joint)
        return {
            "thresholds": self.thresholds,
            "given_counts": self.given_counts,
            "confident_joint": self.joint_counts,
            "prune_counts": self.prune,
            "joint": joint,
            "noise_matrix": estimate_noise_matrix(joint),
            "noise_rate_by_class": np.divide(
                rows - diag, rows, out=np.zeros_like(rows), where=rows > 0
            ),
            "noise_rate": float(1.0 - diag.sum()) if joint.sum() > 0 else 0.0,
        }


def _run(cl: ConfidentLearning, batches: Sequence[ProbBatch]) -> ConfidentLearning:
    for p in range(cl.num_passes):
        for b in batches:
            cl.observe(p, b)
        cl.end_pass(p)
    return cl


# ---------------------------------------------------------------------------------------------
# Array-level entry points


def find_label_issues(
    given_label: np.ndarray,
    pred_probs: np.ndarray,
    *,
    filter_by: str = "prune_by_noise_rate",
    min_examples_per_class: int = 1,
    exclude_predicted_given: bool = True,
) -> np.ndarray:
    """Which given labels are probably wrong, by confident learning (module docstring).

    Args:
        given_label: (N,) int in [0, C), the labels to check.
        pred_probs: (N, C) out-of-sample predicted probabilities (rows need not sum to 1 exactly).
        filter_by: one of :data:`FILTERS`.
        min_examples_per_class: each given class keeps at least this many samples.
        exclude_predicted_given: a sample whose argmax is its given label is never an issue.

    Returns:
        (N,) bool, True = label issue.

    Raises:
        ValueError: inputs of the wrong shape or range, or an unknown ``filter_by``.
    """
    given, probs = _check(given_label, pred_probs)
    cl = ConfidentLearning(
        probs.shape[1],
        filter_by=filter_by,
        min_examples_per_class=min_examples_per_class,
        exclude_predicted_given=exclude_predicted_given,
    )
    batch = ProbBatch.from_probs(given, probs)
    return _run(cl, [batch]).decide(batch)["is_label_issue"]


def rank_label_issues(
    given_label: np.ndarray,
    pred_probs: np.ndarray,
    *,
    label_issues: np.ndarray | None = None,
    rank_by: str = "self_confidence",
) -> np.ndarray:
    """The samples in order of suspicion, most suspicious first (lowest label quality; ties: lower
    index).

    Args:
        given_label: (N,) int.
        pred_probs: (N, C) probabilities.
        label_issues: (N,) bool mask (e.g. from :func:`find_label_issues`) to rank only those;
            None ranks all N samples.
        rank_by: one of :data:`RANKINGS`.

    Returns:
        (M,) int64 row positions, M = the number of True entries in ``label_issues`` (or N).
    """
    quality = label_quality_scores(given_label, pred_probs, rank_by=rank_by)
    rows = np.arange(quality.size, dtype=np.int64)
    if label_issues is not None:
        mask = np.asarray(label_issues, dtype=bool)
        if mask.shape != quality.shape:
            raise ValueError(f"label_issues must be (N,) = {quality.shape}, got {mask.shape}")
        rows = rows[mask]
    return rows[np.lexsort((rows, quality[rows]))]

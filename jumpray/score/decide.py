"""Pure decisions from per-snapshot scores: label_score, is_label_issue, relabel, noise matrix.

No Ray, no files: numpy in, numpy out (docs/architecture.md, 'Pure core, thin adapters'). The scorer
(:mod:`jumpray.score.scorer`) hands over, per sample and per prior snapshot r = 1..R, the raw scores
``prob_given``, ``semantic_prob``, ``bit_loss_mean``, ``bit_loss_var`` and ``clean`` (the training
clean rule). A :class:`Decision` turns them into one number per sample:

1. a **formula** (:data:`SCORE_FORMULAS`) gives each snapshot's score in [0, 1], high = the given
   label is probably right:

   - ``prob``: the classifier's p(given label) (softmax of logits / T);
   - ``margin``: (1 + p(given) - max other p) / 2, the normalised margin (0.5 = a tie between
     the given label and the strongest other class);
   - ``semantic``: the semantic head's posterior of the given class (the code likelihood
     normalised over the C class codes);
   - ``bitloss``: exp(-mean bit loss of the given code), the geometric mean of the K per-bit
     likelihoods (0.5 = an all-zero head);
   - ``rule``: the training clean rule as 0/1 (argmax agrees OR bit-loss variance < tau);
   - ``blend``: the mean of ``prob`` and ``semantic``;

2. a **combiner** (:data:`COMBINERS`) merges the R snapshots: ``mean`` averages the scores;
   ``vote`` is the fraction of snapshots whose own score is at least 0.5;

3. ``is_label_issue = label_score < threshold``.

The default, ``prob`` + ``mean`` over the last R = 3 snapshots + threshold 0.1, was chosen by
measurement (``benchmarks/score_decisions.py``; the table is in benchmarks/README.md,
'Score formula and combiner'). This module's single threshold is the ``threshold`` decision of
:mod:`jumpray.score.rules`; the per-class thresholds of confident learning
(``score.decision=confident``, :mod:`jumpray.score.confident`) run as passes over the written
label table (:mod:`jumpray.score.table`), not over the images.

The relabel rule (:func:`relabel_decision`) keeps unflagged samples as they are; a flagged sample
is kept with the predicted label only when relabelling is on, the model's mean probability of that
label is at least ``min_prob`` and it differs from the given one; every other flagged sample is
dropped. The noise matrix (:func:`noise_matrix_counts`) counts (predicted, given) pairs over
confident samples: row c estimates P(given = g | true class c).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from jumpray.errors import ConfigError

__all__ = [
    "SCORE_FORMULAS",
    "COMBINERS",
    "SEMANTIC_FORMULAS",
    "Decision",
    "label_score",
    "given_margin",
    "relabel_decision",
    "noise_matrix_counts",
    "normalize_rows",
    "VOTE_CUT",
]

# Per-snapshot scores: mapping name -> (R, B) float64 -> (R, B) float64 in [0, 1].
FormulaFn = Callable[[Mapping[str, np.ndarray]], np.ndarray]

VOTE_CUT = 0.5  # a snapshot "votes clean" when its own score is at least this


def given_margin(probs: np.ndarray, given: np.ndarray) -> np.ndarray:
    """The ``margin`` column: p(given) minus the largest other class probability.

    Args:
        probs: (N, C) probabilities.
        given: (N,) int, the given labels.

    Returns:
        (N,) float in [-1, 1].
    """
    rows = np.arange(given.size)
    others = probs.copy()
    others[rows, given] = -np.inf
    return probs[rows, given] - others.max(axis=1, initial=-np.inf).clip(min=0.0)


def _prob(ps: Mapping[str, np.ndarray]) -> np.ndarray:
    return np.asarray(ps["prob_given"], dtype=np.float64)


def _margin(ps: Mapping[str, np.ndarray]) -> np.ndarray:
    return 0.5 * (1.0 + np.asarray(ps["margin"], dtype=np.float64))


def _semantic(ps: Mapping[str, np.ndarray]) -> np.ndarray:
    return np.asarray(ps["semantic_prob"], dtype=np.float64)


def _bitloss(ps: Mapping[str, np.ndarray]) -> np.ndarray:
    return np.exp(-np.asarray(ps["bit_loss_mean"], dtype=np.float64))


def _rule(ps: Mapping[str, np.ndarray]) -> np.ndarray:
    return np.asarray(ps["clean"], dtype=np.float64)


def _blend(ps: Mapping[str, np.ndarray]) -> np.ndarray:
    return 0.5 * (_prob(ps) + _semantic(ps))


SCORE_FORMULAS: dict[str, FormulaFn] = {
    "prob": _prob,
    "margin": _margin,
    "semantic": _semantic,
    "bitloss": _bitloss,
    "rule": _rule,
    "blend": _blend,
}
# Formulas that read the semantic head (a network trained without one cannot use them).
SEMANTIC_FORMULAS = frozenset({"semantic", "bitloss", "blend"})


def _mean(scores: np.ndarray) -> np.ndarray:
    return scores.mean(axis=0)


def _vote(scores: np.ndarray) -> np.ndarray:
    return (scores >= VOTE_CUT).mean(axis=0)


COMBINERS: dict[str, Callable[[np.ndarray], np.ndarray]] = {"mean": _mean, "vote": _vote}


def _lookup(table: Mapping[str, object], name: str, what: str, key: str) -> object:
    try:
        return table[name]
    except KeyError:
        raise ConfigError(
            f"{key}: unknown {what} {name!r}; valid: {', '.join(sorted(table))}"
        ) from None


@dataclass(frozen=True)
class Decision:
    """How per-snapshot scores become ``label_score`` and ``is_label_issue`` (``score.*``).

    Attributes:
        formula: a name in :data:`SCORE_FORMULAS`.
        combine: a name in :data:`COMBINERS`.
        threshold: ``is_label_issue = label_score < threshold``.
    """

    formula: str = "prob"
    combine: str = "mean"
    threshold: float = 0.1

    def check(self, *, has_semantic: bool = True) -> None:
        """Validate the names (and that the network has what the formula reads).

        Raises:
            ConfigError: an unknown name, a threshold outside [0, 1], or a semantic formula for a
                network without a semantic head.
        """
        _lookup(SCORE_FORMULAS, self.formula, "score formula", "score.formula")
        _lookup(COMBINERS, self.combine, "combiner", "score.combine")
        if not 0.0 <= self.threshold <= 1.0:
            raise ConfigError(f"score.threshold: {self.threshold} is outside [0, 1]")
        if not has_semantic and self.formula in SEMANTIC_FORMULAS:
            raise ConfigError(
                f"score.formula: {self.formula!r} reads the semantic head, which this network "
                "lacks (trained without Jump-teaching); use score.formula=prob or rule"
            )


def label_score(
    per_snapshot: Mapping[str, np.ndarray], *, formula: str = "prob", combine: str = "mean"
) -> np.ndarray:
    """Combine R snapshots' raw scores into one label score per sample.

    Args:
        per_snapshot: name -> (R, B) arrays (``prob_given``, ``semantic_prob``,
            ``bit_loss_mean``, ``clean``; only those the formula reads are needed).
        formula: a name in :data:`SCORE_FORMULAS`.
        combine: a name in :data:`COMBINERS`.

    Returns:
        (B,) float64 in [0, 1], high = the given label is probably right.

    Raises:
        ConfigError: unknown formula or combiner (the message lists the valid names).
    """
    fn = _lookup(SCORE_FORMULAS, formula, "score formula", "score.formula")
    comb = _lookup(COMBINERS, combine, "combiner", "score.combine")
    scores = np.atleast_2d(fn(per_snapshot))  # type: ignore[operator]
    return np.clip(comb(scores), 0.0, 1.0)  # type: ignore[operator]


def relabel_decision(
    given_label: np.ndarray,
    predicted_label: np.ndarray,
    pred_prob: np.ndarray,
    is_label_issue: np.ndarray,
    *,
    relabel: bool,
    min_prob: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which samples the cleaned dataset keeps, and with which label (module docstring).

    Args:
        given_label, predicted_label: (B,) int.
        pred_prob: (B,) the mean probability of ``predicted_label``.
        is_label_issue: (B,) bool.
        relabel: ``clean.relabel``.
        min_prob: ``clean.relabel_min_prob``.

    Returns:
        ``(keep, label, relabelled)``: (B,) bool, (B,) int64 (the label to write; meaningful
        where ``keep``), (B,) bool.
    """
    given = np.asarray(given_label, dtype=np.int64)
    pred = np.asarray(predicted_label, dtype=np.int64)
    issue = np.asarray(is_label_issue, dtype=bool)
    relabelled = (
        issue & (np.asarray(pred_prob) >= min_prob) & (pred != given)
        if relabel
        else np.zeros_like(issue)
    )
    keep = ~issue | relabelled
    return keep, np.where(relabelled, pred, given), relabelled


def noise_matrix_counts(
    predicted_label: np.ndarray,
    given_label: np.ndarray,
    num_classes: int,
    *,
    confident: np.ndarray | None = None,
) -> np.ndarray:
    """Counts of (predicted, given) pairs, rows = predicted (likely true) class.

    Args:
        predicted_label, given_label: (B,) int in [0, C).
        num_classes: C.
        confident: (B,) bool, the samples to count; None = all.

    Returns:
        (C, C) int64; sum over batches, then :func:`normalize_rows` for the estimate.
    """
    pred = np.asarray(predicted_label, dtype=np.int64)
    given = np.asarray(given_label, dtype=np.int64)
    if confident is not None:
        mask = np.asarray(confident, dtype=bool)
        pred, given = pred[mask], given[mask]
    flat = np.bincount(pred * num_classes + given, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes).astype(np.int64)


def normalize_rows(counts: np.ndarray) -> np.ndarray:
    """Row-normalise a (C, C) count matrix; rows without counts stay zero. (C, C) float64."""
    counts = np.asarray(counts, dtype=np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)

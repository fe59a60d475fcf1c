"""Decisions over the whole label table, registered by short name (``score.decision``).

A rule decides ``is_label_issue`` for every scored row and ranks the issues. Rows stream: the rule
sees them in ``num_passes`` passes (pass 0 while the table is written, the others over the
written table, each in any batch order), then :meth:`LabelRule.decide` gives each batch its final
columns (:data:`DECISION_COLUMNS`). Pure numpy; :mod:`jumpray.score.table` runs the passes over
``labels.parquet``.

Registered rules (:data:`DECISION_RULES`):

- ``threshold``: ``is_label_issue = label_score < score.threshold``, one global threshold on the
  scorer's label score (``score.formula`` / ``score.combine``, :mod:`jumpray.score.decide`);
- ``confident``: confident learning (:mod:`jumpray.score.confident`) on the rows' probabilities
  (``prob_given`` and the ``top_labels`` / ``top_probs`` columns): per-class thresholds, the
  calibrated confident joint, and ``score.filter_by``; the label score is ``score.rank_by``.

Both rank the issues by label score, lowest first (ties: lower idx); ``rank`` is 1 for the most
suspicious issue and 0 for rows that are not issues (null in the Parquet table).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from jumpray.errors import ConfigError
from jumpray.score.confident import ConfidentLearning, ProbBatch, RankedIssues

__all__ = [
    "DECISION_COLUMNS",
    "DECISION_RULES",
    "LabelRule",
    "ThresholdRule",
    "ConfidentRule",
    "make_rule",
]

# The columns a rule decides, in table order.
DECISION_COLUMNS = ("label_score", "is_label_issue", "rank", "class_threshold")

Batch = Mapping[str, np.ndarray]


class LabelRule(Protocol):
    """What the table passes need from a decision (module docstring)."""

    name: str

    @property
    def num_passes(self) -> int: ...
    def observe(self, pass_index: int, batch: Batch) -> None: ...
    def end_pass(self, pass_index: int) -> None: ...
    def decide(self, batch: Batch) -> dict[str, np.ndarray]: ...
    def params(self) -> dict[str, Any]: ...
    def result(self) -> dict[str, Any]: ...


class ThresholdRule:
    """One global threshold on the scorer's ``label_score`` (the pre-confident-learning rule).

    Args:
        num_classes: C.
        threshold: ``is_label_issue = label_score < threshold``.
    """

    name = "threshold"
    num_passes = 1

    def __init__(self, num_classes: int, *, threshold: float = 0.1):
        self.num_classes, self.threshold = int(num_classes), float(threshold)
        self._found: list[tuple[np.ndarray, np.ndarray]] = []
        self.issues = RankedIssues(np.zeros(0, np.int64), np.zeros(0))

    def observe(self, pass_index: int, batch: Batch) -> None:
        """Pass 0: remember the flagged rows' idx and score (for the ranks)."""
        score = np.asarray(batch["label_score"], dtype=np.float64)
        flagged = score < self.threshold
        self._found.append((np.asarray(batch["idx"], np.int64)[flagged], score[flagged]))

    def end_pass(self, pass_index: int) -> None:
        idx = np.concatenate([f[0] for f in self._found] or [np.zeros(0, np.int64)])
        score = np.concatenate([f[1] for f in self._found] or [np.zeros(0)])
        self.issues, self._found = RankedIssues(idx, score), []

    def decide(self, batch: Batch) -> dict[str, np.ndarray]:
        score = np.asarray(batch["label_score"], dtype=np.float64)
        _, rank = self.issues.lookup(batch["idx"])
        return {
            "label_score": score,
            "is_label_issue": score < self.threshold,
            "rank": rank,
            "class_threshold": np.full(score.shape, self.threshold),
        }

    def params(self) -> dict[str, Any]:
        return {"threshold": self.threshold}

    def result(self) -> dict[str, Any]:
        return {}


class ConfidentRule:
    """Confident learning over the table's probabilities (:class:`ConfidentLearning` arguments)."""

    name = "confident"

    def __init__(
        self,
        num_classes: int,
        *,
        filter_by: str = "prune_by_noise_rate",
        rank_by: str = "self_confidence",
        min_examples_per_class: int = 1,
        exclude_predicted_given: bool = True,
    ):
        try:
            self.cl = ConfidentLearning(
                num_classes,
                filter_by=filter_by,
                rank_by=rank_by,
                min_examples_per_class=min_examples_per_class,
                exclude_predicted_given=exclude_predicted_given,
            )
        except ValueError as exc:
            raise ConfigError(f"score.{exc}") from None

    @property
    def num_passes(self) -> int:
        return self.cl.num_passes

    def observe(self, pass_index: int, batch: Batch) -> None:
        self.cl.observe(pass_index, ProbBatch.from_columns(batch))

    def end_pass(self, pass_index: int) -> None:
        self.cl.end_pass(pass_index)

    def decide(self, batch: Batch) -> dict[str, np.ndarray]:
        return self.cl.decide(ProbBatch.from_columns(batch))

    def params(self) -> dict[str, Any]:
        cl = self.cl
        return {
            "filter_by": cl.filter_by,
            "rank_by": cl.rank_by,
            "min_examples_per_class": cl.min_examples_per_class,
            "exclude_predicted_given": cl.exclude_predicted_given,
        }

    def result(self) -> dict[str, Any]:
        """JSON-ready estimates: ``class_thresholds`` (None for a class without samples),
        ``estimated_noise_matrix`` (rows = true class, columns = given label),
        ``estimated_noise_rate_by_class`` (wrong fraction of each given class),
        ``estimated_joint_noise_rate`` (1 - trace of the joint), ``confident_joint``."""
        r = self.cl.result()
        return {
            "class_thresholds": [
                round(float(t), 6) if np.isfinite(t) else None for t in r["thresholds"]
            ],
            "estimated_noise_matrix": r["noise_matrix"].round(4).tolist(),
            "estimated_noise_rate_by_class": r["noise_rate_by_class"].round(4).tolist(),
            "estimated_joint_noise_rate": round(r["noise_rate"], 6),
            "confident_joint": r["confident_joint"].tolist(),
        }


DECISION_RULES: dict[str, type[ThresholdRule] | type[ConfidentRule]] = {
    "threshold": ThresholdRule,
    "confident": ConfidentRule,
}


def make_rule(name: str, *, num_classes: int, **params: Any) -> LabelRule:
    """Build the rule registered as ``name`` with its keyword parameters.

    Raises:
        ConfigError: an unknown name (the message lists the registered ones) or parameter.
    """
    try:
        cls = DECISION_RULES[name]
    except KeyError:
        raise ConfigError(
            f"score.decision: unknown decision {name!r}; valid: {', '.join(sorted(DECISION_RULES))}"
        ) from None
    return cls(num_classes, **params)

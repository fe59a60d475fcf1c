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
suspicious issue and 0 for rows that are not issues (null in the Parquet table). Both report
confident learning's noise estimates (per-class thresholds, noise matrix, per-class noise rates).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from jumpray.errors import ConfigError
from jumpray.score.confident import ConfidentLearning, ProbBatch, RankedIssues, check_inputs

if TYPE_CHECKING:
    from jumpray.config import ScoreConfig

__all__ = [
    "DECISION_COLUMNS",
    "DECISION_RULES",
    "LabelRule",
    "ThresholdRule",
    "ConfidentRule",
    "make_rule",
    "build_rule",
    "decide_in_memory",
    "decide_arrays",
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

    The noise estimates (per-class thresholds, noise matrix, per-class noise rates) still come from
    confident learning over the same rows, when they carry the top-k columns.

    Args:
        num_classes: C.
        threshold: ``is_label_issue = label_score < threshold``.
    """

    name = "threshold"
    num_passes = 2

    def __init__(self, num_classes: int, *, threshold: float = 0.1):
        self.num_classes, self.threshold = int(num_classes), float(threshold)
        self._found: list[tuple[np.ndarray, np.ndarray]] = []
        self.issues = RankedIssues(np.zeros(0, np.int64), np.zeros(0))
        self.estimate = ConfidentLearning(num_classes, filter_by=None)
        self._estimated = True

    def observe(self, pass_index: int, batch: Batch) -> None:
        """Pass 0: remember the flagged rows (for the ranks); passes 0-1: the noise estimate."""
        if pass_index == 0:
            score = np.asarray(batch["label_score"], dtype=np.float64)
            flagged = score < self.threshold
            self._found.append((np.asarray(batch["idx"], np.int64)[flagged], score[flagged]))
        if "top_labels" in batch:
            self.estimate.observe(pass_index, ProbBatch.from_columns(batch))
        else:
            self._estimated = False

    def end_pass(self, pass_index: int) -> None:
        if pass_index == 0:
            idx = np.concatenate([f[0] for f in self._found] or [np.zeros(0, np.int64)])
            score = np.concatenate([f[1] for f in self._found] or [np.zeros(0)])
            self.issues, self._found = RankedIssues(idx, score), []
        self.estimate.end_pass(pass_index)

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
        return _estimates(self.estimate) if self._estimated else {}


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
        return _estimates(self.cl)


def _estimates(cl: ConfidentLearning) -> dict[str, Any]:
    """JSON-ready estimates: ``class_thresholds`` (None for a class without samples),
    ``estimated_noise_matrix`` (rows = true class, columns = given label),
    ``estimated_noise_rate_by_class`` (wrong fraction of each given class),
    ``estimated_joint_noise_rate`` (1 - trace of the joint), ``confident_joint``."""
    r = cl.result()
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


def build_rule(score: ScoreConfig, num_classes: int) -> LabelRule:
    """The label decision named by ``score.decision``, with its ``score.*`` parameters (what
    ``jumpray score`` / ``clean`` and :func:`jumpray.find_label_issues` both decide with)."""
    if score.decision == "threshold":
        params: dict[str, Any] = {"threshold": score.threshold}
    else:
        params = {
            "filter_by": score.filter_by,
            "rank_by": score.rank_by,
            "min_examples_per_class": score.min_examples_per_class,
            "exclude_predicted_given": score.exclude_predicted_given,
        }
    return make_rule(score.decision, num_classes=num_classes, **params)


def decide_in_memory(rule: LabelRule, batch: Batch) -> dict[str, np.ndarray]:
    """Run every pass of ``rule`` over one in-memory batch, then decide it.

    The label table runs the same passes over ``labels.parquet`` in record batches
    (:func:`jumpray.score.table.decide_table`); a rule's result does not depend on the batching.

    Args:
        batch: the :data:`jumpray.score.table.RULE_COLUMNS` of all N rows.

    Returns:
        The :data:`DECISION_COLUMNS`, (N,) each.
    """
    for p in range(rule.num_passes):
        rule.observe(p, batch)
        rule.end_pass(p)
    return rule.decide(batch)


def decide_arrays(
    given_label: np.ndarray, pred_probs: np.ndarray, score: ScoreConfig
) -> dict[str, np.ndarray]:
    """The decision ``score.*`` makes in ``jumpray score`` / ``clean``, on in-memory arrays.

    The rows are built as the label table holds them (p(given), the top ``score.top_k`` classes
    and their probabilities, idx = row position) and run through :func:`build_rule` and
    :func:`decide_in_memory`: the same rule classes and passes as the table.

    Args:
        given_label: (N,) int in [0, C).
        pred_probs: (N, C) probabilities (any model's; one "snapshot").
        score: the ``score`` section (decision, filter_by, rank_by, threshold, formula, ...).

    Returns:
        :data:`DECISION_COLUMNS`, (N,) each; ``rank`` is 1 for the most suspicious issue, 0 for
        rows that are not issues.

    Raises:
        ValueError: bad arrays, or a ``score.formula`` that needs the network's semantic head.
    """
    from jumpray.score.decide import given_margin, label_score

    given, probs = check_inputs(given_label, pred_probs)
    num_classes = probs.shape[1]
    batch = ProbBatch.from_probs(given, probs, k=min(score.top_k, num_classes))
    cols: dict[str, np.ndarray] = {
        "idx": batch.idx,
        "given_label": batch.given_label,
        "prob_given": batch.prob_given,
        "top_labels": batch.top_labels,
        "top_probs": batch.top_probs,
    }
    if score.decision == "threshold":
        one = {"prob_given": batch.prob_given[None], "margin": given_margin(probs, given)[None]}
        try:
            cols["label_score"] = label_score(one, formula=score.formula, combine=score.combine)
        except KeyError:
            raise ValueError(
                f"score.formula={score.formula} needs the network's semantic head; on arrays of "
                "probabilities use score.formula=prob or margin"
            ) from None
    return decide_in_memory(build_rule(score, num_classes), cols)

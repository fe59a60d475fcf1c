"""Is the model that decided these labels any good? Warnings for ``summary.json`` and the report.

A model that learned little still flags a plausible-looking share of the labels, and writing the
cleaned shards then drops good data without a word (1,000 Fashion-MNIST samples, 2 epochs: test
accuracy 0.18, every label score between 0.085 and 0.125 around the 0.1 threshold, 44 % flagged
at precision 0.45). :func:`model_warnings` looks at the summary numbers only (pure):

- **flagged fraction**: above :data:`MAX_FLAGGED_FRACTION` (0.6). Web-crawled data is 20-40 %
  wrong (README); the demo's sym:0.4 flags about 0.39 and the harshest benchmark noise,
  pairflip:0.45, about 0.49 (README's bench table: recall 0.804 x 0.45 / precision 0.736); the
  issue's undertrained run flagged 0.725 against a true 0.40;
- **test accuracy near chance**: below chance + :data:`CHANCE_MARGIN` (1/4) of the way from
  chance to 1, that is below 0.325 for 10 classes (the useless model above: 0.18; the demo:
  about 0.81);
- **label scores crowd the threshold**: at least :data:`MAX_CROWDED` (80 %) of the scores lie
  within :data:`CROWD_BAND` (0.05) of the decision threshold, so the flags are coin tosses
  (the useless model: all of them; a trained model's scores pile up near 0 and 1);
- **empty noise-matrix support**: no sample has a confident prediction (``score.confident_prob``),
  or at least half of the classes have none, so the estimated noise matrix says nothing. This
  reads the confident-prediction counts whatever the decision: confident learning's own joint
  always has support (its per-class thresholds follow the model down to chance).

Thresholds were set from the two runs above: each fires on the useless run's numbers and none
on the demo's, with a margin on both sides; they only warn, never fail.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "model_warnings",
    "MAX_FLAGGED_FRACTION",
    "CHANCE_MARGIN",
    "CROWD_BAND",
    "MAX_CROWDED",
]

MAX_FLAGGED_FRACTION = 0.6
CHANCE_MARGIN = 0.25
CROWD_BAND = 0.05
MAX_CROWDED = 0.8


def _crowded_fraction(hist: Mapping[str, Sequence[float]], threshold: float) -> float:
    """Fraction of the label scores within :data:`CROWD_BAND` of ``threshold`` (bins are taken
    as uniformly filled, so a bin half inside the band counts half)."""
    edges = np.asarray(hist.get("edges", []), np.float64)
    counts = np.asarray(hist.get("all", []), np.float64)
    total = counts.sum()
    if edges.size != counts.size + 1 or total <= 0:
        return 0.0
    lo, hi = threshold - CROWD_BAND, threshold + CROWD_BAND
    inside = np.clip(np.minimum(edges[1:], hi) - np.maximum(edges[:-1], lo), 0.0, None)
    share = inside / np.maximum(edges[1:] - edges[:-1], 1e-12)
    return float((counts * share).sum() / total)


def model_warnings(
    summary: Mapping[str, Any],
    histograms: Mapping[str, Sequence[float]],
    *,
    num_classes: int,
    threshold: float,
    support: Sequence[int] | None = None,
) -> list[str]:
    """Plain-sentence warnings about the model behind the decisions (module docstring).

    Args:
        summary: summary.json's numbers (``num_samples``, ``estimated_noise_rate``,
            ``noise_matrix_support``; ``test_accuracy`` when known).
        histograms: :meth:`jumpray.score.summary.LabelStats.histograms` (``edges``, ``all``).
        num_classes: C.
        threshold: the decision threshold on the label score.
        support: confident predictions per class (:class:`jumpray.score.summary.LabelStats`'s
            ``noise_matrix_support``); None = the summary's.

    Returns:
        One sentence per finding; empty when nothing looks wrong.
    """
    found: list[str] = []
    if not summary.get("num_samples"):
        return found
    flagged = float(summary.get("estimated_noise_rate", 0.0))
    if flagged > MAX_FLAGGED_FRACTION:
        found.append(
            f"{flagged:.1%} of the labels are flagged as wrong: more than "
            f"{MAX_FLAGGED_FRACTION:.0%} is not plausible for a usable dataset; the model has "
            "probably not learned enough (train longer, or check the data)"
        )
    accuracy = summary.get("test_accuracy")
    chance = 1.0 / max(num_classes, 1)
    floor = chance + CHANCE_MARGIN * (1.0 - chance)
    if accuracy is not None and float(accuracy) < floor:
        found.append(
            f"test accuracy {float(accuracy):.3f} is near chance ({chance:.3f} for "
            f"{num_classes} classes; below {floor:.3f}): the decisions are not trustworthy"
        )
    crowded = _crowded_fraction(histograms, threshold)
    if crowded >= MAX_CROWDED:
        found.append(
            f"{crowded:.0%} of the label scores lie within {CROWD_BAND:g} of the threshold "
            f"{threshold:g}: the model barely separates right from wrong labels, so the flags "
            "are close to coin tosses"
        )
    if support is None:
        support = summary.get("noise_matrix_support")
    support = [int(v) for v in support or []]
    if support and (sum(support) == 0 or sum(1 for v in support if v == 0) >= len(support) / 2):
        empty = sum(1 for v in support if v == 0)
        found.append(
            f"the model is confident about no sample of {empty} of the {len(support)} predicted "
            "classes: the estimated noise matrix has (almost) no support"
        )
    return found

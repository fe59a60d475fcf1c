"""Pure decisions: formulas, combiners, the relabel rule and the noise matrix, on hand-made numbers."""

from __future__ import annotations

import math
import typing

import numpy as np
import pytest

from jumpray.config import ScoreConfig
from jumpray.errors import ConfigError
from jumpray.score.decide import (
    COMBINERS,
    SCORE_FORMULAS,
    Decision,
    label_score,
    noise_matrix_counts,
    normalize_rows,
    relabel_decision,
)

# Two snapshots (rows) x three samples (columns).
PS = {
    "prob_given": np.array([[0.9, 0.2, 0.6], [0.7, 0.4, 0.3]]),
    "semantic_prob": np.array([[0.5, 0.0, 1.0], [0.3, 0.2, 0.1]]),
    "bit_loss_mean": np.array([[0.0, math.log(2.0), 1.0], [0.0, math.log(2.0), 1.0]]),
    "clean": np.array([[1.0, 0.0, 1.0], [1.0, 0.0, 0.0]]),
    "margin": np.array([[0.8, -0.6, 0.2], [0.4, 0.0, -1.0]]),
}


def test_mean_of_each_formula():
    np.testing.assert_allclose(label_score(PS, formula="prob"), [0.8, 0.3, 0.45])
    np.testing.assert_allclose(label_score(PS, formula="semantic"), [0.4, 0.1, 0.55])
    np.testing.assert_allclose(label_score(PS, formula="bitloss"), [1.0, 0.5, math.exp(-1.0)])
    np.testing.assert_allclose(label_score(PS, formula="rule"), [1.0, 0.0, 0.5])
    # margin: (1 + m) / 2 per snapshot: (.9 + .7) / 2, (.2 + .5) / 2, (.6 + 0) / 2
    np.testing.assert_allclose(label_score(PS, formula="margin"), [0.8, 0.35, 0.3])
    # blend = mean over snapshots of (prob + semantic) / 2
    np.testing.assert_allclose(label_score(PS, formula="blend"), [0.6, 0.2, 0.5])


def test_vote_counts_snapshots_scoring_at_least_half():
    # prob: sample 0: 0.9, 0.7 -> 2 of 2; sample 1: 0.2, 0.4 -> 0; sample 2: 0.6, 0.3 -> 1 of 2
    np.testing.assert_allclose(label_score(PS, formula="prob", combine="vote"), [1.0, 0.0, 0.5])
    # a score of exactly 0.5 votes clean
    ps = {"semantic_prob": np.array([[0.5], [0.49], [0.5]])}
    np.testing.assert_allclose(label_score(ps, formula="semantic", combine="vote"), [2 / 3])


def test_single_snapshot_rows_work():
    ps = {"prob_given": np.array([0.25, 0.75])}
    np.testing.assert_allclose(label_score(ps, formula="prob"), [0.25, 0.75])


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(
        ConfigError, match="score.formula.*valid: bitloss, blend, margin, prob, rule, semantic"
    ):
        label_score(PS, formula="nope")
    with pytest.raises(ConfigError, match="score.combine.*valid: mean, vote"):
        label_score(PS, combine="median")


def test_decision_check():
    Decision("prob", "vote", 0.3).check(has_semantic=False)
    with pytest.raises(ConfigError, match="semantic head"):
        Decision("blend").check(has_semantic=False)
    with pytest.raises(ConfigError, match="outside"):
        Decision(threshold=1.5).check()


def test_config_names_match_the_registries():
    formula = ScoreConfig.model_fields["formula"].annotation
    combine = ScoreConfig.model_fields["combine"].annotation
    assert set(typing.get_args(formula)) == set(SCORE_FORMULAS)
    assert set(typing.get_args(combine)) == set(COMBINERS)
    d = ScoreConfig()
    Decision(d.formula, d.combine, d.threshold).check()


def test_relabel_rule():
    given = np.array([0, 1, 2, 3, 0])
    pred = np.array([0, 2, 1, 3, 1])
    prob = np.array([0.99, 0.95, 0.5, 0.99, 0.9])
    issue = np.array([False, True, True, True, True])
    keep, label, relab = relabel_decision(given, pred, prob, issue, relabel=False, min_prob=0.9)
    np.testing.assert_array_equal(keep, [True, False, False, False, False])
    np.testing.assert_array_equal(label, given)
    assert not relab.any()
    keep, label, relab = relabel_decision(given, pred, prob, issue, relabel=True, min_prob=0.9)
    # 1: confident, differs -> relabelled to 2; 2: not confident -> dropped;
    # 3: predicted == given -> nothing to relabel, dropped; 4: prob 0.9 == min -> relabelled to 1
    np.testing.assert_array_equal(keep, [True, True, False, False, True])
    np.testing.assert_array_equal(relab, [False, True, False, False, True])
    np.testing.assert_array_equal(label[keep], [0, 2, 1])


def test_noise_matrix_counts_rows_are_predicted_classes():
    pred = np.array([0, 0, 0, 1, 1, 2])
    given = np.array([0, 0, 1, 1, 1, 0])
    counts = noise_matrix_counts(pred, given, 3)
    np.testing.assert_array_equal(counts, [[2, 1, 0], [0, 2, 0], [1, 0, 0]])
    confident = np.array([True, False, True, True, False, False])
    counts = noise_matrix_counts(pred, given, 3, confident=confident)
    np.testing.assert_array_equal(counts, [[1, 1, 0], [0, 1, 0], [0, 0, 0]])
    np.testing.assert_allclose(normalize_rows(counts), [[0.5, 0.5, 0], [0, 1, 0], [0, 0, 0]])

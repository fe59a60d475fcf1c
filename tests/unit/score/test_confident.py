"""Confident learning from the paper: hand-computed joints, streaming = in memory, and cleanlab."""

from __future__ import annotations

import numpy as np
import pytest

from jumpray.score.confident import (
    FILTERS,
    ConfidentLearning,
    ProbBatch,
    calibrate_joint,
    class_thresholds,
    confident_classes,
    confident_joint,
    estimate_joint,
    estimate_noise_matrix,
    find_label_issues,
    label_quality_scores,
    prune_counts,
    rank_label_issues,
    top_k,
)

# Four classes: class 3 has no sample, class 2 has samples but is never the confident class.
GIVEN = np.array([0, 0, 0, 1, 1, 1, 2, 2])
PROBS = np.array(
    [
        [0.80, 0.10, 0.10, 0.0],  # 0: clean
        [0.60, 0.30, 0.10, 0.0],  # 1: clean
        [0.10, 0.80, 0.10, 0.0],  # 2: given 0, confidently 1
        [0.10, 0.80, 0.10, 0.0],  # 3: clean
        [0.20, 0.70, 0.10, 0.0],  # 4: clean
        [0.70, 0.30, 0.00, 0.0],  # 5: given 1, confidently 0
        [0.55, 0.10, 0.35, 0.0],  # 6: given 2, class 0 and 2 above threshold, 0 wins
        [0.40, 0.35, 0.25, 0.0],  # 7: given 2, no class above its threshold
    ]
)
# t0 = (.8 + .6 + .1) / 3, t1 = (.8 + .7 + .3) / 3, t2 = (.35 + .25) / 2, t3: no sample.
THRESHOLDS = [0.5, 0.6, 0.3, np.inf]
JOINT = [[2, 1, 0, 0], [1, 2, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]]


def test_thresholds_by_hand():
    np.testing.assert_allclose(class_thresholds(GIVEN, PROBS), THRESHOLDS)


def test_confident_joint_by_hand():
    t = class_thresholds(GIVEN, PROBS)
    np.testing.assert_array_equal(confident_classes(GIVEN, PROBS, t), [0, 0, 1, 1, 1, 0, 0, -1])
    cj = confident_joint(GIVEN, PROBS)
    np.testing.assert_array_equal(cj, JOINT)
    assert cj[:, 2].sum() == 0  # never confidently predicted
    assert cj[3].sum() == 0  # no sample


def test_calibration_joint_and_noise_matrix_by_hand():
    counts = np.bincount(GIVEN, minlength=4)  # 3, 3, 2, 0
    cal = calibrate_joint(JOINT, counts)
    # row 2: one counted sample stands for both of its samples
    np.testing.assert_allclose(cal, [[2, 1, 0, 0], [1, 2, 0, 0], [2, 0, 0, 0], [0, 0, 0, 0]])
    q = estimate_joint(JOINT, counts)
    np.testing.assert_allclose(q.sum(), 1.0)
    np.testing.assert_allclose(q[:, 0], [0.25, 0.125, 0.25, 0.0])
    nm = estimate_noise_matrix(q)  # rows = true class
    np.testing.assert_allclose(nm[0], [0.4, 0.2, 0.4, 0.0])
    np.testing.assert_allclose(nm[1], [1 / 3, 2 / 3, 0.0, 0.0])
    np.testing.assert_allclose(nm[2:], 0.0)


def test_a_row_without_counts_is_calibrated_as_clean():
    cal = calibrate_joint([[0, 0], [1, 1]], [5, 2])
    np.testing.assert_allclose(cal, [[5, 0], [1, 1]])


def test_prune_counts_keep_a_sample_per_class():
    counts = np.bincount(GIVEN, minlength=4)
    pc = prune_counts(JOINT, counts)
    # row 2 would prune both of its samples; one is kept
    np.testing.assert_array_equal(pc, [[2, 1, 0, 0], [1, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(pc.sum(axis=1), counts)
    pc0 = prune_counts(JOINT, counts, min_examples_per_class=0)
    np.testing.assert_array_equal(pc0[2], [2, 0, 0, 0])


def test_prune_counts_round_to_the_row_total():
    # 10 samples in 3 cells of 10/3: 4, 3, 3 (largest remainder, ties to the lower column)
    pc = prune_counts([[1, 1, 1], [0, 1, 0], [0, 0, 1]], [10, 1, 1], min_examples_per_class=0)
    np.testing.assert_array_equal(pc[0], [4, 3, 3])


@pytest.mark.parametrize(
    "filter_by,issues",
    [
        ("prune_by_noise_rate", [2, 5, 6]),  # largest margin per cell: 2 (0->1), 5 (1->0), 6 (2->0)
        ("confident_joint", [2, 5, 6]),  # the off-diagonal samples
        ("prune_by_class", [2, 5, 7]),  # lowest p(given) per class: 7 has p2 = .25 < .35
        ("both", [2, 5]),
    ],
)
def test_issues_by_hand(filter_by, issues):
    found = find_label_issues(GIVEN, PROBS, filter_by=filter_by)
    assert np.flatnonzero(found).tolist() == issues


def test_min_examples_per_class_zero_prunes_the_whole_row():
    found = find_label_issues(GIVEN, PROBS, min_examples_per_class=0)
    assert np.flatnonzero(found).tolist() == [2, 5, 6, 7]


def test_ranking_by_hand():
    mask = find_label_issues(GIVEN, PROBS)
    # p(given): 2 -> .1, 5 -> .3, 6 -> .35
    assert rank_label_issues(GIVEN, PROBS, label_issues=mask).tolist() == [2, 5, 6]
    # normalized margin (p_given - max other + 1) / 2: 2 -> .15, 5 -> .3, 6 -> .4
    np.testing.assert_allclose(
        label_quality_scores(GIVEN, PROBS, rank_by="normalized_margin")[[2, 5, 6]],
        [0.15, 0.3, 0.4],
    )
    # all samples: 7 -> .425, 1 -> .65, 4 -> .75, 0 and 3 -> .85 (tie: lower index first)
    order = rank_label_issues(GIVEN, PROBS, rank_by="normalized_margin")
    assert order.tolist() == [2, 5, 6, 7, 1, 4, 0, 3]


def test_streaming_state_by_hand():
    cl = ConfidentLearning(4)
    batch = ProbBatch.from_probs(GIVEN, PROBS, idx=np.arange(100, 108))
    for p in range(cl.num_passes):
        cl.observe(p, batch)
        cl.end_pass(p)
    out = cl.decide(batch)
    assert np.flatnonzero(out["is_label_issue"]).tolist() == [2, 5, 6]
    assert out["rank"].tolist() == [0, 0, 1, 0, 0, 2, 3, 0]
    np.testing.assert_allclose(out["class_threshold"], np.array(THRESHOLDS)[GIVEN])
    assert cl.issues.ordered.tolist() == [102, 105, 106]
    res = cl.result()
    np.testing.assert_allclose(res["noise_rate_by_class"], [1 / 3, 1 / 3, 1.0, 0.0])
    assert res["noise_rate"] == pytest.approx(0.5)


# ---------------------------------------------------------------------------------------------


def _noisy(seed: int, n: int, c: int, noise: float = 0.3):
    rng = np.random.default_rng(seed)
    true = rng.integers(0, c, n)
    given = true.copy()
    flip = rng.random(n) < noise
    given[flip] = (true[flip] + rng.integers(1, c, flip.sum())) % c
    logits = rng.normal(size=(n, c))
    logits[np.arange(n), true] += 2.5
    probs = np.exp(logits)
    return given, probs / probs.sum(axis=1, keepdims=True), true


def _stream(given, probs, *, batches, k=None, seed=0, **kw):
    """Run the streaming form over shuffled batches; returns (mask, rank) in row order."""
    n, c = probs.shape
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    idx = np.arange(n) + 1000  # any unique ids
    parts = [
        ProbBatch.from_probs(given[rows], probs[rows], idx=idx[rows], k=k)
        for rows in np.array_split(perm, batches)
    ]
    cl = ConfidentLearning(c, **kw)
    for p in range(cl.num_passes):
        order = rng.permutation(len(parts))  # every pass may see the batches in another order
        for j in order:
            cl.observe(p, parts[j])
        cl.end_pass(p)
    mask, rank = np.zeros(n, bool), np.zeros(n, np.int64)
    for rows, part in zip(np.array_split(perm, batches), parts, strict=True):
        out = cl.decide(part)
        mask[rows], rank[rows] = out["is_label_issue"], out["rank"]
    return mask, rank


@pytest.mark.parametrize("filter_by", FILTERS)
@pytest.mark.parametrize("batches", [1, 7, 50])
def test_streaming_equals_in_memory(filter_by, batches):
    given, probs, _ = _noisy(1, 600, 6)
    mask, rank = _stream(given, probs, batches=batches, filter_by=filter_by)
    np.testing.assert_array_equal(mask, find_label_issues(given, probs, filter_by=filter_by))
    order = rank_label_issues(given, probs, label_issues=mask)
    assert rank[order].tolist() == list(range(1, int(mask.sum()) + 1))
    assert (rank[~mask] == 0).all()


def test_top_k_is_exact_when_k_covers_the_classes():
    given, probs, _ = _noisy(2, 400, 5)
    full, _ = _stream(given, probs, batches=3)
    wide, _ = _stream(given, probs, batches=3, k=8)
    np.testing.assert_array_equal(full, wide)


def test_top_k_below_c_stays_close_on_peaked_probabilities():
    given, probs, true = _noisy(3, 2000, 20)
    exact = find_label_issues(given, probs)
    approx, _ = _stream(given, probs, batches=4, k=5)
    # thresholds read p(given) only; the joint and the margins see 5 of 20 classes
    assert (exact != approx).mean() < 0.05
    wrong = given != true
    assert (approx & wrong).sum() / approx.sum() >= (exact & wrong).sum() / exact.sum() - 0.02


def test_top_k_sorts_like_argmax():
    labels, probs = top_k(np.array([[0.2, 0.4, 0.4], [0.5, 0.1, 0.4]]), 2)
    assert labels.tolist() == [[1, 2], [0, 2]]
    np.testing.assert_allclose(probs, [[0.4, 0.4], [0.5, 0.4]])


def test_exclude_predicted_given():
    given, probs, _ = _noisy(4, 800, 4, noise=0.45)
    on = find_label_issues(given, probs)
    off = find_label_issues(given, probs, exclude_predicted_given=False)
    assert not (on & (probs.argmax(axis=1) == given)).any()
    assert (on <= off).all() and off.sum() >= on.sum()


def test_empty_input():
    given = np.zeros(0, np.int64)
    assert find_label_issues(given, np.zeros((0, 3))).shape == (0,)
    np.testing.assert_array_equal(class_thresholds(given, np.zeros((0, 3))), [np.inf] * 3)


@pytest.mark.parametrize(
    "given,probs,match",
    [
        (np.array([0, 1]), np.array([0.5, 0.5]), "pred_probs must be"),
        (np.array([0, 1, 0]), np.full((2, 2), 0.5), "given_label must be"),
        (np.array([0, 2]), np.full((2, 2), 0.5), r"values must lie in \[0, 2\)"),
        (np.array([0.0, 1.0]), np.full((2, 2), 0.5), "integers"),
        (np.array([0, 1]), np.array([[0.5, np.nan], [0.5, 0.5]]), "finite probabilities"),
    ],
)
def test_bad_inputs_are_named(given, probs, match):
    with pytest.raises(ValueError, match=match):
        find_label_issues(given, probs)


def test_unknown_names_list_the_choices():
    with pytest.raises(ValueError, match="prune_by_noise_rate, prune_by_class, both"):
        find_label_issues(GIVEN, PROBS, filter_by="pbnr")
    with pytest.raises(ValueError, match="self_confidence, normalized_margin"):
        rank_label_issues(GIVEN, PROBS, rank_by="entropy")


# ---------------------------------------------------------------------------------------------
# cleanlab (AGPL, a test-only cross-check): skipped when it is not installed


@pytest.mark.parametrize("seed,c", [(0, 3), (1, 5), (2, 10), (3, 20)])
def test_agrees_with_cleanlab(seed, c):
    count = pytest.importorskip("cleanlab.count")
    cl_filter = pytest.importorskip("cleanlab.filter")
    cl_rank = pytest.importorskip("cleanlab.rank")
    given, probs, _ = _noisy(seed, 1500, c, noise=0.35)
    cj = confident_joint(given, probs)
    # Every class has a diagonal count here, so cleanlab's raise-the-diagonal-to-1 is a no-op.
    assert np.diagonal(cj).min() >= 1
    np.testing.assert_array_equal(cj, count.compute_confident_joint(given, probs, calibrate=False))
    np.testing.assert_allclose(
        class_thresholds(given, probs), count.get_confident_thresholds(given, probs)
    )
    # The calibrated, rounded joint: equal up to the rounding of tied remainders.
    counts = np.bincount(given, minlength=c)
    ours = prune_counts(cj, counts)
    theirs = count.compute_confident_joint(given, probs, calibrate=True)
    assert np.abs(ours - theirs).max() <= 1
    np.testing.assert_array_equal(ours.sum(axis=1), theirs.sum(axis=1))
    # Given the same counts, the same samples (all pruning filters), and the same ranking.
    for filter_by in ("prune_by_noise_rate", "prune_by_class", "both"):
        mask = find_label_issues(given, probs, filter_by=filter_by)
        ref = cl_filter.find_label_issues(
            given, probs, filter_by=filter_by, confident_joint=ours, n_jobs=1
        )
        np.testing.assert_array_equal(mask, ref, err_msg=filter_by)
    mask = find_label_issues(given, probs, filter_by="confident_joint")
    ref = cl_filter.find_label_issues(given, probs, filter_by="confident_learning", n_jobs=1)
    np.testing.assert_array_equal(mask, ref)
    for rank_by in ("self_confidence", "normalized_margin"):
        np.testing.assert_allclose(
            label_quality_scores(given, probs, rank_by=rank_by),
            cl_rank.get_label_quality_scores(given, probs, method=rank_by),
        )
        np.testing.assert_array_equal(
            rank_label_issues(given, probs, label_issues=mask, rank_by=rank_by),
            cl_rank.order_label_issues(mask, labels=given, pred_probs=probs, rank_by=rank_by),
        )


def test_close_to_cleanlab_with_its_own_counts():
    cl_filter = pytest.importorskip("cleanlab.filter")
    given, probs, _ = _noisy(5, 2000, 10, noise=0.3)
    mask = find_label_issues(given, probs)
    ref = cl_filter.find_label_issues(given, probs, filter_by="prune_by_noise_rate", n_jobs=1)
    # Only the rounding of tied calibrated counts differs (a cell off by one).
    assert (mask != ref).sum() <= 10

"""Rows from the training history (score.source=training) and blended with snapshots (both)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from jumpray.core import SampleHistory
from jumpray.score.sources import blend_scores, history_columns, training_scores


def _history() -> SampleHistory:
    """Samples 0..2 (C = 3), two epochs each; sample 3 never seen."""
    h = SampleHistory(4, 3)
    epochs = [
        torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.5, 0.1, 0.4]]),
        torch.tensor([[0.5, 0.4, 0.1], [0.3, 0.4, 0.3], [0.3, 0.1, 0.6]]),
    ]
    given = torch.tensor([0, 0, 2])
    for epoch, probs in enumerate(epochs):
        h.record(torch.arange(3), given, probs, epoch=epoch)
        h.commit(*h.pending())
    h.count_flags(torch.arange(3), torch.tensor([True, False, True]))
    return h


def test_training_scores_by_hand():
    hist = history_columns(_history(), np.array([2, 0, 1]), k=3)
    batch = {"given_label": np.array([2, 0, 0])}
    out = training_scores(batch, hist, formula="prob")
    # means: sample 2 [.4, .1, .5], sample 0 [.6, .3, .1], sample 1 [.2, .5, .3]
    np.testing.assert_allclose(out["prob_given"], [0.5, 0.6, 0.2], rtol=1e-6)
    np.testing.assert_array_equal(out["predicted_label"], [2, 0, 1])
    np.testing.assert_allclose(out["pred_prob"], [0.5, 0.6, 0.5], rtol=1e-6)
    np.testing.assert_allclose(out["margin"], [0.1, 0.3, -0.3], rtol=1e-5)
    np.testing.assert_allclose(out["label_score"], out["prob_given"])
    np.testing.assert_allclose(out["train_clean_rate"], [1.0, 1.0, 0.0])
    assert out["top_labels"].shape == (3, 3) and (out["votes"] == -1).all()
    margin = training_scores(batch, hist, formula="margin")["label_score"]
    np.testing.assert_allclose(margin, [0.55, 0.65, 0.35], rtol=1e-5)


def test_blend_is_the_average_of_both_sources():
    hist = history_columns(_history(), np.array([0, 1]), k=3)
    snap = {
        "given_label": np.array([0, 0]),
        "prob_given": np.array([0.2, 0.8]),
        "top_labels": np.array([[1, 0, 2], [0, 2, 1]]),
        "top_probs": np.array([[0.7, 0.2, 0.1], [0.8, 0.15, 0.05]], np.float32),
        "label_score": np.array([0.0, 0.0]),
        "semantic_prob": np.array([0.3, 0.4]),
    }
    out = blend_scores(snap, hist, formula="prob")
    # sample 0: (.6+.2)/2, (.3+.7)/2, (.1+.1)/2 = [.4, .5, .1]; sample 1: [.5, .275, .225]
    np.testing.assert_allclose(out["prob_given"], [0.4, 0.5], rtol=1e-6)
    np.testing.assert_array_equal(out["top_labels"], [[1, 0, 2], [0, 1, 2]])
    np.testing.assert_allclose(out["top_probs"], [[0.5, 0.4, 0.1], [0.5, 0.275, 0.225]], rtol=1e-5)
    np.testing.assert_array_equal(out["predicted_label"], [1, 0])
    np.testing.assert_allclose(out["label_score"], [0.4, 0.5], rtol=1e-6)
    np.testing.assert_allclose(out["semantic_prob"], [0.3, 0.4])  # untouched
    kept = blend_scores(snap, hist, formula="semantic")
    np.testing.assert_allclose(kept["label_score"], [0.0, 0.0])


def test_rows_without_history_are_refused():
    with pytest.raises(ValueError, match="idx 3 has no training history"):
        history_columns(_history(), np.array([0, 3]), k=3)
    with pytest.raises(ValueError, match="outside the training history"):
        history_columns(_history(), np.array([9]), k=3)


def test_a_wider_table_pads_with_empty_slots():
    hist = history_columns(_history(), np.array([0]), k=5)
    assert hist["top_labels"].tolist() == [[0, 1, 2, -1, -1]]


def test_auto_reads_the_history_only_for_the_shards_it_was_recorded_on(tmp_path):
    from jumpray.score.sources import resolve_source

    train, other = tmp_path / "train", tmp_path / "other"
    train.mkdir()
    other.mkdir()
    link = tmp_path / "link"
    link.symlink_to(train)
    assert resolve_source("auto", has_history=True, trained_on=str(train), scored=link) == "both"
    assert resolve_source("auto", has_history=True, trained_on=str(train), scored=other) == (
        "snapshots"
    )
    # CE / Co-teaching checkpoints have no history; older checkpoints do not name their shards
    assert resolve_source("auto", has_history=False, trained_on=str(train), scored=train) == (
        "snapshots"
    )
    assert resolve_source("auto", has_history=True, trained_on=None, scored=train) == "snapshots"
    # a named source is kept as it is (the scoring pass then says what is missing)
    for name in ("snapshots", "training", "both"):
        assert resolve_source(name, has_history=False, trained_on=None, scored=other) == name

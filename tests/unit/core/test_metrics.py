"""Accuracy and selection/detection precision-recall on hand examples."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from jumpray.core import accuracy, detection_metrics, selection_metrics

GIVEN = [0, 1, 2, 3, 4, 5]
CLEAN = [0, 1, 2, 0, 0, 5]  # samples 3 and 4 carry wrong labels


def test_accuracy_labels_scores_and_tensors():
    assert accuracy([1, 2, 3, 4], [1, 2, 0, 4]) == 0.75
    scores = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    assert accuracy(scores, torch.tensor([0, 1, 1])) == pytest.approx(2 / 3)
    assert accuracy(np.array([], dtype=int), np.array([], dtype=int)) == 0.0
    with pytest.raises(ValueError, match="must match"):
        accuracy([1, 2], [1])


def test_selection_metrics_hand_example():
    selected = [True, True, False, True, False, True]  # 3 correct + 1 wrong selected
    m = selection_metrics(selected, GIVEN, CLEAN)
    assert m["precision"] == 0.75
    assert m["recall"] == 0.75  # 3 of the 4 correct labels
    assert m["f1"] == pytest.approx(0.75)
    assert m["selected_fraction"] == pytest.approx(4 / 6)
    assert m["num_selected"] == 4
    t = selection_metrics(torch.tensor(selected), torch.tensor(GIVEN), torch.tensor(CLEAN))
    assert t == m


def test_selection_metrics_empty_selection_is_zero_not_crash():
    m = selection_metrics(np.zeros(6, dtype=bool), GIVEN, CLEAN)
    assert m == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "selected_fraction": 0.0,
        "num_selected": 0,
    }


def test_detection_metrics_hand_example():
    flagged = [False, False, True, True, False, False]  # catches 1 of 2 wrong labels, 1 false alarm
    m = detection_metrics(flagged, GIVEN, CLEAN)
    assert m["precision"] == 0.5 and m["recall"] == 0.5 and m["f1"] == pytest.approx(0.5)
    assert m["num_flagged"] == 2 and m["num_noisy"] == 2
    assert m["noise_rate"] == pytest.approx(1 / 3) and m["flagged_fraction"] == pytest.approx(1 / 3)
    none = detection_metrics([False] * 6, GIVEN, CLEAN)
    assert (none["precision"], none["recall"], none["f1"]) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="equal length"):
        detection_metrics([True], GIVEN, CLEAN)

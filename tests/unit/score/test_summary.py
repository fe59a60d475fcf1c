"""LabelStats: streamed counts equal the numbers computed from all rows at once."""

from __future__ import annotations

import numpy as np

from jumpray.core import detection_metrics
from jumpray.score.summary import LabelStats


def rows(n: int = 10, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    clean = rng.integers(0, 3, n)
    given = clean.copy()
    given[::3] = (given[::3] + 1) % 3
    score = rng.random(n)
    return {
        "key": np.array([f"s{i:03d}" for i in range(n)], dtype=object),
        "shard": np.array(["t-000000.tar"] * n, dtype=object),
        "idx": np.arange(n, dtype=np.int64),
        "given_label": given,
        "clean_label": clean,
        "predicted_label": clean,
        "label_score": score,
        "is_label_issue": score < 0.5,
        "pred_prob": np.where(np.arange(n) % 2 == 0, 0.9, 0.5),
    }


def split(data: dict, at: int) -> tuple[dict, dict]:
    return {k: v[:at] for k, v in data.items()}, {k: v[at:] for k, v in data.items()}


def test_hand_example():
    data = {
        "given_label": np.array([0, 0, 1, 1]),
        "clean_label": np.array([0, 1, 1, -1]),  # the last one unknown
        "predicted_label": np.array([0, 1, 1, 0]),
        "label_score": np.array([0.9, 0.1, 0.45, 0.2]),
        "is_label_issue": np.array([False, True, True, True]),
        "pred_prob": np.array([0.9, 0.95, 0.5, 0.99]),
    }
    stats = LabelStats(2, bins=2, gallery_size=0, confident_prob=0.8)
    stats.update(data)
    r = stats.result()
    assert r["num_samples"] == 4 and r["num_label_issues"] == 3
    assert r["estimated_noise_rate"] == 0.75
    # known rows: flagged 2 (idx 1, 2), truly wrong 1 (idx 1), hit 1
    assert (r["precision"], r["recall"]) == (0.5, 1.0)
    assert abs(r["f1"] - 2 / 3) < 1e-12
    assert r["num_true_label_issues"] == 1 and abs(r["true_noise_rate"] - 1 / 3) < 1e-12
    # confident (>= 0.8): (pred 0, given 0), (pred 1, given 0), (pred 0, given 1)
    assert r["estimated_noise_matrix"] == [[0.5, 0.5], [1.0, 0.0]]
    assert r["noise_matrix_support"] == [2, 1]
    assert r["flag_rate_by_class"] == [0.5, 1.0]
    assert r["true_noise_matrix"] == [[1.0, 0.0], [0.5, 0.5]]
    assert r["predicted_label_accuracy_on_wrong"] == 1.0
    h = stats.histograms()
    assert h["edges"] == [0.0, 0.5, 1.0]
    assert h["all"] == [3, 1] and h["clean"] == [1, 1] and h["wrong"] == [1, 0]


def test_streaming_equals_all_at_once():
    data = rows(50)
    whole = LabelStats(3, gallery_size=7)
    whole.update(data)
    streamed = LabelStats(3, gallery_size=7)
    for part in split(data, 13):
        streamed.update(part)
    assert streamed.result() == whole.result()
    assert streamed.histograms() == whole.histograms()
    expected = detection_metrics(data["is_label_issue"], data["given_label"], data["clean_label"])
    r = streamed.result()
    for k in ("precision", "recall", "f1"):
        assert abs(r[k] - expected[k]) < 1e-12


def test_gallery_keeps_the_lowest_scores_across_batches():
    data = rows(40, seed=1)
    stats = LabelStats(3, gallery_size=5)
    for start in range(0, 40, 9):
        stats.update({k: v[start : start + 9] for k, v in data.items()})
    gallery = stats.gallery()
    lowest = np.argsort(data["label_score"])[:5]
    assert [g["idx"] for g in gallery] == lowest.tolist()
    assert gallery[0]["key"] == data["key"][lowest[0]]
    assert isinstance(gallery[0]["idx"], int)


def test_without_clean_labels():
    data = rows(6)
    del data["clean_label"]
    stats = LabelStats(3)
    stats.update(data)
    r = stats.result()
    assert "precision" not in r and not stats.has_truth
    assert set(stats.histograms()) == {"edges", "all"}

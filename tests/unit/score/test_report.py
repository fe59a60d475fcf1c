"""report.html and its PNGs from hand-made statistics (no Ray)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from jumpray.score.report import write_report


def test_report_has_the_numbers_the_plots_and_the_config(tmp_path):
    summary = {
        "shards": "data/<train>",
        "num_samples": 4,
        "num_label_issues": 2,
        "num_quarantined": 1,
        "estimated_noise_rate": 0.5,
        "precision": 0.5,
        "recall": 1.0,
        "f1": 2 / 3,
        "test_accuracy": 0.875,
        "num_classes": 2,
        "class_names": ["cat & co", "dog"],
        "estimated_noise_matrix": [[0.75, 0.25], [0.0, 1.0]],
        "true_noise_matrix": [[1.0, 0.0], [0.5, 0.5]],
        "flag_rate_by_class": [0.5, 0.5],
        "decision": {
            "formula": "blend",
            "combine": "mean",
            "threshold": 0.4,
            "snapshot_epochs": [3, 4],
        },
    }
    hist = {"edges": [0.0, 0.5, 1.0], "all": [3, 1], "clean": [1, 1], "wrong": [2, 0]}
    history = [{"epoch": 0.0, "selected_fraction": 1.0}, {"epoch": 1.0, "selected_fraction": 0.6}]
    rows = [
        {
            "key": "a",
            "shard": "t.tar",
            "idx": 0,
            "given_label": 0,
            "predicted_label": 1,
            "label_score": 0.01,
        },
        {
            "key": "b",
            "shard": "t.tar",
            "idx": 1,
            "given_label": 1,
            "predicted_label": 0,
            "label_score": 0.2,
        },
    ]
    images = [np.full((1, 8, 8), 200, np.uint8), None]
    path = write_report(
        tmp_path,
        summary=summary,
        histograms=hist,
        history=history,
        gallery_rows=rows,
        gallery_images=images,
        config={"score": {"threshold": 0.4}},
    )
    page = path.read_text()
    assert path.name == "report.html"
    assert "<td>0.6667</td>" in page and "<td>0.8750</td>" in page  # F1, test accuracy
    assert "data/&lt;train&gt;" in page and "cat &amp; co" in page  # escaped
    assert "label_score &lt; 0.4" in page and "threshold: 0.4" in page  # decision, config
    for name in ("selection_curves", "label_scores", "noise_matrix", "gallery"):
        png = tmp_path / f"report_{name}.png"
        assert f'src="{png.name}"' in page
        with Image.open(png) as im:
            assert im.format == "PNG" and im.width >= 400


def test_report_of_a_confident_learning_decision(tmp_path):
    summary = {
        "shards": "s",
        "num_samples": 3,
        "num_label_issues": 1,
        "num_quarantined": 0,
        "estimated_noise_rate": 1 / 3,
        "estimated_joint_noise_rate": 0.25,
        "num_classes": 2,
        "class_names": ["a", "b"],
        "estimated_noise_matrix": [[0.8, 0.2], [0.1, 0.9]],
        "estimated_noise_rate_by_class": [0.125, 0.5],
        "noise_matrix_method": "confident_learning",
        "true_noise_matrix": [[1.0, 0.0], [0.0, 1.0]],
        "flag_rate_by_class": [0.0, 0.5],
        "decision": {
            "name": "confident",
            "source": "both",
            "filter_by": "prune_by_noise_rate",
            "rank_by": "self_confidence",
            "class_thresholds": [0.61, None],
            "snapshot_epochs": [6, 7],
        },
    }
    hist = {"edges": [0.0, 0.5, 1.0], "all": [1, 2]}
    write_report(
        tmp_path,
        summary=summary,
        histograms=hist,
        history=[],
        gallery_rows=[],
        gallery_images=[],
        config={},
    )
    page = (tmp_path / "report.html").read_text()
    assert "Confident learning" in page and "prune_by_noise_rate" in page
    assert "a: 0.610, b: -" in page and "training forward" in page
    assert "<th>estimated wrong fraction</th>" in page and "<td>0.500</td>" in page
    assert "<td>0.2500</td>" in page  # the joint's noise rate
    assert (tmp_path / "report_noise_matrix.png").stat().st_size > 1000

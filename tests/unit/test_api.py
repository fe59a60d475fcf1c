"""The Python API without Ray: the decision on arrays equals the label table's, shards from arrays,
the lazy package exports, and the servable model against the scorer (docs/api.md)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import jumpray
from jumpray import api
from jumpray.errors import ConfigError
from jumpray.score.rules import make_rule
from jumpray.score.table import decide_table, labels_schema

_spec = importlib.util.spec_from_file_location(
    "_rules_table", Path(__file__).parent / "score" / "test_rules_table.py"
)
_rules_table = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_rules_table)


def test_package_exports_the_api_lazily():
    assert jumpray.find_label_issues is api.find_label_issues
    assert jumpray.train_model is api.train and jumpray.score_shards is api.score
    assert jumpray.tune_sweep is api.tune and jumpray.clean is api.clean
    assert set(jumpray.__all__) - {"__version__"} <= set(api.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = jumpray.nope


def _table_decision(tmp_path, rows, c, rule):
    """is_label_issue and rank as ``jumpray score`` writes them (idx order)."""
    raw, final = tmp_path / ".raw.parquet", tmp_path / "labels.parquet"
    _rules_table._write_raw(raw, rows, parts=4, k=c)
    schema = labels_schema(has_clean_labels=True, top_k=c)
    decide_table(raw, final, rule, schema=schema, first_pass=0)
    table = pq.read_table(tmp_path / "labels.parquet").sort_by("idx")
    rank = np.asarray(table.column("rank").fill_null(0).to_pylist())
    return np.asarray(table.column("is_label_issue").to_pylist()), rank


@pytest.mark.parametrize(
    "decision,options",
    [
        ("confident", {}),
        ("confident", {"filter_by": "both", "rank_by": "normalized_margin"}),
        ("threshold", {"threshold": 0.2}),
    ],
)
def test_find_label_issues_is_the_label_tables_decision(tmp_path, decision, options):
    n, c = 500, 5
    rows = _rules_table._rows(n, c, k=c, seed=1)
    # The table stores top_probs as float32: give the arrays exactly those values.
    probs = rows["_probs"].astype(np.float32).astype(np.float64)
    order = np.argsort(rows["idx"])  # array row i = the sample with idx i
    given = rows["given_label"][order]
    pred = probs[order]
    pred[np.arange(n), given] = rows["prob_given"][order]
    params = options
    if decision == "confident":
        params = {"filter_by": "prune_by_noise_rate", "rank_by": "self_confidence", **options}
    flags, rank = _table_decision(tmp_path, rows, c, make_rule(decision, num_classes=c, **params))

    got = jumpray.find_label_issues(given, pred, decision=decision, **options)
    assert got.dtype == bool and got.shape == (n,) and got.sum() > 0
    np.testing.assert_array_equal(got, flags)
    ranked = jumpray.rank_label_issues(given, pred, decision=decision, **options)
    np.testing.assert_array_equal(ranked, np.flatnonzero(rank)[np.argsort(rank[rank > 0])])
    assert rank[ranked[0]] == 1


def test_the_default_decision_is_the_configs(tmp_path):
    rows = _rules_table._rows(300, 4, k=4, seed=2)
    given, probs = rows["given_label"], rows["_probs"]
    default = jumpray.find_label_issues(given, probs)
    config = {"score": {"decision": "confident", "filter_by": "prune_by_noise_rate"}}
    np.testing.assert_array_equal(default, jumpray.find_label_issues(given, probs, config=config))
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("score: {decision: threshold, threshold: 0.3}\n")
    by_file = jumpray.find_label_issues(given, probs, config=yaml_file)
    np.testing.assert_array_equal(by_file, probs[np.arange(300), given] < 0.3)


def test_bad_inputs_name_the_argument():
    probs = np.full((3, 2), 0.5)
    with pytest.raises(ValueError, match="given_label must be"):
        jumpray.find_label_issues(np.zeros(2, int), probs)
    with pytest.raises(ValueError, match=r"pred_probs must be \(N, C\)"):
        jumpray.find_label_issues(np.zeros(3, int), np.zeros(3))
    with pytest.raises(ConfigError, match="filter_by"):
        jumpray.find_label_issues(np.zeros(3, int), probs, filter_by="nope")
    with pytest.raises(ValueError, match="semantic head"):
        jumpray.find_label_issues(np.zeros(3, int), probs, decision="threshold", formula="bitloss")
    with pytest.raises(TypeError, match="config must be"):
        jumpray.find_label_issues(np.zeros(3, int), probs, config=3)


def test_keyword_overrides_nest():
    assert api._nested({"train__epochs": 2, "train": {"lr": 0.1}, "seed": 1}) == {
        "train": {"epochs": 2, "lr": 0.1},
        "seed": 1,
    }
    cfg = api._load("smoke", {"train__epochs": 3, "score": {"decision": "threshold"}})
    assert cfg.train.epochs == 3 and cfg.score.decision == "threshold"
    assert cfg.model.semantic_dim == 16  # from the shipped smoke config


def test_write_shards_from_arrays_and_a_folder(tmp_path):
    from PIL import Image

    from jumpray.data.scan import scan_folder

    images = np.random.default_rng(0).integers(0, 255, (12, 8, 8), dtype=np.uint8)
    labels = np.arange(12) % 3
    index = jumpray.write_shards(tmp_path / "a", images, labels, class_names=["x", "y", "z"])
    assert index.num_samples == 12 and index.class_names == ["x", "y", "z"]
    for i in range(4):
        folder = tmp_path / "imgs" / ("cat" if i % 2 else "dog")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(folder / f"{i}.png")
    index = jumpray.write_shards(tmp_path / "b", folder=tmp_path / "imgs")
    assert index.num_samples == 4 and index.class_names == ["cat", "dog"]
    assert scan_folder(tmp_path / "b").num_samples == 4
    with pytest.raises(ValueError, match="exactly one source"):
        jumpray.write_shards(tmp_path / "c")
    with pytest.raises(ValueError, match="needs labels"):
        jumpray.write_shards(tmp_path / "c", images)


def test_the_servable_model_gives_the_scorers_probabilities():
    import torch

    from jumpray.models import build_model
    from jumpray.models.serving import build_probability_model, example_images
    from jumpray.score.scorer import Scorer, ScorerSpec

    model_args = {"backbone": "cnn28", "num_classes": 3, "num_bits": 4, "in_channels": 1}
    data = {"channels": 1, "image_hw": [12, 14], "mean": [0.4], "std": [0.3]}
    torch.manual_seed(0)
    weights = build_model(**model_args).state_dict()
    model = build_probability_model(
        weights, model_args=model_args, data=data, temperature=2.0, class_names=["a", "b", "c"]
    )
    spec = ScorerSpec(
        model_args=model_args, image_size=12, channels=1, mean=(0.4,), std=(0.3,), temperature=2.0
    )
    images = np.random.default_rng(0).integers(0, 255, (5, 1, 12, 14), dtype=np.uint8)
    expected = Scorer([weights], spec, device="cpu").score_snapshots(images, np.zeros(5)).probs[0]
    with torch.no_grad():
        got = model(torch.from_numpy(images)).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert model.image_size == 12 and model.num_classes == 3
    assert example_images(model).shape == (2, 1, 12, 12)

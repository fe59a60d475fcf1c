"""Decision rules by name, and their passes over a real labels.parquet (no Ray)."""

from __future__ import annotations

import typing

import numpy as np
import pyarrow.parquet as pq
import pytest

from jumpray.config import ScoreConfig
from jumpray.errors import ConfigError
from jumpray.score.confident import (
    FILTERS,
    RANKINGS,
    class_thresholds,
    find_label_issues,
    label_quality_scores,
    rank_label_issues,
    top_k,
)
from jumpray.score.rules import DECISION_RULES, ThresholdRule, make_rule
from jumpray.score.summary import LabelStats
from jumpray.score.table import decide_table, iter_table, labels_schema, to_table


def _literal(name: str) -> set[str]:
    return set(typing.get_args(ScoreConfig.model_fields[name].annotation))


def test_config_choices_are_the_registries():
    assert _literal("decision") == set(DECISION_RULES)
    assert _literal("filter_by") == set(FILTERS)
    assert _literal("rank_by") == set(RANKINGS)


def test_unknown_rule_lists_the_choices():
    with pytest.raises(ConfigError, match="valid: confident, threshold"):
        make_rule("cleanlab", num_classes=3)
    with pytest.raises(ConfigError, match="score.filter_by="):
        make_rule("confident", num_classes=3, filter_by="nope")


def test_threshold_rule_flags_and_ranks_by_score():
    rule = make_rule("threshold", num_classes=2, threshold=0.3)
    assert isinstance(rule, ThresholdRule) and rule.num_passes == 1
    a = {"idx": np.array([5, 6, 7]), "label_score": np.array([0.2, 0.9, 0.05])}
    b = {"idx": np.array([1, 2]), "label_score": np.array([0.2, 0.31])}
    for batch in (a, b):
        rule.observe(0, batch)
    rule.end_pass(0)
    # issues: 7 (.05), then 1 and 5 (.2, tie: lower idx first)
    np.testing.assert_array_equal(rule.decide(a)["rank"], [3, 0, 1])
    np.testing.assert_array_equal(rule.decide(b)["rank"], [2, 0])
    np.testing.assert_array_equal(rule.decide(a)["is_label_issue"], [True, False, True])
    np.testing.assert_array_equal(rule.decide(b)["class_threshold"], [0.3, 0.3])


def _rows(n: int, c: int, k: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    clean = rng.integers(0, c, n)
    given = np.where(rng.random(n) < 0.3, (clean + 1) % c, clean)
    logits = rng.normal(size=(n, c))
    logits[np.arange(n), clean] += 2.0
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels, top = top_k(probs, k)
    p_given = probs[np.arange(n), given]
    return {
        "key": np.array([f"s{i:05d}" for i in range(n)], dtype=object),
        "shard": np.array([f"t-{i % 3:06d}.tar" for i in range(n)], dtype=object),
        "idx": rng.permutation(n).astype(np.int64),
        "given_label": given,
        "clean_label": np.where(np.arange(n) % 7 == 0, -1, clean),
        "predicted_label": labels[:, 0],
        "label_score": p_given,
        "is_label_issue": p_given < 0.1,
        "prob_given": p_given,
        "pred_prob": top[:, 0],
        "margin": p_given - np.where(labels[:, 0] == given, top[:, 1], top[:, 0]),
        "bit_loss_mean": np.full(n, np.nan),
        "bit_loss_var": np.full(n, np.nan),
        "semantic_prob": np.full(n, np.nan),
        "votes": np.ones(n, np.int64),
        "train_clean_rate": np.full(n, np.nan),
        "top_labels": labels,
        "top_probs": top.astype(np.float32),
        "_probs": probs,
    }


def _write_raw(path, rows, *, parts: int, k: int):
    schema = labels_schema(has_clean_labels=True, top_k=k, decided=False)
    with pq.ParquetWriter(path, schema) as writer:
        for chunk in np.array_split(np.arange(len(rows["idx"])), parts):
            writer.write_table(to_table({n: v[chunk] for n, v in rows.items()}, schema))


@pytest.mark.parametrize("filter_by", FILTERS)
def test_confident_rule_over_a_parquet_table_equals_the_array_api(tmp_path, filter_by):
    n, c = 700, 5
    rows = _rows(n, c, k=c)
    raw, final = tmp_path / ".raw.parquet", tmp_path / "labels.parquet"
    _write_raw(raw, rows, parts=6, k=c)
    stats = LabelStats(c, gallery_size=4)
    # Every pass over the file (first_pass=0), in 6 row groups.
    written = decide_table(
        raw,
        final,
        make_rule("confident", num_classes=c, filter_by=filter_by),
        schema=labels_schema(has_clean_labels=True, top_k=c),
        stats=stats,
        first_pass=0,
    )
    assert written == n and sorted(p.name for p in tmp_path.iterdir()) == [
        ".raw.parquet",
        "labels.parquet",
    ]
    table = pq.read_table(final)
    got = {
        name: np.asarray(table.column(name).to_pylist(), dtype=object)
        for name in table.schema.names
    }
    # Row order is the raw table's; the probabilities were stored as float32.
    probs = rows["_probs"].astype(np.float32).astype(np.float64)
    given = rows["given_label"]
    expected = find_label_issues(given, probs, filter_by=filter_by)
    np.testing.assert_array_equal(got["is_label_issue"].astype(bool), expected)
    ranked = rank_label_issues(given, probs, label_issues=expected)
    assert got["rank"][ranked].tolist() == list(range(1, int(expected.sum()) + 1))
    assert all(r is None for r in got["rank"][~expected])
    np.testing.assert_allclose(
        got["class_threshold"].astype(float), class_thresholds(given, probs)[given], rtol=1e-6
    )
    np.testing.assert_allclose(
        got["label_score"].astype(float), label_quality_scores(given, probs), rtol=1e-6
    )
    for name in ("key", "idx", "given_label", "predicted_label", "clean_label"):
        assert name in table.schema.names
    assert str(table.schema.field("rank").type) == "int64"
    assert table.column("clean_label").null_count == int((rows["clean_label"] < 0).sum())
    r = stats.result()
    assert r["num_samples"] == n and r["num_label_issues"] == int(expected.sum())
    # The gallery is the top of the ranking.
    top_rows = ranked[:4]
    assert [g["idx"] for g in stats.gallery()] == rows["idx"][top_rows].tolist()


def test_iter_table_reads_lists_and_nulls(tmp_path):
    rows = _rows(10, 3, k=2)
    _write_raw(tmp_path / "r.parquet", rows, parts=2, k=2)
    batches = list(iter_table(tmp_path / "r.parquet", columns=["idx", "top_labels", "clean_label"]))
    assert len(batches) == 1 and set(batches[0]) == {"idx", "top_labels", "clean_label"}
    np.testing.assert_array_equal(batches[0]["top_labels"], rows["top_labels"])
    np.testing.assert_array_equal(batches[0]["clean_label"], rows["clean_label"])


def test_a_failed_final_write_leaves_no_table(tmp_path):
    rows = _rows(20, 3, k=3)
    _write_raw(tmp_path / "r.parquet", rows, parts=1, k=3)

    class Broken(ThresholdRule):
        def decide(self, batch):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        decide_table(
            tmp_path / "r.parquet",
            tmp_path / "labels.parquet",
            Broken(3),
            schema=labels_schema(has_clean_labels=True, top_k=3),
            first_pass=0,
        )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.parquet"]

"""The noisy held-out split, and the sweep outputs built from trial records."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import yaml

from jumpray.config import load_config
from jumpray.tune.holdout import stratified_holdout, usable_labels
from jumpray.tune.report import (
    best_config,
    best_record,
    plot_sweep,
    rank_correlation,
    sweep_numbers,
    write_best_yaml,
    write_trials_csv,
)
from jumpray.tune.space import default_space


def test_holdout_is_stratified_seeded_and_keeps_every_class_in_training():
    rng = np.random.default_rng(1)
    given = np.repeat(np.arange(5), [100, 50, 20, 2, 1])
    idx = rng.permutation(1000)[: len(given)]
    held = stratified_holdout(idx, given, fraction=0.1, seed=0)
    per_class = {c: int(np.isin(idx[given == c], held).sum()) for c in range(5)}
    assert per_class == {0: 10, 1: 5, 2: 2, 3: 1, 4: 0}  # >= 1 when a class has 2; 0 of 1
    assert np.array_equal(held, np.sort(held)) and set(held) <= set(idx)
    assert np.array_equal(held, stratified_holdout(idx, given, fraction=0.1, seed=0))
    assert not np.array_equal(held, stratified_holdout(idx, given, fraction=0.1, seed=1))
    # The order the samples come in does not change the split.
    order = rng.permutation(len(idx))
    assert np.array_equal(held, stratified_holdout(idx[order], given[order], fraction=0.1, seed=0))


def test_usable_labels_come_from_the_scan(tmp_path):
    from jumpray.data.convert import write_arrays
    from jumpray.data.scan import scan_folder

    images = np.zeros((30, 8, 8), np.uint8)
    labels = np.arange(30) % 3
    write_arrays(tmp_path / "s", images, labels, num_classes=3, max_samples_per_shard=12)
    idx, given = usable_labels(scan_folder(tmp_path / "s"))
    assert sorted(idx.tolist()) == list(range(30))
    assert np.array_equal(given[np.argsort(idx)], labels)


def _records():
    def rec(tid, status, j, k, val, test, epochs):
        return {
            "trial_id": tid,
            "status": status,
            "params": {"jump.interval": j, "model.semantic_dim": k, "train.lr": 0.03},
            "metrics": {"val_accuracy": val, "test_accuracy": test, "epochs_done": epochs},
        }

    return [
        rec("t0", "finished", 1, 16, 0.50, 0.80, 3),
        rec("t1", "finished", 2, 32, 0.55, 0.82, 3),
        rec("t2", "stopped_early", 3, 16, 0.60, 0.70, 1),  # higher, but after 1 epoch only
        rec("t3", "finished", 2, 16, 0.40, 0.75, 3),
        rec("t4", "failed", 4, 32, 0.0, 0.0, 0),
    ]


def test_best_is_chosen_among_trials_that_ran_the_budget():
    records = _records()
    assert best_record(records, metric="val_accuracy", mode="max")["trial_id"] == "t1"
    assert best_record(records, metric="val_accuracy", mode="min")["trial_id"] == "t3"
    only_stopped = [records[2]]
    assert best_record(only_stopped, metric="val_accuracy", mode="max")["trial_id"] == "t2"
    assert best_record([], metric="val_accuracy", mode="max") is None


def test_numbers_spread_and_rank_correlation():
    n = sweep_numbers(_records(), metric="val_accuracy")
    assert (n["num_finished"], n["num_stopped_early"], n["num_failed"]) == (3, 1, 1)
    assert n["val_accuracy_spread"] == pytest.approx(0.15)
    assert n["val_accuracy_median"] == pytest.approx(0.50)
    assert n["rank_correlation_test_accuracy"] == pytest.approx(1.0)  # same order on 3 trials
    assert rank_correlation([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert rank_correlation([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9487, abs=1e-4)
    assert np.isnan(rank_correlation([1, 1, 1], [1, 2, 3]))


def test_outputs_best_yaml_is_a_full_config_and_csv_has_a_row_per_trial(tmp_path):
    base = load_config(None, {"train": {"epochs": 12}, "tune": {"epochs": 3}})
    best = best_record(_records(), metric="val_accuracy", mode="max")
    path = write_best_yaml(
        tmp_path / "best.yaml", best_config(base, best), best, metric="val_accuracy"
    )
    cfg = load_config(path)
    assert cfg.jump.interval == 2 and cfg.model.semantic_dim == 32
    assert cfg.train.epochs == 12  # the full run's epochs, not the trials' budget
    assert yaml.safe_load(path.read_text())["train"]["lr"] == pytest.approx(0.03)
    assert path.read_text().startswith("# jumpray tune: best trial t1")

    rows = list(
        csv.DictReader(
            write_trials_csv(tmp_path / "t.csv", _records(), metric="val_accuracy").open()
        )
    )
    assert [r["trial_id"] for r in rows] == ["t0", "t1", "t2", "t3", "t4"]
    assert [r["stopped_early"] for r in rows] == ["False", "False", "True", "False", "False"]
    assert list(rows[0])[:6] == [
        "trial_id",
        "status",
        "stopped_early",
        "jump.interval",
        "model.semantic_dim",
        "train.lr",
    ]
    assert list(rows[0])[6] == "val_accuracy"


def test_plots_against_j_k_and_their_interaction(tmp_path):
    paths = plot_sweep(tmp_path, _records(), default_space(10), metric="val_accuracy")
    names = sorted(p.name for p in paths)
    assert names == [
        "tune_interaction.png",
        "tune_jump_interval.png",
        "tune_model_semantic_dim.png",
        "tune_selection_tau.png",
        "tune_train_lr.png",
    ]
    assert all(p.stat().st_size > 1000 for p in paths)

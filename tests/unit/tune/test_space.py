"""Search spaces over dotted config keys: parsing, the default space, Tune's form, trial configs."""

from __future__ import annotations

import pytest

from jumpray.config import load_config
from jumpray.errors import ConfigError
from jumpray.tune.space import (
    Dimension,
    count_trials,
    default_space,
    parse_space,
    semantic_dims,
    space_for,
    to_param_space,
    trial_config,
)


def test_semantic_dims_are_the_powers_of_two_that_code_c_classes():
    assert semantic_dims(10) == [8, 16, 32, 64, 128]  # C <= 2K: K = 4 codes only 8
    assert semantic_dims(2) == [2, 4, 8, 16, 32, 64, 128]
    assert semantic_dims(100) == [64, 128]
    assert semantic_dims(256) == [128]
    with pytest.raises(ConfigError, match="257 classes need K >= 129"):
        semantic_dims(257)


def test_default_space_is_j_k_tau_lr():
    space = default_space(10)
    assert space["jump.interval"] == Dimension("jump.interval", "choice", (1, 2, 3, 4))
    assert space["model.semantic_dim"].values == (8, 16, 32, 64, 128)
    assert space["selection.tau"].kind == space["train.lr"].kind == "loguniform"
    assert space_for(load_config(), num_classes=10) == space


def test_yaml_space_parses_every_kind():
    base = load_config()
    raw = {
        "jump.interval": {"grid": [1, 2]},
        "model.semantic_dim": {"choice": [16, 32]},
        "selection.tau": {"loguniform": [1e-4, 1e-2]},
        "train.lr": {"uniform": [0.01, 0.1]},
    }
    space = parse_space(raw, base)
    assert space["jump.interval"] == Dimension("jump.interval", "grid", (1, 2))
    assert space["train.lr"] == Dimension("train.lr", "uniform", (0.01, 0.1))
    assert count_trials(space, "random", 3) == 6  # 2 grid points x 3 samples
    assert count_trials(space, "grid", 1) == 4  # choices are expanded too
    assert count_trials(space, "optuna", 5) == 5


def test_bad_spaces_list_every_problem_with_its_key():
    base = load_config()
    raw = {
        "train.lrr": {"choice": [0.1]},
        "tune.num_samples": {"choice": [1]},
        "jump.interval": {"range": [1, 2]},
        "selection.tau": {"loguniform": [0.0, 0.1]},
        "model.semantic_dim": {"grid": [16, 24]},
        "train.epochs": [3, 4],
    }
    with pytest.raises(ConfigError) as err:
        parse_space(raw, base)
    text = str(err.value)
    assert "tune.search_space.train.lrr: not a config key" in text and "train.lr" in text
    assert "tune.search_space.tune.num_samples: not a config key" in text
    assert "unknown kind (choose from grid, choice, loguniform, uniform)" in text
    assert "low must be > 0 on a log scale" in text
    assert "value 24" in text and "power of two" in text
    assert "tune.search_space.train.epochs: write one of" in text


def test_k_values_must_code_the_data_classes():
    base = load_config(None, {"tune": {"search_space": {"model.semantic_dim": {"grid": [4, 8]}}}})
    with pytest.raises(ConfigError, match=r"\[4\] cannot code 10 classes"):
        space_for(base, num_classes=10)


def test_param_space_follows_the_searcher():
    from ray.tune.search.sample import Categorical, Float

    space = {
        "jump.interval": Dimension("jump.interval", "grid", (1, 2)),
        "model.semantic_dim": Dimension("model.semantic_dim", "choice", (16, 32)),
        "train.lr": Dimension("train.lr", "loguniform", (0.01, 0.1)),
    }
    random = to_param_space(space, "random")
    assert random["jump.interval"] == {"grid_search": [1, 2]}
    assert isinstance(random["model.semantic_dim"], Categorical)
    assert isinstance(random["train.lr"], Float)
    grid = to_param_space(space, "grid")
    assert grid["model.semantic_dim"] == {"grid_search": [16, 32]}
    optuna = to_param_space(space, "optuna")  # Optuna refuses grid_search
    assert isinstance(optuna["jump.interval"], Categorical)
    assert optuna["jump.interval"].categories == [1, 2]


def test_trial_config_applies_values_budget_and_keeps_r_above_j():
    import numpy as np

    base = load_config(None, {"train": {"epochs": 10}, "tune": {"epochs": 4}})
    cfg = trial_config(base, {"jump.interval": np.int64(4), "train.lr": np.float64(0.02)})
    assert cfg.jump.interval == 4 and cfg.snapshots.keep == 5  # R >= J + 1
    assert cfg.train.lr == pytest.approx(0.02) and cfg.train.epochs == 4
    assert trial_config(base, {"snapshots.keep": 6, "jump.interval": 2}).snapshots.keep == 6
    with pytest.raises(ConfigError, match="snapshots.keep"):
        trial_config(base, {"snapshots.keep": 2, "jump.interval": 3})

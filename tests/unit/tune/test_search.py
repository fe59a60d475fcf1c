"""Searchers by name, ASHA on the epoch, and trial concurrency that always leaves Ray Data a CPU."""

from __future__ import annotations

import importlib.util

import pytest

from jumpray.config import load_config
from jumpray.errors import ConfigError
from jumpray.tune.search import (
    SEARCHERS,
    TIME_ATTR,
    build_scheduler,
    build_searcher,
    trial_concurrency,
)


def _cfg(**scaling):
    return load_config(None, {"scaling": scaling} if scaling else {})


def test_default_concurrency_leaves_ray_data_one_cpu():
    cpus = {"CPU": 2.0}
    assert trial_concurrency(_cfg(), cpus, num_trials=8) == 2  # 2 x 0.5 CPU + 1 free
    assert trial_concurrency(_cfg(num_workers=2), cpus, num_trials=8) == 1
    assert trial_concurrency(_cfg(), {"CPU": 16.0}, num_trials=8) == 8  # capped by the trials
    assert trial_concurrency(_cfg(), {"CPU": 16.0}, num_trials=40) == 30
    gpu = _cfg(use_gpu=True, cpus_per_worker=1.0)
    assert trial_concurrency(gpu, {"CPU": 16.0, "GPU": 4.0}, num_trials=8) == 4


def test_a_concurrency_that_would_starve_ray_data_is_lowered(caplog):
    cfg = load_config(None, {"tune": {"max_concurrent_trials": 4}})
    assert trial_concurrency(cfg, {"CPU": 2.0}, num_trials=8) == 2
    assert "does not fit" in caplog.text
    cfg = load_config(None, {"tune": {"max_concurrent_trials": 1}})
    assert trial_concurrency(cfg, {"CPU": 2.0}, num_trials=8) == 1


def test_a_trial_that_cannot_fit_is_a_config_error():
    with pytest.raises(ConfigError, match="lower scaling.cpus_per_worker"):
        trial_concurrency(_cfg(num_workers=2, cpus_per_worker=1.0), {"CPU": 2.0}, num_trials=4)
    with pytest.raises(ConfigError, match="scaling.num_workers=1 or more"):
        trial_concurrency(_cfg(num_workers=0), {"CPU": 2.0}, num_trials=4)


def test_searchers_by_name_with_their_limit():
    from ray.tune.search.basic_variant import BasicVariantGenerator

    assert set(SEARCHERS) == {"grid", "random", "optuna"}
    basic = build_searcher("random", seed=0, concurrency=2)
    assert isinstance(basic, BasicVariantGenerator) and basic.max_concurrent == 2
    with pytest.raises(ConfigError, match="choose from grid, random, optuna"):
        build_searcher("bayes", seed=0, concurrency=1)


@pytest.mark.skipif(importlib.util.find_spec("optuna") is None, reason="optuna not installed")
def test_optuna_searcher_is_limited_too():
    from ray.tune.search import ConcurrencyLimiter

    limited = build_searcher("optuna", seed=0, concurrency=2)
    assert isinstance(limited, ConcurrencyLimiter) and limited.max_concurrent == 2


def test_optuna_missing_says_how_to_install(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "optuna" else real(name, *a)
    )
    with pytest.raises(ConfigError, match=r"jumpray\[tune\]"):
        build_searcher("optuna", seed=0, concurrency=1)


def test_asha_runs_on_epochs_done_and_lets_full_trials_end():
    cfg = load_config(None, {"tune": {"grace_period": 2, "reduction_factor": 3}})
    asha = build_scheduler(cfg, max_epochs=6)
    assert asha._time_attr == TIME_ATTR == "epochs_done"
    assert asha._max_t == 6 and asha._reduction_factor == 3
    assert asha._stop_last_trials is False
    # Rungs (milestones in epochs, largest first): from the grace period, x3 up to max_t.
    assert [m for m, _ in asha._brackets[0]._rungs] == [6, 2]
    assert [m for m, _ in build_scheduler(cfg, max_epochs=20)._brackets[0]._rungs] == [18, 6, 2]
    assert [m for m, _ in build_scheduler(cfg, max_epochs=1)._brackets[0]._rungs] == [1]


@pytest.mark.skipif(importlib.util.find_spec("optuna") is None, reason="optuna not installed")
def test_optuna_draws_from_a_space_with_grid_keys():
    from jumpray.tune.space import parse_space, to_param_space

    raw = {"jump.interval": {"grid": [1, 2, 3]}, "train.lr": {"loguniform": [0.01, 0.1]}}
    space = to_param_space(parse_space(raw, load_config()), "optuna")
    searcher = build_searcher("optuna", seed=0, concurrency=4)
    assert searcher.set_search_properties("val_accuracy", "max", space)
    drawn = [searcher.suggest(f"t{i}") for i in range(4)]
    assert all(d["jump.interval"] in (1, 2, 3) and 0.01 <= d["train.lr"] <= 0.1 for d in drawn)

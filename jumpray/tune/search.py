"""Searchers by short name, the ASHA scheduler on the epoch, and how many trials fit at once.

Searchers (:data:`SEARCHERS`): ``grid`` and ``random`` are Tune's basic variant generator (seeded;
they differ in how :func:`jumpray.tune.space.to_param_space` writes choices); ``optuna`` is
Optuna's TPE through ``OptunaSearch``, an optional extra imported only when chosen.

ASHA runs on ``epochs_done`` (epochs trained, reported by each trial), not Tune's
``training_iteration``: a retried trial resumes at its checkpoint's epoch while Tune restarts its
iteration count at 1, so iterations would put it on the wrong rung (docs/architecture.md,
'Ray notes: ASHA on the epoch').

Concurrency (:func:`trial_concurrency`): every trial's Ray Train workers together must leave Ray
Data one CPU (its read tasks take a whole CPU each); otherwise a trial's data never arrives and
the sweep hangs (docs/architecture.md, 'Ray notes: CPU starvation'). The default is the most
trials that fit that rule.
"""

from __future__ import annotations

import importlib.util
import math
from collections.abc import Callable, Mapping
from typing import Any

from jumpray.config import RunConfig
from jumpray.errors import ConfigError
from jumpray.log import get_logger

__all__ = ["SEARCHERS", "TIME_ATTR", "build_searcher", "build_scheduler", "trial_concurrency"]

log = get_logger(__name__)

TIME_ATTR = "epochs_done"
DATA_CPUS = 1.0  # kept free for Ray Data tasks


def _basic(seed: int, concurrency: int) -> Any:
    from ray.tune.search.basic_variant import BasicVariantGenerator

    # Its own limit: Tune ignores TuneConfig.max_concurrent_trials for a variant generator.
    return BasicVariantGenerator(random_state=seed, max_concurrent=concurrency)


def _optuna(seed: int, concurrency: int) -> Any:
    if importlib.util.find_spec("optuna") is None:
        raise ConfigError(
            "tune.searcher=optuna needs Optuna, an optional extra: "
            'pip install "jumpray[tune]" (or optuna==5.0.0), or use tune.searcher=random'
        )
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    return ConcurrencyLimiter(OptunaSearch(seed=seed), max_concurrent=concurrency)


SEARCHERS: dict[str, Callable[[int, int], Any]] = {
    "grid": _basic,
    "random": _basic,
    "optuna": _optuna,
}


def build_searcher(name: str, *, seed: int, concurrency: int) -> Any:
    """The Tune search algorithm registered under ``name``, running at most ``concurrency``
    trials at once (pass it here, not as ``TuneConfig.max_concurrent_trials``).

    Raises:
        ConfigError: unknown name (listing the choices), or Optuna missing.
    """
    if name not in SEARCHERS:
        raise ConfigError(f"tune.searcher: unknown {name!r} (choose from {', '.join(SEARCHERS)})")
    return SEARCHERS[name](seed, concurrency)


def build_scheduler(cfg: RunConfig, *, max_epochs: int) -> Any:
    """ASHA on :data:`TIME_ATTR`: a trial can stop after ``grace_period`` epochs, then per rung."""
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(
        time_attr=TIME_ATTR,
        max_t=max_epochs,
        grace_period=min(cfg.tune.grace_period, max_epochs),
        reduction_factor=cfg.tune.reduction_factor,
        # A trial that reaches the budget ends by itself: stopping it there would kill its fit()
        # while it copies the final checkpoint and writes its summary.
        stop_last_trials=False,
    )


def trial_concurrency(cfg: RunConfig, resources: Mapping[str, float], *, num_trials: int) -> int:
    """How many trials run at once: ``tune.max_concurrent_trials``, or all that fit.

    A trial needs ``num_workers x cpus_per_worker`` CPUs (and GPUs when ``scaling.use_gpu``);
    all trials together must leave :data:`DATA_CPUS` for Ray Data. A requested concurrency above
    that is lowered, with a warning (a hang is never the better outcome).

    Args:
        cfg: the sweep's base config.
        resources: ``ray.cluster_resources()``.
        num_trials: trials in the sweep (no point in more slots).

    Raises:
        ConfigError: not even one trial fits.
    """
    sc = cfg.scaling
    if sc.num_workers < 1:
        raise ConfigError(
            "scaling.num_workers: 0 runs training in the driver, but each tune trial is a Ray "
            "Train run; set scaling.num_workers=1 or more"
        )
    cpus = float(resources.get("CPU", 0.0))
    need = sc.num_workers * sc.cpus_per_worker
    fits = math.floor((cpus - DATA_CPUS) / need + 1e-9)
    if sc.use_gpu:
        gpus = float(resources.get("GPU", 0.0))
        fits = min(fits, math.floor(gpus / (sc.num_workers * sc.gpus_per_worker) + 1e-9))
    if fits < 1:
        raise ConfigError(
            f"one trial needs {need:g} CPU(s) for {sc.num_workers} worker(s) and Ray Data needs "
            f"{DATA_CPUS:g} more, but the cluster has {cpus:g}"
            + (f" CPUs and {resources.get('GPU', 0):g} GPUs" if sc.use_gpu else " CPUs")
            + "; lower scaling.cpus_per_worker or scaling.num_workers"
        )
    wanted = cfg.tune.max_concurrent_trials
    if wanted is None:
        return max(1, min(fits, num_trials))
    if wanted > fits:
        log.warning(
            "tune.max_concurrent_trials=%d does not fit: %d trial(s) of %g CPU(s) each leave Ray "
            "Data a CPU on this cluster (%g CPUs); running %d at a time",
            wanted,
            fits,
            need,
            cpus,
            fits,
        )
        return fits
    return wanted

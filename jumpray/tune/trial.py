"""One sweep trial: the real Ray Train job (``jumpray.train.launch.fit``) inside a Tune trial.

Ray Train V2's pattern (docs/architecture.md, 'Ray notes: Tune trials are driver functions'): the
trainable is a driver function that runs ``fit()``, whose ``TorchTrainer`` reports through
:class:`EpochReport` (Tune's ``TuneReportCallback`` plus ``epochs_done`` and ``consistency``). The
trial:

1. builds its config (:func:`jumpray.tune.space.trial_config`);
2. reads the shards and holds out the noisy validation split (:mod:`jumpray.tune.holdout`);
3. calls ``fit()`` into ``OUT/trials/<trial_id>/`` under the Ray Train run name
   ``tune-<trial_id>``: a retried trial (``tune.max_failures``) or a restored sweep finds that
   run's storage and resumes from its last checkpoint (on purpose: docs/architecture.md,
   'Ray notes: run names resume');
4. releases the run's snapshot store and the readers' quarantine sinks, so nothing of a trial
   outlives it even when Tune reuses the process.

MLflow is not called here: the driver's :class:`~jumpray.tune.tracking.SweepTracker` logs every
trial (one writer, guarded).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ray.tune.integration.ray_train import TuneReportCallback

from jumpray.config import RunConfig
from jumpray.tune.space import trial_config

__all__ = ["TrialJob", "EpochReport", "derived_metrics", "run_trial", "TRIALS_DIR"]

TRIALS_DIR = "trials"


@dataclass(frozen=True)
class TrialJob:
    """What every trial shares (Tune passes it with ``tune.with_parameters``).

    Attributes:
        base: the sweep's resolved config (``RunConfig.model_dump()``).
        shards: the training shard folder.
        test_shards: clean test shards, or None.
        out: the sweep's OUT (absolute).
    """

    base: dict[str, Any]
    shards: str
    test_shards: str | None
    out: str


def derived_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """What a trial reports besides the worker's metrics.

    ``epochs_done`` = epoch + 1, ASHA's clock. ``consistency`` = 1 - |selected_fraction -
    val_accuracy|: the two estimates of the clean fraction a run makes without clean labels (the
    selection on its training samples, the agreement with given labels on samples it never saw)
    agree; a candidate metric, compared with ``val_accuracy`` in benchmarks/tune_metric.py.
    """
    out = {"epochs_done": float(metrics["epoch"]) + 1.0}
    if "selected_fraction" in metrics and "val_accuracy" in metrics:
        gap = abs(float(metrics["selected_fraction"]) - float(metrics["val_accuracy"]))
        out["consistency"] = 1.0 - gap
    return out


class EpochReport(TuneReportCallback):
    """Tune's report callback (rank 0's metrics each epoch) with :func:`derived_metrics` added."""

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any):
        if not metrics:
            return
        first = dict(metrics[0])
        first.update(derived_metrics(first))
        super().after_report(run_context, [first, *metrics[1:]], checkpoint)


def run_trial(params: dict[str, Any], job: TrialJob) -> None:
    """The Tune trainable: one Ray Train run with the trial's values (module docstring)."""
    from ray import tune

    from jumpray.data.shards import read_shards
    from jumpray.tracking import NoopTracker
    from jumpray.train.launch import fit
    from jumpray.tune.holdout import split_holdout

    # The driver prints one progress line for the sweep; per-epoch lines of N trials would bury it.
    for name in ("jumpray", "ray.data"):
        logging.getLogger(name).setLevel(logging.WARNING)
    base = RunConfig.model_validate(job.base)
    cfg = trial_config(base, params)
    trial_id = tune.get_context().get_trial_id()
    sources = []
    result = None
    try:
        source = read_shards(job.shards, cfg.data, num_classes=cfg.num_classes)
        sources.append(source)
        # The base seed: every trial holds out the same samples, even when `seed` is searched.
        train, val, _ = split_holdout(source, fraction=cfg.tune.val_fraction, seed=base.seed)
        test = None
        if job.test_shards is not None:
            num_classes = cfg.num_classes or source.info.num_classes
            test = read_shards(job.test_shards, cfg.data, num_classes=num_classes)
            sources.append(test)
        result = fit(
            cfg,
            train=train,
            val=val,
            test=test,
            out_dir=Path(job.out) / TRIALS_DIR / trial_id,
            run_name=f"tune-{trial_id}",
            tracker=NoopTracker(),
            callbacks=[EpochReport()],
        )
    finally:
        if result is not None:
            result.release()
        for s in sources:
            s.close()

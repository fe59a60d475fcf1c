"""``run_sweep``: a Ray Tune search over config keys, one real Ray Train run per trial.

1. The space: ``tune.search_space`` or the default J, K (from the data's C), tau, lr
   (:mod:`jumpray.tune.space`); the searcher by name and ASHA on ``epochs_done``
   (:mod:`jumpray.tune.search`); as many trials at once as leave Ray Data a CPU.
2. The trainable: :func:`jumpray.tune.trial.run_trial` with no CPU of its own (its Ray Train
   workers hold the CPUs: ``{"cpu": 0, "memory": 1}``, docs/architecture.md,
   'Ray notes: Tune trial resources'); a failed trial is retried ``tune.max_failures`` times and
   resumes from its Ray Train checkpoint.
3. Tracking: one MLflow parent run for the sweep (the best config, the trials table and the PNGs
   land there), a child per trial (:class:`~jumpray.tune.tracking.SweepTracker`).
4. Outputs in OUT (docs/contract.md, 'Files written by tune'): ``best.yaml``, ``trials.csv``,
   ``tune_<key>.png`` and ``tune_interaction.png``, ``tune_trials.json`` (the records),
   ``tune_run.json`` (what ``--resume`` needs), ``ray_tune/sweep/`` (Tune's state),
   ``trials/<trial_id>/`` (each fit's OUT).
5. Ray's books: live actors, placement groups and object-store bytes are counted before and after
   (:mod:`jumpray.tune.ledger`); what stayed is reported and logged as a warning.

Resuming (``resume=True``) restores Tune's state (``Tuner.restore``): finished trials are kept as
they are, unfinished and failed ones continue, each from its Ray Train checkpoint.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jumpray.checkpoint import require_inside
from jumpray.config import RunConfig
from jumpray.errors import ConfigError
from jumpray.files import write_json
from jumpray.log import get_logger
from jumpray.tracking import PENDING_DIR, NoopTracker, build_tracker
from jumpray.tune.ledger import RayLedger, settle, take_ledger
from jumpray.tune.report import (
    BEST_FILE,
    TRIALS_CSV,
    best_config,
    best_record,
    plot_sweep,
    sweep_numbers,
    write_best_yaml,
    write_trials_csv,
)
from jumpray.tune.search import build_scheduler, build_searcher, trial_concurrency
from jumpray.tune.space import count_trials, space_for, to_param_space, trial_config
from jumpray.tune.tracking import TRIALS_FILE, SweepTracker
from jumpray.tune.trial import TrialJob, run_trial

__all__ = ["run_sweep", "SweepResult", "RUN_FILE", "SWEEP_NAME", "sweep_state"]

log = get_logger(__name__)

RUN_FILE = "tune_run.json"
SWEEP_NAME = "sweep"
STATE_DIR = "ray_tune"


@dataclass
class SweepResult:
    """What :func:`run_sweep` produced (the job prints it; tests read it).

    Attributes:
        out: OUT.
        config: the sweep's base config.
        records: one dict per trial (params, last metrics, status, MLflow run id).
        best: the best record, or None when no trial reported the metric.
        numbers: counts, the metric's spread, its rank correlation with test accuracy.
        complete: every planned trial finished (False after an interruption).
        num_planned: trials the sweep plans.
        concurrency: trials run at once.
        files: the outputs written.
        ledger_before, ledger_after: Ray's books around the sweep.
        leftovers: what the sweep left in the cluster (empty = nothing).
        parent_run_id, tracking_uri: the MLflow parent run.
        wall_s: seconds in ``tuner.fit()``.
    """

    out: Path
    config: RunConfig
    records: list[dict[str, Any]]
    best: dict[str, Any] | None
    numbers: dict[str, Any]
    complete: bool
    num_planned: int
    concurrency: int
    files: list[Path] = field(default_factory=list)
    ledger_before: RayLedger | None = None
    ledger_after: RayLedger | None = None
    leftovers: list[str] = field(default_factory=list)
    parent_run_id: str | None = None
    tracking_uri: str | None = None
    wall_s: float = 0.0


def _num_classes(cfg: RunConfig, shards: Path) -> int:
    """C: the config's, else index.json's, else the folder scan's (headers only, no Ray)."""
    if cfg.num_classes:
        return cfg.num_classes
    from jumpray.data.schema import read_index

    index = read_index(shards)
    if index is not None and index.num_classes:
        return int(index.num_classes)
    from jumpray.data.scan import scan_folder

    return scan_folder(shards, on_error="skip").num_classes


def sweep_state(out: Path) -> Path:
    """Tune's state of the sweep in OUT (``OUT/ray_tune/sweep``), the folder ``Tuner.restore``
    reads and unpickles.

    Raises:
        UsageError: it resolves outside OUT (a link to elsewhere).
    """
    state = Path(out) / STATE_DIR / SWEEP_NAME
    require_inside(state, out, what="--resume: Tune's state")
    return state


def _saved_run(out: Path, shards: Path, test_shards: Path | None) -> dict[str, Any]:
    path = out / RUN_FILE
    if not path.is_file():
        raise ConfigError(f"--resume: {path} does not exist (no sweep was started in this --out)")
    saved = json.loads(path.read_text())
    given = {"shards": str(shards), "test_shards": str(test_shards) if test_shards else None}
    for key, value in given.items():
        if saved[key] != value:
            raise ConfigError(
                f"--resume: the sweep in {out} used --{key.replace('_', '-')} {saved[key]}, "
                f"not {value}; resume with the same folders, or start a new --out"
            )
    return saved


def _parent_tracker(cfg: RunConfig, run_id: str | None, shards: Path, out: Path) -> NoopTracker:
    return build_tracker(
        cfg.tracking,
        default_name=f"tune-{shards.name}",
        run_id=run_id,
        pending_dir=out / PENDING_DIR,
    )


def run_sweep(
    cfg: RunConfig,
    *,
    shards: str | Path,
    out: str | Path,
    test_shards: str | Path | None = None,
    resume: bool = False,
) -> SweepResult:
    """Run (or resume) the sweep; Ray must be running (:func:`jumpray.ray_utils.init_ray`).

    Args:
        cfg: the base config (ignored with ``resume``: the saved one is used).
        shards: the training shard folder (a held-out split of it ranks the trials).
        out: OUT.
        test_shards: clean test shards: every trial also reports ``test_accuracy``.
        resume: continue the sweep recorded in OUT (same folders).

    Raises:
        ConfigError: a bad space, searcher, resources, or nothing to resume.
    """
    import ray
    from ray import tune

    if not ray.is_initialized():
        raise RuntimeError("run_sweep() needs a running Ray: call jumpray.ray_utils.init_ray()")
    out = Path(out).resolve()
    shards = Path(shards).resolve()
    test_shards = Path(test_shards).resolve() if test_shards is not None else None
    saved = _saved_run(out, shards, test_shards) if resume else {}
    if not resume and (out / RUN_FILE).exists():
        raise ConfigError(
            f"--out {out} already holds a sweep ({RUN_FILE}); continue it with --resume, or "
            "give a new --out"
        )
    if resume:
        cfg = RunConfig.model_validate(saved["config"])
    out.mkdir(parents=True, exist_ok=True)
    space = space_for(cfg, num_classes=_num_classes(cfg, shards))
    trial_config(cfg, {})  # the base itself must build (e.g. warm-up < the per-trial budget)
    if cfg.tune.metric.startswith("test_") and test_shards is None:
        raise ConfigError(
            f"tune.metric={cfg.tune.metric} needs --test-shards; without clean test data rank "
            "by tune.metric=val_accuracy (a noisy held-out split)"
        )
    budget = cfg.tune.epochs or cfg.train.epochs
    planned = count_trials(space, cfg.tune.searcher, cfg.tune.num_samples)
    concurrency = trial_concurrency(cfg, ray.cluster_resources(), num_trials=planned)
    before = take_ledger()
    parent = _parent_tracker(cfg, saved.get("parent_run_id"), shards, out)
    write_json(
        out / RUN_FILE,
        {
            "config": cfg.model_dump(),
            "shards": str(shards),
            "test_shards": str(test_shards) if test_shards else None,
            "parent_run_id": parent.run_id,
        },
    )
    if not resume:
        parent.set_tags({"jumpray.job": "tune", "jumpray.shards": str(shards)})
        parent.log_params({f"sweep.{k}": v for k, v in cfg.tune.model_dump().items()})
    job = TrialJob(
        cfg.model_dump(), str(shards), str(test_shards) if test_shards else None, str(out)
    )
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, job=job), {"cpu": 0, "memory": 1}
    )
    state = sweep_state(out)
    if resume:
        if not tune.Tuner.can_restore(str(state)):
            raise ConfigError(f"--resume: no Tune state in {state} (the sweep never started)")
        tuner = tune.Tuner.restore(
            str(state), trainable, resume_unfinished=True, resume_errored=True
        )
    else:
        tuner = _new_tuner(cfg, trainable, space, out, parent.run_id, budget, planned, concurrency)
    log.info(
        "tune: %d trials of up to %d epochs, %d at a time, searcher %s, ASHA on epochs; %s",
        planned,
        budget,
        concurrency,
        cfg.tune.searcher,
        "resuming" if resume else "starting",
    )
    t0 = time.perf_counter()
    tuner.fit()
    wall = time.perf_counter() - t0
    records = json.loads((out / TRIALS_FILE).read_text()) if (out / TRIALS_FILE).is_file() else []
    after = settle(before)
    leftovers = after.growth(before) if before is not None and after is not None else []
    if leftovers:
        log.warning("tune: the sweep left behind %s", "; ".join(leftovers))
    result = _outputs(cfg, out, records, space, planned=planned, parent=parent)
    result.concurrency, result.wall_s = concurrency, wall
    result.ledger_before, result.ledger_after, result.leftovers = before, after, leftovers
    return result


def _new_tuner(
    cfg: RunConfig,
    trainable: Any,
    space: dict[str, Any],
    out: Path,
    parent_run_id: str | None,
    budget: int,
    planned: int,
    concurrency: int,
) -> Any:
    from ray import tune

    tracker = SweepTracker(
        base=cfg.model_dump(),
        out=str(out),
        parent_run_id=parent_run_id,
        budget_epochs=budget,
        total_trials=planned,
    )
    return tune.Tuner(
        trainable,
        param_space=to_param_space(space, cfg.tune.searcher),
        tune_config=tune.TuneConfig(
            metric=cfg.tune.metric,
            mode=cfg.tune.mode,
            search_alg=build_searcher(cfg.tune.searcher, seed=cfg.seed, concurrency=concurrency),
            scheduler=build_scheduler(cfg, max_epochs=budget),
            num_samples=cfg.tune.num_samples,
            time_budget_s=cfg.tune.time_budget_s,
        ),
        run_config=tune.RunConfig(
            name=SWEEP_NAME,
            storage_path=str(out / STATE_DIR),
            callbacks=[tracker],
            failure_config=tune.FailureConfig(max_failures=cfg.tune.max_failures),
            verbose=0,
        ),
    )


def _outputs(
    cfg: RunConfig,
    out: Path,
    records: list[dict[str, Any]],
    space: dict[str, Any],
    *,
    planned: int,
    parent: NoopTracker,
) -> SweepResult:
    """trials.csv, best.yaml, the PNGs; the parent run gets them and the numbers."""
    metric, mode = cfg.tune.metric, cfg.tune.mode
    numbers = sweep_numbers(records, metric=metric)
    ended = numbers["num_finished"] + numbers["num_stopped_early"] + numbers["num_failed"]
    complete = ended >= planned
    files = [write_trials_csv(out / TRIALS_CSV, records, metric=metric)]
    best = best_record(records, metric=metric, mode=mode)
    if best is not None:
        files.append(write_best_yaml(out / BEST_FILE, best_config(cfg, best), best, metric=metric))
        parent.log_metrics({f"best_{k}": v for k, v in best["metrics"].items()})
        parent.set_tags({"jumpray.best_trial": best["trial_id"]})
    files += plot_sweep(out, records, space, metric=metric)
    parent.log_metrics({k: v for k, v in numbers.items() if isinstance(v, int | float)})
    for path in files:
        parent.log_artifact(path, "tune")
    if complete:
        parent.end()
    return SweepResult(
        out=out,
        config=cfg,
        records=records,
        best=best,
        numbers=numbers,
        complete=complete,
        num_planned=planned,
        concurrency=0,
        files=files,
        parent_run_id=parent.run_id,
        tracking_uri=parent.uri,
    )

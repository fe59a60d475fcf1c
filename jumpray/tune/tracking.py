"""The sweep's driver-side record: MLflow child runs, the progress line, the trials file.

:class:`SweepTracker` is a Tune callback on the driver. For every trial it

- opens an MLflow child run under the sweep's parent (``mlflow.parentRunId``) with the trial's
  resolved config as params, logs each epoch's metrics (step = epoch) and the final ones, tags
  whether ASHA stopped it, and ends it ``FINISHED`` (or ``FAILED``);
- keeps a record (params, last metrics, status, process id) written to ``OUT/tune_trials.json`` after every
  event, which the job turns into ``trials.csv`` and ``best.yaml``;
- logs one progress line per result.

Why not Ray's ``MLflowLoggerCallback`` (docs/architecture.md, 'Ray notes: MLflow from Tune'): Tune
calls callbacks unguarded, so an MLflow outage would fail or stall the sweep; it logs every Tune
field (pid, ...) as a metric and resets the global tracking URI. Here every call goes through
:class:`~jumpray.tracking.MlflowTracker`, which warns instead of raising (unless
``tracking.strict``), and passes run ids explicitly (MLflow's fluent run is thread-local).

The records and child run ids are the callback's Tune state (``get_state``/``set_state``), so a
restored sweep (``--resume``) keeps logging into the same child runs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ray.tune import Callback

from jumpray.config import RunConfig, config_to_flat_dict
from jumpray.errors import ConfigError
from jumpray.files import write_json
from jumpray.log import get_logger
from jumpray.tracking import PENDING_DIR, NoopTracker, build_tracker
from jumpray.tune.space import plain_values, trial_config
from jumpray.tune.trial import TRIALS_DIR

__all__ = ["SweepTracker", "TRIALS_FILE", "RUNNING", "FINISHED", "STOPPED", "FAILED"]

log = get_logger(__name__)

TRIALS_FILE = "tune_trials.json"
RUNNING, FINISHED, STOPPED, FAILED = "running", "finished", "stopped_early", "failed"
# Tune's own result fields: not metrics of the run.
_TUNE_FIELDS = frozenset(
    {
        "timestamp",
        "done",
        "training_iteration",
        "time_this_iter_s",
        "time_total_s",
        "time_since_restore",
        "iterations_since_restore",
        "pid",
        "node_ip",
        "hostname",
        "date",
        "trial_id",
        "checkpoint_dir_name",
        "should_checkpoint",
        "episodes_total",
        "timesteps_total",
        "timesteps_since_restore",
    }
)


def run_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The run's numeric metrics in a Tune result (Tune's own fields and config left out)."""
    return {
        k: float(v)
        for k, v in result.items()
        if k not in _TUNE_FIELDS
        and isinstance(v, int | float)
        and not isinstance(v, bool)
        and math.isfinite(float(v))
    }


class SweepTracker(Callback):
    """Tune callback: MLflow children, trial records, progress (module docstring).

    Args:
        base: the sweep's config (``RunConfig.model_dump()``).
        out: OUT (``tune_trials.json`` goes there).
        parent_run_id: the sweep's MLflow run, or None (tracking off).
        budget_epochs: the per-trial budget (fewer epochs done = stopped early).
        total_trials: trials the sweep will run (for the progress line).
    """

    def __init__(
        self,
        *,
        base: dict[str, Any],
        out: str,
        parent_run_id: str | None,
        budget_epochs: int,
        total_trials: int,
    ):
        self.base = base
        self.cfg = RunConfig.model_validate(base)
        self.out = out
        self.parent_run_id = parent_run_id
        self.budget_epochs = budget_epochs
        self.total_trials = total_trials
        self.records: dict[str, dict[str, Any]] = {}
        self._trackers: dict[str, NoopTracker] = {}

    # Tune pickles the callback with the tuner (trackers hold clients: rebuilt on demand).
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_trackers"] = {}
        return state

    def get_state(self) -> dict[str, Any]:
        return {"records": self.records}

    def set_state(self, state: dict[str, Any]) -> None:
        self.records = dict(state.get("records", {}))

    # -- Tune events ----------------------------------------------------------------------------

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        record = self.records.setdefault(
            trial.trial_id,
            {"trial_id": trial.trial_id, "params": plain_values(trial.config), "metrics": {}},
        )
        record["status"] = RUNNING
        self._child(trial.trial_id)
        self._save()

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        record = self._record(trial)
        metrics = run_metrics(result)
        record["metrics"] = metrics
        record["pid"] = result.get("pid")  # the trial's process (to find or stop it)
        self._child(trial.trial_id).log_metrics(metrics, step=int(metrics.get("epoch", 0)))
        self._save()
        log.info("%s", self.progress_line(trial.trial_id))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        record = self._record(trial)
        done = int(record["metrics"].get("epochs_done", 0))
        record["status"] = FINISHED if done >= self.budget_epochs else STOPPED
        tracker = self._child(trial.trial_id)
        tracker.log_metrics({f"final_{k}": v for k, v in record["metrics"].items()})
        tracker.set_tags({"jumpray.status": record["status"]})
        self._log_trial_files(trial.trial_id, tracker)
        tracker.end("FINISHED")
        self._save()
        log.info("%s", self.progress_line(trial.trial_id, event=record["status"]))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        record = self._record(trial)
        record["status"] = FAILED
        tracker = self._child(trial.trial_id)
        tracker.set_tags({"jumpray.status": FAILED})
        tracker.end("FAILED")
        self._save()
        log.warning("%s", self.progress_line(trial.trial_id, event=FAILED))

    # -- helpers --------------------------------------------------------------------------------

    def _record(self, trial: Any) -> dict[str, Any]:
        if trial.trial_id not in self.records:
            self.on_trial_start(0, [], trial)
        return self.records[trial.trial_id]

    def _child(self, trial_id: str) -> NoopTracker:
        """The trial's MLflow run: created once, resumed after a retry or a restore."""
        tracker = self._trackers.get(trial_id)
        if tracker is not None:
            return tracker
        record = self.records[trial_id]
        # A trial's run is named by its id, never by tracking.run_name (the sweep's run has it).
        tc = self.cfg.tracking.model_copy(update={"run_name": None})
        pending = Path(self.out) / PENDING_DIR
        if self.parent_run_id is None or not tc.enabled:
            tracker = NoopTracker()
        elif record.get("mlflow_run_id"):
            tracker = build_tracker(tc, run_id=record["mlflow_run_id"], pending_dir=pending)
        else:
            tracker = build_tracker(
                tc,
                default_name=f"trial-{trial_id}",
                parent_run_id=self.parent_run_id,
                pending_dir=pending,
            )
            record["mlflow_run_id"] = tracker.run_id
            tracker.log_params(self._trial_params(record["params"]))
            tracker.set_tags({"jumpray.job": "tune-trial", "jumpray.trial_id": trial_id})
        self._trackers[trial_id] = tracker
        return tracker

    def _trial_params(self, params: dict[str, Any]) -> dict[str, Any]:
        """The trial's whole resolved config, or only its own values if that does not build."""
        try:
            cfg = trial_config(self.cfg, params)
        except ConfigError:
            return dict(params)
        return config_to_flat_dict(cfg)

    def _log_trial_files(self, trial_id: str, tracker: NoopTracker) -> None:
        """A finished trial's selection curves and summary (absent when ASHA stopped it)."""
        folder = Path(self.out) / TRIALS_DIR / trial_id
        for name in ("selection_curves.png", "train_summary.json"):
            if (folder / name).is_file():
                tracker.log_artifact(folder / name)

    def _save(self) -> None:
        path = Path(self.out) / TRIALS_FILE
        write_json(path, list(self.records.values()), indent=1)

    def progress_line(self, trial_id: str, *, event: str | None = None) -> str:
        """``tune: 3/8 trials done (1 stopped early, 0 failed), 2 running; best <metric> ...
        (<trial>); <trial> epoch e/E <metric> ...`` (``event``: how the trial just ended)."""
        metric, mode = self.cfg.tune.metric, self.cfg.tune.mode
        states = [r.get("status") for r in self.records.values()]
        done = sum(s in (FINISHED, STOPPED, FAILED) for s in states)
        line = (
            f"tune: {done}/{self.total_trials} trials done ({states.count(STOPPED)} stopped early, "
            f"{states.count(FAILED)} failed), {states.count(RUNNING)} running"
        )
        scored = [
            (r["metrics"][metric], t) for t, r in self.records.items() if metric in r["metrics"]
        ]
        if scored:
            value, best = max(scored) if mode == "max" else min(scored)
            line += f"; best {metric} {value:.4f} ({best})"
        m = self.records[trial_id]["metrics"]
        if event is not None:
            line += f"; {trial_id} {event.replace('_', ' ')} after {int(m.get('epochs_done', 0))} epochs"
        elif metric in m:
            line += (
                f"; {trial_id} epoch {int(m.get('epochs_done', 0))}/{self.budget_epochs} "
                f"{metric} {m[metric]:.4f}"
            )
        return line

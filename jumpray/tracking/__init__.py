"""Experiment tracking: one small interface, MLflow behind it, failures that warn instead of kill.

Only the driver or rank 0 tracks. Every tracker call is guarded: when the store is unreachable the
run goes on with a warning (once per kind of call), unless ``tracking.strict`` is set, which turns
the failure into :class:`~jumpray.errors.TrackingError`. ``mlflow`` is imported lazily, only when
a run is started.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jumpray.config import TrackingConfig
from jumpray.errors import TrackingError
from jumpray.log import get_logger

__all__ = ["Tracker", "MlflowTracker", "NoopTracker", "build_tracker", "resolve_tracking_uri"]

log = get_logger(__name__)

DEFAULT_URI = "sqlite:///mlflow.db"


def resolve_tracking_uri(uri: str | None = None) -> str:
    """The tracking URI: ``uri``, else ``MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` (cwd)."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


class NoopTracker:
    """A tracker that records nothing (tracking disabled, or ranks other than 0)."""

    run_id: str | None = None
    uri: str | None = None
    artifact_uri: str | None = None
    failed = False

    def log_params(self, params: Mapping[str, Any]) -> None: ...
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...
    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...
    def log_dict(self, data: Any, name: str) -> None: ...
    def set_tags(self, tags: Mapping[str, str]) -> None: ...
    def end(self, status: str = "FINISHED") -> None: ...


class MlflowTracker(NoopTracker):
    """MLflow run for one job; every call warns on failure instead of raising (unless strict).

    Args:
        uri: tracking URI (see :func:`resolve_tracking_uri`).
        experiment: experiment name (created when missing).
        run_name: the run's display name.
        strict: raise :class:`TrackingError` instead of warning.
        run_id: resume an existing run instead of starting a new one.
        parent_run_id: make this a child run (sweeps).
    """

    def __init__(
        self,
        *,
        uri: str | None = None,
        experiment: str = "jumpray",
        run_name: str | None = None,
        strict: bool = False,
        run_id: str | None = None,
        parent_run_id: str | None = None,
    ):
        self.uri = resolve_tracking_uri(uri)
        # A dead HTTP server must not stall training for minutes per call (MLflow retries 7x by default).
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        self.strict = strict
        self.run_id = None
        self.artifact_uri: str | None = None
        self.failed = False  # some call failed: metrics or files are missing from the run
        self._warned: set[str] = set()
        self._client = None
        self._guard("start", self._start, experiment, run_name, run_id, parent_run_id)

    def _start(
        self, experiment: str, run_name: str | None, run_id: str | None, parent: str | None
    ) -> None:
        from mlflow.tracking import MlflowClient

        self._client = MlflowClient(tracking_uri=self.uri)
        if run_id:
            self.run_id = run_id
            return
        exp = self._client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp else self._client.create_experiment(experiment)
        tags = {"mlflow.runName": run_name} if run_name else {}
        if parent:
            tags["mlflow.parentRunId"] = parent
        info = self._client.create_run(exp_id, run_name=run_name, tags=tags).info
        self.run_id, self.artifact_uri = info.run_id, info.artifact_uri
        log.info("MLflow run %s in experiment %r at %s", self.run_id, experiment, self.uri)

    def _guard(self, what: str, fn, *args, **kwargs) -> Any:
        if what != "start" and (self._client is None or self.run_id is None):
            return None
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # the tracker must never kill a long run
            self.failed = True
            if self.strict:
                raise TrackingError(f"MLflow {what} failed at {self.uri}: {exc}") from exc
            if what not in self._warned:
                self._warned.add(what)
                msg = f"MLflow {what} failed at {self.uri} ({type(exc).__name__}: {exc}); training continues"
                log.warning(msg)
                warnings.warn(msg, RuntimeWarning, stacklevel=3)
            return None

    def log_params(self, params: Mapping[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):  # MLflow accepts at most 100 params per batch
            self._guard(
                "log_params", self._client.log_batch, self.run_id, params=items[start : start + 100]
            )

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        clean = [
            Metric(k, float(v), now, step or 0)
            for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))
        ]
        if clean:
            self._guard("log_metrics", self._client.log_batch, self.run_id, metrics=clean)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        path = Path(path)
        if path.is_dir():
            self._guard(
                "log_artifact", self._client.log_artifacts, self.run_id, str(path), artifact_path
            )
        else:
            self._guard(
                "log_artifact", self._client.log_artifact, self.run_id, str(path), artifact_path
            )

    def log_dict(self, data: Any, name: str) -> None:
        self._guard("log_dict", self._client.log_dict, self.run_id, data, name)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for k, v in tags.items():
            self._guard("set_tag", self._client.set_tag, self.run_id, k, str(v))

    def end(self, status: str = "FINISHED") -> None:
        self._guard("end", self._client.set_terminated, self.run_id, status)


Tracker = NoopTracker


def build_tracker(
    tc: TrackingConfig, *, default_name: str | None = None, **kwargs: Any
) -> NoopTracker:
    """The tracker ``tracking.*`` asks for: an :class:`MlflowTracker` when enabled, else a
    :class:`NoopTracker`.

    Args:
        tc: the ``tracking`` section.
        default_name: the run name when ``tracking.run_name`` is null.
        **kwargs: for :class:`MlflowTracker` (``run_id`` to resume a run, ``parent_run_id``).
    """
    if not tc.enabled:
        return NoopTracker()
    return MlflowTracker(
        uri=tc.uri,
        experiment=tc.experiment,
        run_name=tc.run_name or default_name,
        strict=tc.strict,
        **kwargs,
    )

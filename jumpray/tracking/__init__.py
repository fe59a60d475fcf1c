"""Experiment tracking: one small interface, MLflow behind it, failures that warn instead of kill.

Only the driver or rank 0 tracks. Every tracker call is guarded: when the store is unreachable
(connection refused, a timeout, HTTP 5xx) the run goes on, and the call's record is held back in
order and sent when the store answers again (:mod:`jumpray.tracking.pending`); at the end of the
run whatever could not be sent is saved to ``OUT/mlflow_pending/`` for ``jumpray tracking
replay``. A record the store refuses (a bad value) is dropped with a warning. ``tracking.strict``
turns any failure into :class:`~jumpray.errors.TrackingError` instead. ``mlflow`` is imported
lazily, only when a run is started. docs/architecture.md, 'Tracking outages'.
"""

from __future__ import annotations

import math
import tempfile
import threading
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from jumpray.config import TrackingConfig
from jumpray.errors import TrackingError
from jumpray.log import get_logger
from jumpray.tracking.pending import (
    PENDING_DIR,
    PendingLog,
    ReplayResult,
    is_transient,
    replay,
    send,
    short_http,
)

__all__ = [
    "Tracker",
    "MlflowTracker",
    "NoopTracker",
    "build_tracker",
    "resolve_tracking_uri",
    "download_model",
    "is_model_uri",
    "replay",
    "ReplayResult",
    "MODEL_URI_SCHEMES",
    "PENDING_DIR",
]

log = get_logger(__name__)

DEFAULT_URI = "sqlite:///mlflow.db"
# URIs that name a logged MLflow model rather than a folder.
MODEL_URI_SCHEMES = ("runs:/", "models:/")
# While records are held back, the store is tried again on a call at most this often (doubling
# from the first to the second value), so calls made during an outage return at once.
RETRY_FIRST_S, RETRY_MAX_S = 1.0, 30.0
# The pause between tries while the end of a run waits for the store.
END_PAUSE_S = 2.0

Outcome = Literal["sent", "held", "dropped"]


def resolve_tracking_uri(uri: str | None = None) -> str:
    """The tracking URI: ``uri``, else ``MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` (cwd)."""
    import os

    return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def _now_ms() -> int:
    return int(time.time() * 1000)


class NoopTracker:
    """A tracker that records nothing (tracking disabled, or ranks other than 0).

    Attributes:
        failed: a record was refused (dropped) or could not be kept.
        pending_path: the file the records the store never got were saved to (None: none).
    """

    run_id: str | None = None
    uri: str | None = None
    artifact_uri: str | None = None
    failed = False
    pending_path: Path | None = None

    def log_params(self, params: Mapping[str, Any]) -> None: ...
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...
    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...
    def log_dict(self, data: Any, name: str) -> None: ...
    def set_tags(self, tags: Mapping[str, str]) -> None: ...
    def end(self, status: str = "FINISHED") -> None: ...
    def close(self, *, wait: bool = True) -> None: ...

    def log_pytorch_model(self, model: Any, **options: Any) -> str | None:
        """Log a torch module as an MLflow model; returns its ``runs:/`` URI (None: not logged)."""
        return None


class MlflowTracker(NoopTracker):
    """MLflow run for one job; a failing call warns and its record is kept (module docstring).

    Calls come from several threads (the driver's progress thread logs the epochs); a lock keeps
    the records in order.

    Args:
        uri: tracking URI (see :func:`resolve_tracking_uri`).
        experiment: experiment name (created when missing).
        run_name: the run's display name.
        strict: raise :class:`TrackingError` instead of warning.
        run_id: resume an existing run instead of starting a new one.
        parent_run_id: make this a child run (sweeps).
        pending_dir: where records never sent are saved at the end (None = ``./mlflow_pending``).
        flush_timeout_s: how long :meth:`close` waits for a store that went away during the run.
        max_pending: records held in memory; beyond that they are written to ``pending_dir``.
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
        pending_dir: str | Path | None = None,
        flush_timeout_s: float = 30.0,
        max_pending: int = 1000,
    ):
        from mlflow.tracking import MlflowClient

        self.uri = resolve_tracking_uri(uri)
        self.strict = strict
        self.run_id = run_id
        self.artifact_uri: str | None = None
        self.failed = False
        self.pending_path: Path | None = None
        self.flush_timeout_s = flush_timeout_s
        folder = Path(pending_dir) if pending_dir is not None else Path(PENDING_DIR)
        self._pending = PendingLog(folder.resolve(), uri=self.uri, max_memory=max_pending)
        self._lock = threading.RLock()
        self._warned: set[str] = set()
        self._reached = False  # the store answered at least once
        self._outage_since: float | None = None
        self._retry_at, self._retry_wait = 0.0, RETRY_FIRST_S
        self._client: Any = None
        try:
            self._client = MlflowClient(tracking_uri=self.uri)
        except Exception as exc:  # a URI MLflow cannot use at all: nothing to hold records for
            if strict:
                raise TrackingError(f"MLflow start failed at {self.uri}: {exc}") from exc
            self._refused("start", exc)
            return
        if run_id is None:
            tags = {"mlflow.runName": run_name} if run_name else {}
            if parent_run_id:
                tags["mlflow.parentRunId"] = parent_run_id
            op = {
                "op": "create",
                "experiment": experiment,
                "run_name": run_name,
                "tags": tags,
                "start_time": _now_ms(),
            }
            self._record("start", op)

    # -- sending and holding back ---------------------------------------------------------------

    def _record(self, what: str, op: dict[str, Any]) -> Outcome:
        """Send ``op`` now, or hold it back behind earlier held ones / while the store is down."""
        if self._client is None:
            return "dropped"
        with self._lock:
            if self.strict:
                try:
                    self._send(op)
                except Exception as exc:
                    self.failed = True
                    raise TrackingError(f"MLflow {what} failed at {self.uri}: {exc}") from exc
                return "sent"
            self._deliver_held()
            if len(self._pending):
                return self._hold(what, op)
            try:
                self._send(op)
                return "sent"
            except Exception as exc:  # the tracker must never kill a long run
                if not is_transient(exc):
                    self._refused(what, exc)
                    return "dropped"
                self._outage(what, exc)
                return self._hold(what, op)

    def _send(self, op: dict[str, Any]) -> None:
        with short_http():
            info = send(self._client, self.run_id, op, self._pending.folder)
        self._reached = True
        if info is not None:
            self.run_id, self.artifact_uri = info.run_id, info.artifact_uri
            log.info(
                "MLflow run %s in experiment %r at %s", self.run_id, op["experiment"], self.uri
            )

    def _hold(self, what: str, op: dict[str, Any]) -> Outcome:
        try:
            self._pending.add(op, self.run_id)
        except OSError as exc:  # no room to keep it: say so, never hide it
            self._refused(what, exc)
            return "dropped"
        return "held"

    def _deliver_held(self, *, now: bool = False) -> None:
        """Send the held records in order if the store is due for another try (or ``now``)."""
        if not len(self._pending) or (not now and time.monotonic() < self._retry_at):
            return
        try:
            sent = self._pending.deliver(self._send_held, lambda: self.run_id)
        except Exception as exc:
            log.debug("MLflow still unreachable at %s: %s", self.uri, exc)
            self._retry_at = time.monotonic() + self._retry_wait
            self._retry_wait = min(2 * self._retry_wait, RETRY_MAX_S)
            return
        down = time.monotonic() - (self._outage_since or time.monotonic())
        log.info(
            "MLflow at %s answers again after %.0f s: sent %d held-back records",
            self.uri,
            down,
            sent,
        )
        self._outage_since = None
        self._retry_at, self._retry_wait = 0.0, RETRY_FIRST_S

    def _send_held(self, op: dict[str, Any]) -> None:
        try:
            self._send(op)
        except Exception as exc:
            if is_transient(exc):
                raise
            self._refused(op["op"], exc)

    def _outage(self, what: str, exc: Exception) -> None:
        """The first failure of an outage warns (once per outage) and starts the retry clock."""
        self._retry_at = time.monotonic() + self._retry_wait
        if self._outage_since is not None:
            return
        self._outage_since = time.monotonic()
        self._warn(
            f"MLflow {what} failed at {self.uri} ({type(exc).__name__}: {exc}); training "
            "continues, and its records are kept and sent when the server answers again"
        )

    def _refused(self, what: str, exc: Exception) -> None:
        self.failed = True
        if what in self._warned:
            return
        self._warned.add(what)
        self._warn(
            f"MLflow {what} failed at {self.uri} ({type(exc).__name__}: {exc}); that record is "
            "dropped, training continues"
        )

    def _warn(self, msg: str) -> None:
        log.warning(msg)
        warnings.warn(msg, RuntimeWarning, stacklevel=4)

    # -- the tracker interface ------------------------------------------------------------------

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._record(
            "log_params", {"op": "params", "params": {k: str(v)[:6000] for k, v in params.items()}}
        )

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        now = _now_ms()
        clean = [
            [k, float(v), now, step or 0]
            for k, v in metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(float(v))
        ]
        if clean:
            self._record("log_metrics", {"op": "metrics", "metrics": clean})

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        op = {"op": "artifact", "path": str(Path(path).resolve()), "artifact_path": artifact_path}
        self._record("log_artifact", op)

    def log_dict(self, data: Any, name: str) -> None:
        self._record("log_dict", {"op": "dict", "data": data, "name": name})

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._record("set_tags", {"op": "tags", "tags": {k: str(v) for k, v in tags.items()}})

    def end(self, status: str = "FINISHED") -> None:
        """End the run with ``status``, then :meth:`close` (a failed or killed job does not wait
        for the store: it gets one last try)."""
        self._record("end", {"op": "end", "status": status, "end_time": _now_ms()})
        self.close(wait=status == "FINISHED")

    def close(self, *, wait: bool = True) -> None:
        """Send what is held back; save what the store still does not take (module docstring).

        With ``wait``, a store that answered earlier in the run gets ``flush_timeout_s`` to come
        back; otherwise, or if it never answered, it gets one last try. The saved file is
        :attr:`pending_path`.
        """
        with self._lock:
            patience = self.flush_timeout_s if wait and self._reached else 0.0
            deadline = time.monotonic() + patience
            try:
                while len(self._pending):
                    self._deliver_held(now=True)
                    left = deadline - time.monotonic()
                    if not len(self._pending) or left <= 0:
                        break
                    time.sleep(min(END_PAUSE_S, left))
            finally:  # also on Ctrl-C during the wait: what is held is saved, never lost
                if len(self._pending):
                    self._save_held()

    def _save_held(self) -> None:
        count = len(self._pending)
        try:
            self.pending_path = self._pending.save(self.run_id)
        except OSError as exc:
            self._refused("save", exc)
            return
        run = self.run_id or "(not created yet)"
        self._warn(
            f"MLflow unreachable at {self.uri}: {count} records of run {run} were not sent; "
            f"they are saved in {self.pending_path}. Send them when the server is back: "
            f"jumpray tracking replay {self.pending_path}"
        )

    def log_pytorch_model(
        self,
        model: Any,
        *,
        name: str = "model",
        input_example: Any = None,
        metadata: Mapping[str, Any] | None = None,
        extra_files: Mapping[str, Any] | None = None,
    ) -> str | None:
        """Log ``model`` as an MLflow model (``mlflow.pytorch`` flavour) under ``name``.

        The model is saved with its pickled class (jumpray must be importable where it is
        loaded), a tensor signature inferred from ``input_example`` and the model's output on it,
        and ``metadata`` in its MLmodel file. It is written by ``save_model`` and uploaded with
        the run's client (no fluent run, no change of the global tracking URI), so it loads as
        ``runs:/RUN_ID/NAME`` and can be registered (``mlflow.register_model``).

        Args:
            model: a torch module taking one tensor.
            name: the artifact folder.
            input_example: a numpy batch the model accepts.
            metadata: JSON-ready values stored in MLmodel.
            extra_files: file name -> a value ``torch.save`` writes into the model folder
            (the weights-only record jumpray loads the model from).

        Returns:
            ``runs:/RUN_ID/NAME`` (also when the upload is held back by an outage), or None when
            it could not be logged (a warning says why).
        """
        if self._client is None:
            return None
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            try:
                _save_pytorch_model(model, path, input_example, metadata, extra_files or {})
            except Exception as exc:
                if self.strict:
                    raise TrackingError(f"MLflow log_model failed: {exc}") from exc
                with self._lock:
                    self._refused("log_model", exc)
                return None
            op = {"op": "artifact", "path": str(path), "artifact_path": name}
            done = self._record("log_model", op)
        if done == "dropped" or self.run_id is None:
            return None
        return f"runs:/{self.run_id}/{name}"


def _save_pytorch_model(
    model: Any, path: Path, input_example: Any, metadata: Any, extra_files: Mapping[str, Any]
) -> None:
    """``mlflow.pytorch.save_model`` of ``model`` into the folder ``path`` (see
    :meth:`MlflowTracker.log_pytorch_model`)."""
    import mlflow.pytorch
    import numpy as np
    import torch
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    with torch.no_grad():
        out = model(torch.from_numpy(np.asarray(input_example))).cpu().numpy()
    example = np.asarray(input_example)
    # Any batch size and image size: the model crops and resizes to its own.
    signature = ModelSignature(
        inputs=Schema([TensorSpec(example.dtype, (-1, *example.shape[1:2], -1, -1))]),
        outputs=Schema([TensorSpec(out.dtype, (-1, *out.shape[1:]))]),
    )
    mlflow.pytorch.save_model(
        model,
        str(path),
        signature=signature,
        input_example=example,
        metadata=dict(metadata or {}),
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "jumpray"],
        serialization_format="pickle",
    )
    for file_name, value in extra_files.items():
        torch.save(value, path / file_name)


Tracker = NoopTracker


def is_model_uri(value: str | Path) -> bool:
    """True for an MLflow model URI (``runs:/...``, ``models:/...``), False for a folder."""
    return str(value).startswith(MODEL_URI_SCHEMES)


def download_model(uri: str, dst: str | Path, *, tracking_uri: str | None = None) -> Path:
    """Download the files of a logged MLflow model into ``dst`` (nothing is loaded: jumpray
    rebuilds its models from their weights-only record, :mod:`jumpray.models.serving`).

    Args:
        uri: ``runs:/RUN_ID/model``, ``models:/NAME/VERSION`` or any MLflow model URI.
        dst: an existing folder.
        tracking_uri: the store the URI refers to (:func:`resolve_tracking_uri`); the global
            MLflow tracking URI is restored afterwards.

    Returns:
        The downloaded model folder.

    Raises:
        TrackingError: the model cannot be fetched (the message names the URI and the store).
    """
    import mlflow
    import mlflow.artifacts

    store = resolve_tracking_uri(tracking_uri)
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(store)
    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst)))
    except Exception as exc:
        raise TrackingError(
            f"cannot load the MLflow model {uri} from {store} ({type(exc).__name__}: {exc}); "
            "check the URI and tracking.uri / MLFLOW_TRACKING_URI"
        ) from exc
    finally:
        mlflow.set_tracking_uri(before)


def build_tracker(
    tc: TrackingConfig, *, default_name: str | None = None, **kwargs: Any
) -> NoopTracker:
    """The tracker ``tracking.*`` asks for: an :class:`MlflowTracker` when enabled, else a
    :class:`NoopTracker`.

    Args:
        tc: the ``tracking`` section.
        default_name: the run name when ``tracking.run_name`` is null.
        **kwargs: for :class:`MlflowTracker` (``run_id`` to resume a run, ``parent_run_id``,
            ``pending_dir``: the job's ``OUT/mlflow_pending``).
    """
    if not tc.enabled:
        return NoopTracker()
    return MlflowTracker(
        uri=tc.uri,
        experiment=tc.experiment,
        run_name=tc.run_name or default_name,
        strict=tc.strict,
        flush_timeout_s=tc.flush_timeout_s,
        max_pending=tc.max_pending,
        **kwargs,
    )

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

__all__ = [
    "Tracker",
    "MlflowTracker",
    "NoopTracker",
    "build_tracker",
    "resolve_tracking_uri",
    "load_pytorch_model",
    "is_model_uri",
    "MODEL_URI_SCHEMES",
]

log = get_logger(__name__)

DEFAULT_URI = "sqlite:///mlflow.db"
# URIs that name a logged MLflow model rather than a folder.
MODEL_URI_SCHEMES = ("runs:/", "models:/")


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

    def log_pytorch_model(self, model: Any, **options: Any) -> str | None:
        """Log a torch module as an MLflow model; returns its ``runs:/`` URI (None: not logged)."""
        return None


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

    def log_pytorch_model(
        self,
        model: Any,
        *,
        name: str = "model",
        input_example: Any = None,
        metadata: Mapping[str, Any] | None = None,
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

        Returns:
            ``runs:/RUN_ID/NAME``, or None when it could not be logged (a warning says why).
        """
        done = self._guard(
            "log_model", self._log_pytorch_model, model, name, input_example, metadata
        )
        return f"runs:/{self.run_id}/{name}" if done else None

    def _log_pytorch_model(self, model, name, input_example, metadata) -> bool:
        import tempfile

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
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            mlflow.pytorch.save_model(
                model,
                str(path),
                signature=signature,
                input_example=example,
                metadata=dict(metadata or {}),
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "jumpray"],
                serialization_format="pickle",
            )
            self._client.log_artifacts(self.run_id, str(path), name)
        return True


Tracker = NoopTracker


def is_model_uri(value: str | Path) -> bool:
    """True for an MLflow model URI (``runs:/...``, ``models:/...``), False for a folder."""
    return str(value).startswith(MODEL_URI_SCHEMES)


def load_pytorch_model(uri: str, *, tracking_uri: str | None = None) -> Any:
    """Load a model logged by :meth:`MlflowTracker.log_pytorch_model` as a torch module (CPU).

    Args:
        uri: ``runs:/RUN_ID/model``, ``models:/NAME/VERSION`` or any MLflow model URI.
        tracking_uri: the store the URI refers to (:func:`resolve_tracking_uri`); the global
            MLflow tracking URI is restored afterwards.

    Raises:
        TrackingError: the model cannot be loaded (the message names the URI and the store).
    """
    import mlflow
    import mlflow.pytorch

    store = resolve_tracking_uri(tracking_uri)
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(store)
    try:
        return mlflow.pytorch.load_model(uri, map_location="cpu")
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

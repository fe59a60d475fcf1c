"""The MLflow tracking layer on a real SQLite store, its failure behaviour, and checkpoint files."""

from __future__ import annotations

import random
import warnings

import numpy as np
import pytest
import torch

from jumpray.checkpoint import load_checkpoint, restore_rng_state, rng_state, save_checkpoint
from jumpray.config import TrackingConfig
from jumpray.errors import DataError, TrackingError
from jumpray.tracking import MlflowTracker, NoopTracker, build_tracker, resolve_tracking_uri


def test_tracker_writes_params_metrics_artifacts_to_sqlite(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLflow puts artifacts under ./mlruns of the working directory
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    t = MlflowTracker(uri=uri, experiment="unit", run_name="r1")
    t.log_params({"train.epochs": 3, "model.semantic_dim": 32})
    for step in range(3):
        t.log_metrics(
            {"loss": 1.0 / (step + 1), "nan_is_dropped": float("nan"), "flag": True}, step=step
        )
    art = tmp_path / "note.txt"
    art.write_text("hello")
    t.log_artifact(art)
    t.log_dict({"a": 1}, "summary.json")
    t.end()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(t.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params == {"train.epochs": "3", "model.semantic_dim": "32"}
    assert set(run.data.metrics) == {"loss"}
    assert [m.value for m in client.get_metric_history(t.run_id, "loss")] == [1.0, 0.5, 1.0 / 3]
    assert {a.path for a in client.list_artifacts(t.run_id)} == {"note.txt", "summary.json"}
    # The run summary says where the run and its artifacts are (issue 11).
    from jumpray.jobs._run import tracking_lines

    lines = tracking_lines(t, kept_in="o/summary.json")
    assert lines == [
        f"  MLflow run {t.run_id} at {uri}",
        f"  MLflow artifacts: {run.info.artifact_uri}",
    ]


def test_unreachable_server_warns_and_never_raises(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default pending folder is ./mlflow_pending
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        t = MlflowTracker(uri="http://127.0.0.1:9", experiment="x")
        t.log_metrics({"loss": 1.0}, step=0)
        t.end()
    assert t.run_id is None
    assert any("training continues" in str(w.message) for w in caught)
    # Nothing is dropped: the run, its metrics and its end wait in ./mlflow_pending for a replay.
    assert t.pending_path is not None and t.pending_path.parent == tmp_path / "mlflow_pending"
    assert any("jumpray tracking replay" in str(w.message) for w in caught)


def test_strict_tracking_raises(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    with pytest.raises(TrackingError, match="127.0.0.1:9"):
        MlflowTracker(uri="http://127.0.0.1:9", experiment="x", strict=True)


def test_uri_resolution_and_disabled_tracker(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri() == "sqlite:///mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://example:5000")
    assert resolve_tracking_uri() == "http://example:5000"
    assert resolve_tracking_uri("sqlite:///x.db") == "sqlite:///x.db"
    assert isinstance(
        build_tracker(TrackingConfig(enabled=False, uri="sqlite:///never.db")),
        NoopTracker,
    )


def test_checkpoint_round_trip_with_rng(tmp_path):
    torch.manual_seed(3)
    state = {"epoch": 4, "weights": torch.arange(5.0), "rng": rng_state()}
    save_checkpoint(tmp_path / "ck", state, meta={"method": "jumpteaching"})
    expected_next = torch.rand(3)
    expected_np, expected_py = np.random.rand(3), random.random()
    loaded = load_checkpoint(tmp_path / "ck")
    assert loaded["epoch"] == 4 and torch.equal(loaded["weights"], torch.arange(5.0))
    restore_rng_state(loaded["rng"])
    assert torch.equal(torch.rand(3), expected_next)
    assert np.array_equal(np.random.rand(3), expected_np) and random.random() == expected_py
    assert not list((tmp_path / "ck").glob(".*tmp*"))
    assert '"method": "jumpteaching"' in (tmp_path / "ck" / "meta.json").read_text()


def test_load_checkpoint_errors_name_the_folder(tmp_path):
    with pytest.raises(DataError, match="no state.pt"):
        load_checkpoint(tmp_path)
    torch.save({"format": "other"}, tmp_path / "state.pt")
    with pytest.raises(DataError, match="not a jumpray-checkpoint/1"):
        load_checkpoint(tmp_path)


class _Payload:
    """Stands for a malicious object: unpickling it would call a function."""

    def __reduce__(self):
        return (print, ("code ran while loading a checkpoint",))


def test_a_checkpoint_carrying_arbitrary_objects_is_refused_without_running_them(tmp_path, capsys):
    torch.save(
        {"format": "jumpray-checkpoint/1", "epoch": 1, "x": _Payload()}, tmp_path / "state.pt"
    )
    with pytest.raises(DataError, match="holds objects other than tensors") as info:
        load_checkpoint(tmp_path)
    assert "state.pt" in str(info.value) and "Fix: re-create it" in str(info.value)
    assert "code ran" not in capsys.readouterr().out

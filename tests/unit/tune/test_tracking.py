"""The sweep's driver-side callback: MLflow parent/children on a real SQLite store, the records,
the progress line, Tune state for restore, and an unreachable server that only warns."""

from __future__ import annotations

import json
import logging
import pickle
import warnings
from types import SimpleNamespace

import pytest

from jumpray.config import load_config
from jumpray.tracking import MlflowTracker
from jumpray.tune.tracking import TRIALS_FILE, SweepTracker, run_metrics


def _trial(tid, **config):
    return SimpleNamespace(trial_id=tid, config=config)


def _result(epoch, val, **more):
    return {
        "epoch": float(epoch),
        "epochs_done": epoch + 1.0,
        "val_accuracy": val,
        "pid": 123,
        "done": False,
        "training_iteration": epoch + 1,
        "config": {},
    } | more


def _tracker(tmp_path, uri, parent):
    base = load_config(None, {"tracking": {"uri": uri, "experiment": "unit-tune"}})
    return SweepTracker(
        base=base.model_dump(),
        out=str(tmp_path),
        parent_run_id=parent,
        budget_epochs=3,
        total_trials=2,
    )


def test_children_under_one_parent_records_and_progress(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="jumpray")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = MlflowTracker(uri=uri, experiment="unit-tune", run_name="sweep")
    cb = _tracker(tmp_path, uri, parent.run_id)
    a, b = _trial("a", **{"jump.interval": 2}), _trial("b", **{"jump.interval": 1})
    cb.on_trial_start(0, [], a)
    cb.on_trial_start(0, [], b)
    for epoch in range(3):
        cb.on_trial_result(0, [], a, _result(epoch, 0.3 + 0.1 * epoch))
    cb.on_trial_result(0, [], b, _result(0, 0.2))
    cb.on_trial_complete(0, [], a)
    cb.on_trial_complete(0, [], b)  # 1 epoch of 3: ASHA stopped it
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("tune:")]
    assert lines[2] == (
        "tune: 0/2 trials done (0 stopped early, 0 failed), 2 running; "
        "best val_accuracy 0.5000 (a); a epoch 3/3 val_accuracy 0.5000"
    )
    assert lines[-2].startswith("tune: 1/2 trials done (0 stopped early, 0 failed), 1 running")
    assert lines[-2].endswith("; a finished after 3 epochs")
    assert lines[-1].endswith("; b stopped early after 1 epochs")

    records = {r["trial_id"]: r for r in json.loads((tmp_path / TRIALS_FILE).read_text())}
    assert records["a"]["status"] == "finished" and records["b"]["status"] == "stopped_early"
    assert records["a"]["params"] == {"jump.interval": 2}
    assert "pid" not in records["a"]["metrics"] and records["a"]["metrics"]["epochs_done"] == 3.0

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("unit-tune")
    children = client.search_runs(
        [exp.experiment_id], f"tags.mlflow.parentRunId = '{parent.run_id}'"
    )
    assert len(children) == 2 and {c.info.status for c in children} == {"FINISHED"}
    child = client.get_run(records["a"]["mlflow_run_id"])
    assert child.data.params["jump.interval"] == "2"  # the whole resolved config
    assert child.data.params["snapshots.keep"] == "3"
    assert child.data.tags["jumpray.status"] == "finished"
    history = client.get_metric_history(child.info.run_id, "val_accuracy")
    assert [(m.step, round(m.value, 3)) for m in history] == [(0, 0.3), (1, 0.4), (2, 0.5)]
    assert "pid" not in child.data.metrics and "final_val_accuracy" in child.data.metrics


def test_state_survives_pickling_and_restore(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = MlflowTracker(uri=uri, experiment="unit-tune", run_name="sweep")
    cb = _tracker(tmp_path, uri, parent.run_id)
    trial = _trial("a", **{"jump.interval": 1})
    cb.on_trial_start(0, [], trial)
    cb.on_trial_result(0, [], trial, _result(0, 0.3))
    # Tune pickles the callback with the tuner and restores its state after a restart.
    restored = pickle.loads(pickle.dumps(cb))
    restored.set_state(cb.get_state())
    restored.on_trial_start(0, [], trial)  # the trial continues after --resume
    restored.on_trial_result(0, [], trial, _result(1, 0.4))
    restored.on_trial_complete(0, [], trial)
    assert restored.records["a"]["mlflow_run_id"] == cb.records["a"]["mlflow_run_id"]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("unit-tune")
    assert len(client.search_runs([exp.experiment_id], "tags.mlflow.parentRunId != ''")) == 1


def test_unreachable_tracking_server_only_warns(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    cb = _tracker(tmp_path, "http://127.0.0.1:9", parent="not-a-run")
    trial = _trial("a", **{"jump.interval": 1})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cb.on_trial_start(0, [], trial)
        cb.on_trial_result(0, [], trial, _result(2, 0.4))
        cb.on_trial_complete(0, [], trial)
    assert cb.records["a"]["status"] == "finished"
    assert any("training continues" in str(w.message) for w in caught)


def test_run_metrics_drop_tune_fields_and_non_numbers():
    got = run_metrics(_result(0, 0.5, note="x", flag=True, bad=float("nan")))
    assert got == {"epoch": 0.0, "epochs_done": 1.0, "val_accuracy": 0.5}
    with pytest.raises(KeyError):
        got["pid"]

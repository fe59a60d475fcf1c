"""Tracking through an outage, on a real SQLite store: records held back in order, sent when the
store answers again, saved at the end when it does not, replayed later; refusals warn and drop.

The outage is a switch in front of a real ``MlflowClient``: while it is down every call raises
the exception MLflow raises for a refused connection (the real one is checked on a dead port).
The HTTP server drills are in tests/integration/test_tracking_outage_drill.py."""

from __future__ import annotations

import socket
import warnings
from pathlib import Path

import pytest
import requests
from mlflow.tracking import MlflowClient as RealClient  # the helpers read the store past the switch

import jumpray.tracking as tracking
from jumpray.cli import main
from jumpray.tracking import MlflowTracker, replay
from jumpray.tracking.pending import is_transient, read_ops


class Outage:
    """Wraps the MlflowClients the code makes; ``down`` makes every call fail as a dead server."""

    def __init__(self):
        self.down = False
        self.calls_while_down = 0

    def wrap(self, real):
        outage = self

        class Client:
            def __getattr__(self, name):
                method = getattr(real, name)

                def call(*args, **kwargs):
                    if outage.down:
                        outage.calls_while_down += 1
                        raise _refused_connection()
                    return method(*args, **kwargs)

                return call

        return Client()


def _refused_connection() -> Exception:
    """What MLflow raises when nothing listens (see test_a_dead_port_is_transient)."""
    from mlflow.exceptions import MlflowException

    exc = MlflowException("API request to http://127.0.0.1:1/api failed with exception refused")
    exc.__context__ = requests.ConnectionError("[Errno 111] Connection refused")
    return exc


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """One SQLite store for the module (creating its tables takes seconds); each test its run."""
    folder = tmp_path_factory.mktemp("store")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    RealClient(tracking_uri=uri).create_experiment("outage", artifact_location=str(folder / "art"))
    return uri


@pytest.fixture
def outage(tmp_path, monkeypatch):
    import mlflow.tracking

    monkeypatch.setattr(tracking, "RETRY_FIRST_S", 0.0)  # every call may try the store again
    monkeypatch.setattr(tracking, "END_PAUSE_S", 0.05)
    real = mlflow.tracking.MlflowClient
    switch = Outage()
    monkeypatch.setattr(mlflow.tracking, "MlflowClient", lambda **kw: switch.wrap(real(**kw)))
    return switch


def _tracker(store, tmp_path: Path, **kwargs) -> MlflowTracker:
    kwargs = {"flush_timeout_s": 0.2} | kwargs
    return MlflowTracker(uri=store, experiment="outage", pending_dir=tmp_path / "pending", **kwargs)


def _steps(uri: str, run_id: str, key: str = "loss") -> list[int]:
    return sorted(m.step for m in RealClient(tracking_uri=uri).get_metric_history(run_id, key))


def _run(uri: str, run_id: str):
    client = RealClient(tracking_uri=uri)
    return client.get_run(run_id), {a.path for a in client.list_artifacts(run_id)}


def test_records_held_during_an_outage_are_sent_in_order_when_the_store_is_back(
    store, tmp_path, outage
):
    t = _tracker(store, tmp_path)
    t.log_metrics({"loss": 1.0}, step=0)
    outage.down = True
    with pytest.warns(RuntimeWarning, match="kept and sent when the server answers again") as w:
        for step in (1, 2):
            t.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
        t.log_params({"train.epochs": 4})
        t.set_tags({"jumpray.job": "train"})
        note = tmp_path / "note.txt"
        note.write_text("hello")
        t.log_artifact(note)
        t.log_dict({"a": 1}, "summary.json")
    assert len([x for x in w if "MLflow" in str(x.message)]) == 1  # one warning per outage
    note.unlink()  # the job moves its files away: the held record has its own copy
    outage.down = False
    t.log_metrics({"loss": 0.2}, step=3)  # the next call sends the held ones first
    assert not (tmp_path / "pending").exists()
    t.end()
    run, artifacts = _run(store, t.run_id)
    assert run.info.status == "FINISHED"
    assert _steps(store, t.run_id) == [0, 1, 2, 3]
    assert run.data.params == {"train.epochs": "4"} and run.data.tags["jumpray.job"] == "train"
    assert artifacts == {"note.txt", "summary.json"}
    assert t.pending_path is None and not t.failed


def test_the_end_saves_what_the_store_never_took_and_a_replay_finishes_the_run(
    store, tmp_path, outage
):
    t = _tracker(store, tmp_path)
    t.log_metrics({"loss": 1.0}, step=0)
    outage.down = True
    with pytest.warns(RuntimeWarning) as w:
        for step in (1, 2, 3):
            t.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
        (tmp_path / "model").mkdir()
        (tmp_path / "model" / "weights.bin").write_bytes(b"\0" * 10)
        t.log_artifact(tmp_path / "model", "model")
        t.end()
    saved = t.pending_path
    assert saved is not None and saved.parent == tmp_path / "pending"
    assert any(f"jumpray tracking replay {saved}" in str(x.message) for x in w)
    header, ops = read_ops(saved)
    assert header["run_id"] == t.run_id and header["tracking_uri"] == store
    assert [o["op"] for o in ops] == ["metrics", "metrics", "metrics", "artifact", "end"]
    assert [o["metrics"][0][3] for o in ops[:3]] == [1, 2, 3]
    assert _run(store, t.run_id)[0].info.status == "RUNNING"

    # Still down: the replay stops, keeps everything, says so.
    result = replay(saved.parent)
    assert result.left == 5 and result.sent == 0 and "unreachable" in result.error
    assert len(read_ops(saved)[1]) == 5

    outage.down = False
    result = replay(saved.parent)
    assert (result.sent, result.left, result.refused) == (5, 0, [])
    run, artifacts = _run(store, t.run_id)
    assert run.info.status == "FINISHED"
    assert _steps(store, t.run_id) == [0, 1, 2, 3]
    assert artifacts == {"model"}
    assert not (tmp_path / "pending").exists()


def test_a_replay_sent_twice_stores_each_metric_once(store, tmp_path, outage):
    """A record whose answer was lost may be sent again: MLflow keeps one per (step, time)."""
    t = _tracker(store, tmp_path)
    outage.down = True
    with pytest.warns(RuntimeWarning):
        t.log_metrics({"loss": 0.5, "acc": 0.9}, step=0)
        t.end()
    copy = tmp_path / "copy.jsonl"
    copy.write_text(t.pending_path.read_text())
    outage.down = False
    assert replay(t.pending_path).left == 0
    assert replay(copy).sent == 2
    assert _steps(store, t.run_id) == [0]
    assert _steps(store, t.run_id, "acc") == [0]


def test_a_run_whose_start_fell_in_the_outage_is_created_when_the_store_is_back(
    store, tmp_path, outage
):
    outage.down = True
    with pytest.warns(RuntimeWarning, match="MLflow start failed"):
        t = _tracker(store, tmp_path, run_name="late", parent_run_id=None)
        t.log_metrics({"loss": 1.0}, step=0)
    assert t.run_id is None
    outage.down = False
    t.log_metrics({"loss": 0.5}, step=1)
    assert t.run_id is not None
    t.end()
    run, _ = _run(store, t.run_id)
    assert run.info.run_name == "late" and run.info.status == "FINISHED"
    assert _steps(store, t.run_id) == [0, 1]


def test_past_the_memory_bound_records_go_to_the_file_not_away(store, tmp_path, outage, caplog):
    t = _tracker(store, tmp_path, max_pending=2)
    outage.down = True
    with pytest.warns(RuntimeWarning):
        for step in range(6):
            t.log_metrics({"loss": float(step)}, step=step)
    assert "more than 2 records held back" in caplog.text
    assert len(read_ops(t._pending.path)[1]) >= 3  # spilled: the file holds the oldest ones
    outage.down = False
    t.end()
    assert _steps(store, t.run_id) == [0, 1, 2, 3, 4, 5]
    assert _run(store, t.run_id)[0].info.status == "FINISHED"
    assert not (tmp_path / "pending").exists()


def test_calls_during_an_outage_wait_for_the_retry_clock(store, tmp_path, outage, monkeypatch):
    """Within the retry interval a call only holds its record: no request, no stall."""
    monkeypatch.setattr(tracking, "RETRY_FIRST_S", 60.0)
    t = _tracker(store, tmp_path)
    outage.down = True
    with pytest.warns(RuntimeWarning):
        for step in range(5):
            t.log_metrics({"loss": float(step)}, step=step)
    assert outage.calls_while_down == 1
    outage.down = False
    t.end()  # the end tries at once
    assert _steps(store, t.run_id) == [0, 1, 2, 3, 4]


def test_a_refused_record_warns_is_dropped_and_does_not_block_the_rest(store, tmp_path, outage):
    t = _tracker(store, tmp_path)
    t.log_params({"lr": 0.1})
    with pytest.warns(RuntimeWarning, match="log_params failed.*dropped"):
        t.log_params({"lr": 0.2})  # MLflow refuses to change a logged param
    t.log_metrics({"loss": 1.0}, step=0)
    t.end()
    run, _ = _run(store, t.run_id)
    assert t.failed and run.info.status == "FINISHED" and run.data.params == {"lr": "0.1"}
    assert _steps(store, t.run_id) == [0]
    from jumpray.jobs._run import tracking_lines

    assert "some records were refused" in tracking_lines(t, kept_in="o/summary.json")[0]


def test_a_dead_port_is_transient_and_a_refusal_is_not(tmp_path, monkeypatch):
    from mlflow.exceptions import MlflowException, RestException
    from mlflow.tracking import MlflowClient

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(MlflowException) as info:
        MlflowClient(tracking_uri=f"http://127.0.0.1:{port}").get_experiment_by_name("x")
    assert is_transient(info.value)
    refused = RestException({"error_code": "INVALID_PARAMETER_VALUE", "message": "changed"})
    assert not is_transient(refused)
    assert is_transient(RestException({"error_code": "TEMPORARILY_UNAVAILABLE", "message": "x"}))
    assert not is_transient(FileNotFoundError("note.txt"))


def test_strict_tracking_raises_instead_of_holding(store, tmp_path, outage):
    from jumpray.errors import TrackingError

    t = _tracker(store, tmp_path, strict=True)
    outage.down = True
    with pytest.raises(TrackingError, match="log_metrics failed"):
        t.log_metrics({"loss": 1.0}, step=0)


def test_cli_replay_exit_codes(store, tmp_path, outage, capsys):
    t = _tracker(store, tmp_path)
    outage.down = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t.log_metrics({"loss": 1.0}, step=0)
        t.end()
    folder = t.pending_path.parent
    assert main(["tracking", "replay", str(folder)]) == 1
    assert "2 records NOT sent" in capsys.readouterr().out
    outage.down = False
    assert main(["tracking", "replay", str(folder)]) == 0
    assert f"2 records sent (runs: {t.run_id})" in capsys.readouterr().out
    assert main(["tracking", "replay", str(folder)]) == 2  # gone: nothing left to send
    bad = tmp_path / "other.jsonl"
    bad.write_text('{"format": "something else"}\n')
    assert main(["tracking", "replay", str(bad)]) == 2


def test_a_failed_job_does_not_wait_for_the_store(store, tmp_path, outage, monkeypatch):
    def no_sleep(seconds):
        raise AssertionError("end('FAILED') waited for the store")

    t = _tracker(store, tmp_path, flush_timeout_s=600)
    outage.down = True
    monkeypatch.setattr(tracking.time, "sleep", no_sleep)
    with pytest.warns(RuntimeWarning) as caught:
        t.log_metrics({"loss": 1.0}, step=0)
        t.end("FAILED")
    assert any("jumpray tracking replay" in str(w.message) for w in caught)
    ops = read_ops(t.pending_path)[1]
    assert ops[-1]["op"] == "end" and ops[-1]["status"] == "FAILED"

"""MLflow outage drills on a real ``mlflow server`` (loopback, SQLite store, proxied artifacts) and a
real ``jumpray train`` job (tiny Fashion-MNIST shards, 1 worker, 6 epochs).

1. The server is killed (SIGKILL to its process group) right after the job logged epoch 1 and
   restarted on the same port and store when it logs epoch 3: the job exits 0, the run is
   FINISHED with every epoch's metrics exactly once per step and all artifacts.
2. The server is killed after epoch 1 and stays down: the job exits 0 and says where the unsent
   records are; the pending file holds every one of them; ``jumpray tracking replay`` after a
   restart delivers them and finishes the run.

The kill and the restart are triggered from the job's own tracker calls (the driver's progress
thread), so they land between the same epochs on any machine. The server takes 13-16 s to start
on 2 cores (docs/architecture.md, 'Tracking outages'); the module starts it three times.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from jumpray.cli import main
from jumpray.data.convert import write_arrays
from jumpray.data.fashion_mnist import load_fashion_mnist
from jumpray.tracking import PENDING_DIR, MlflowTracker
from jumpray.tracking.pending import read_ops

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EPOCHS = 6
EPOCH_KEYS = ("loss", "selected_fraction", "epoch_time_s")


class MlflowServer:
    """``mlflow server`` in its own process group on a fixed port and store; killed by its pgid."""

    def __init__(self, root: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.uri = f"http://127.0.0.1:{self.port}"
        self.root = root
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        """Start it (returns at once; :meth:`wait_up` waits for it to answer)."""
        self.starts += 1
        log = open(self.root / f"server-{self.starts}.log", "wb")  # noqa: SIM115 (the server's)
        cmd = [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{self.root / 'mlflow.db'}",
            "--artifacts-destination",
            str(self.root / "artifacts"),
        ]
        self.proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        log.close()

    def wait_up(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None and self.proc.poll() is None, self._log()
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"{self.uri}/health", timeout=2) as r,
            ):
                if r.status == 200:
                    return
            time.sleep(0.5)
        raise AssertionError(f"mlflow server did not answer in {timeout} s: {self._log()}")

    def kill(self) -> None:
        """SIGKILL its whole process group (the server and its workers), as a crash would."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # its own group: start_new_session
        self.proc.wait(timeout=30)

    def _log(self) -> str:
        path = self.root / f"server-{self.starts}.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = MlflowServer(tmp_path_factory.mktemp("mlflow_server"))
    srv.start()
    srv.wait_up()
    yield srv
    srv.kill()


@pytest.fixture(scope="module")
def shards(tmp_path_factory, fashion_mnist_dir) -> Path:
    root = tmp_path_factory.mktemp("outage_shards")
    images, labels = load_fashion_mnist("train", limit=256, root=fashion_mnist_dir)
    write_arrays(root / "train", images, labels, num_classes=10, noise="sym:0.2", seed=0)
    return root / "train"


@pytest.fixture
def on_epoch(monkeypatch):
    """Call ``hooks[epoch]()`` right after the job's tracker logged that epoch; record how long
    each epoch's tracker call took (the stall an outage adds, printed, never asserted)."""
    hooks: dict[int, object] = {}
    stalls: dict[int, float] = {}
    real = MlflowTracker.log_metrics

    def log_metrics(self, metrics, step=None):
        t0 = time.perf_counter()
        real(self, metrics, step)
        if "epoch" in metrics and step is not None:
            stalls[step] = time.perf_counter() - t0
            if step in hooks:
                hooks.pop(step)()

    monkeypatch.setattr(MlflowTracker, "log_metrics", log_metrics)
    yield hooks
    print("tracker log_metrics seconds per epoch:", {k: round(v, 3) for k, v in stalls.items()})


def _train(shards: Path, out: Path, uri: str, *, flush_timeout_s: float) -> int:
    return main(
        [
            "train",
            "--shards",
            str(shards),
            "--out",
            str(out),
            f"train.epochs={EPOCHS}",
            "train.batch_size=64",
            "jump.warmup_epochs=1",
            "model.semantic_dim=16",
            "scaling.num_workers=1",
            f"tracking.uri={uri}",
            "tracking.experiment=outage-drill",
            f"tracking.flush_timeout_s={flush_timeout_s}",
        ]
    )


def _only_run(uri: str, out: Path):
    """The drill's run: the one whose params name this job's run."""
    import json

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    name = json.loads((out / "train_run.json").read_text())["run_name"]
    exp = client.get_experiment_by_name("outage-drill")
    (run,) = client.search_runs([exp.experiment_id], f"tags.`jumpray.run_name` = '{name}'")
    return client, run.info.run_id


def _assert_complete(uri: str, out: Path) -> None:
    """FINISHED, every epoch's metrics once per step, every artifact."""
    client, run_id = _only_run(uri, out)
    assert client.get_run(run_id).info.status == "FINISHED"
    for key in EPOCH_KEYS:
        steps = [m.step for m in client.get_metric_history(run_id, key)]
        assert sorted(steps) == list(range(EPOCHS)), (key, steps)
    top = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.yaml", "train_summary.json", "selection_curves.png", "model"} <= top
    model = {a.path for a in client.list_artifacts(run_id, "model")}
    assert {"model/model.pt", "model/MLmodel"} <= model
    assert not (out / PENDING_DIR).exists()


def test_server_killed_mid_run_and_restarted(
    ray_cluster, server, shards, tmp_path, on_epoch, capsys
):
    on_epoch[1] = server.kill
    on_epoch[3] = server.start  # back while the job runs or during its end (up to 120 s)
    with pytest.warns(RuntimeWarning, match="kept and sent when the server answers again"):
        assert _train(shards, tmp_path / "out", server.uri, flush_timeout_s=120) == 0
    text = capsys.readouterr().out
    assert "records NOT sent" not in text and "MLflow run " in text
    server.wait_up()
    _assert_complete(server.uri, tmp_path / "out")


def test_server_that_never_comes_back_then_replay(
    ray_cluster, server, shards, tmp_path, on_epoch, capsys
):
    server.wait_up()
    on_epoch[1] = server.kill
    out = tmp_path / "out"
    with pytest.warns(RuntimeWarning) as caught:
        assert _train(shards, out, server.uri, flush_timeout_s=2) == 0
    text = capsys.readouterr().out
    assert "records NOT sent" in text and "jumpray tracking replay" in text
    (pending,) = (out / PENDING_DIR).glob("*.jsonl")
    assert any(str(pending) in str(w.message) for w in caught)
    header, ops = read_ops(pending)
    assert header["tracking_uri"] == server.uri and header["run_id"]
    epochs = sorted(
        m[3] for o in ops if o["op"] == "metrics" for m in o["metrics"] if m[0] == "loss"
    )
    assert epochs == list(range(2, EPOCHS))  # epochs 0 and 1 went out before the kill
    uploads = {o["artifact_path"] or Path(o["path"]).name for o in ops if o["op"] == "artifact"}
    assert {"config.yaml", "train_summary.json", "selection_curves.png", "model"} <= uploads
    assert ops[-1] == ops[-1] | {"op": "end", "status": "FINISHED"}

    server.start()
    server.wait_up()
    assert main(["tracking", "replay", str(out / PENDING_DIR)]) == 0
    assert f"{len(ops)} records sent" in capsys.readouterr().out
    _assert_complete(server.uri, out)

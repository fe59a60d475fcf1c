"""Another Ray instance on the same machine (a user's own ``ray start``) does not break a run.

Before: Ray Train's placement-group cleaner and the State API searched the machine for "the" Ray,
found two and failed with "Found multiple active Ray instances" (a traceback in every run), and
a bare ``ray.init()`` joined the last ``ray start`` cluster instead of starting our own. Now
jumpray starts its own instance (``address="local"``) and points every process of the run at its
dashboard (``RAY_API_SERVER_ADDRESS``, docs/architecture.md, 'Ray notes: placement group cleanup').

The second head runs in its own temp folder and is stopped by its PID (never ``ray stop``).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

from jumpray.data.convert import write_arrays

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).parents[2]
MULTIPLE = "Found multiple active Ray instances"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            pytest.fail(f"the second Ray head exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    pytest.fail(f"the second Ray head's dashboard did not come up on port {port}")


@pytest.fixture
def second_ray():
    """A `ray start --head --block` of its own (temp folder, ports), stopped by SIGTERM to its PID."""
    # Unix socket paths under the temp folder must stay short: no pytest tmp_path here.
    temp = tempfile.mkdtemp(prefix="jr2-", dir="/tmp")
    port, dashboard = _free_port(), _free_port()
    ray_bin = Path(sys.executable).parent / "ray"
    cmd = [str(ray_bin), "start", "--head", "--port", str(port), "--num-cpus", "1"]
    cmd += ["--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard)]
    cmd += ["--temp-dir", temp, "--block"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    with open(Path(temp) / "head.log", "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        _wait_listening(dashboard, proc)
        yield f"127.0.0.1:{port}"
    finally:
        # SIGTERM takes the whole node down; SIGINT does not.
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)
        shutil.rmtree(temp, ignore_errors=True)


def test_a_run_with_a_second_ray_on_the_machine(second_ray, tmp_path):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 20)
    images = (rng.integers(0, 60, (60, 16, 16)) + labels[:, None, None] * 60).astype(np.uint8)
    write_arrays(tmp_path / "shards", images, labels, max_samples_per_shard=30)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "jumpray.cli", "train", "--shards", str(tmp_path / "shards")]
    cmd += ["--out", str(out), "--config", str(ROOT / "configs" / "smoke.yaml")]
    cmd += ["train.batch_size=16", "tracking.enabled=false"]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(ROOT)
    done = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=400)
    logs = "".join(p.read_text(errors="replace") for p in sorted((out / "logs").glob("*.log")))
    console = done.stdout + done.stderr
    assert done.returncode == 0, console + logs
    assert (out / "checkpoint" / "state.pt").is_file()
    assert logs and MULTIPLE not in logs and MULTIPLE not in console
    # Our run started its own Ray: it did not join the second head.
    assert second_ray not in logs + console

"""``jumpray clean`` submitted to a real 2-node Ray cluster on loopback with token auth.

The test starts a head and a second node (``ray start --block``, each its own process, its own
``--temp-dir`` and ports, the token in an isolated HOME), submits the clean job with
``ray job submit --working-dir <repo>``, checks every row of its outputs, shows that submissions
without the token or with a wrong one are refused, then runs the worker-kill drill on the same
cluster (``_drill_worker_kill.py``: a Train worker SIGKILLed mid-epoch, one worker per node), and
stops exactly the two processes it started (never ``ray stop``: other Ray instances on the
machine stay up). Other tests' session Ray is not used. About 3 minutes on an idle 2-core box.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest

from jumpray.data.convert import write_fashion_mnist
from jumpray.data.fashion_mnist import load_fashion_mnist

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).parents[2]
RAY = Path(sys.executable).with_name("ray")
N = 300
# The node flags whose defaults are fixed ports (the dashboard agent's 52365, the client
# server's 10001): two nodes on one machine, or a second Ray beside this one, would collide.
NODE_PORTS = (
    "--node-manager-port",
    "--object-manager-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--metrics-export-port",
    "--runtime-env-agent-port",
)


def _free_ports(n: int) -> list[int]:
    """n distinct free loopback ports (held together while chosen, so they differ; choose every
    port of a test in one call: a port released by one call can come back from the next)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _node_flags(ports: list[int]) -> list[str]:
    flags = []
    for flag, port in zip(NODE_PORTS, ports, strict=True):
        flags += [flag, str(port)]
    return flags


def _clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any Ray address or auth setting, plus ``extra``.

    tests/conftest.py sets ``RAY_AUTH_MODE=disabled`` for the session's throwaway Ray; the
    cluster here and its clients choose their own.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RAY_AUTH", "RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"))
    }
    return env | extra


def _alive_nodes(dashboard: str, token: str) -> int:
    """ALIVE nodes by the State API (with the token: the dashboard refuses requests without)."""
    req = urllib.request.Request(
        f"{dashboard}/api/v0/nodes?limit=100", headers={"Authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        nodes = json.load(resp)["data"]["result"]["result"]
    return sum(node["state"] == "ALIVE" for node in nodes)


def _wait_for_nodes(
    dashboard: str, token: str, procs: list[subprocess.Popen], n: int, logs: Path
) -> None:
    """Until the State API shows n ALIVE nodes; fails with the nodes' logs if one exits."""
    deadline = time.monotonic() + 180
    while True:
        for proc in procs:
            if proc.poll() is not None:
                tails = [p.read_text()[-3000:] for p in sorted(logs.glob("*.log"))]
                pytest.fail(f"ray start exited early: {proc.args}\n" + "\n".join(tails))
        try:
            if _alive_nodes(dashboard, token) >= n:
                return
        except OSError:  # the dashboard is not up yet
            pass
        assert time.monotonic() < deadline, f"the cluster did not reach {n} nodes"
        time.sleep(1)


def _our_processes(marker: str) -> list[psutil.Process]:
    """Processes whose command line or environment names ``marker`` (this test's temp root).

    The environment catches descendants (raylet, workers, the job's driver) whatever their
    command line says: all inherit the nodes' environment.
    """
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if proc.pid == os.getpid():
                continue
            if marker in " ".join(proc.info["cmdline"] or []) or (
                proc.environ().get("JUMPRAY_TEST_CLUSTER") == marker
            ):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return found


def _stop(procs: list[subprocess.Popen], marker: str) -> None:
    """SIGTERM each ``ray start --block`` we started (worker node first), then check that no
    process of this cluster is left. ``ray stop`` would take every Ray on the machine down."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # SIGINT does not stop a --block node
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    deadline = time.monotonic() + 30
    while (left := _our_processes(marker)) and time.monotonic() < deadline:
        time.sleep(0.5)
    for proc in left:  # only ours (they carry this test's unique marker); fail below
        proc.kill()
    assert not left, f"processes of the test cluster outlived it: {[p.pid for p in left]}"


def _submit(env: dict[str, str], dashboard: str, *args: str) -> subprocess.CompletedProcess:
    cmd = [str(RAY), "job", "submit", "--address", dashboard, *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def _submit_job(
    home: Path, dashboard: str, job_id: str, runtime_env: dict, entrypoint: list[str]
) -> None:
    """``ray job submit --no-wait`` of ``entrypoint`` with the token and the repo as working dir."""
    submitted = _submit(
        _clean_env(HOME=str(home), RAY_AUTH_MODE="token"),
        dashboard,
        "--no-wait",
        "--submission-id",
        job_id,
        "--working-dir",
        str(ROOT),
        "--runtime-env-json",
        json.dumps(runtime_env),
        "--",
        *entrypoint,
    )
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr


def test_clean_submitted_to_a_two_node_token_cluster(tmp_path, fashion_mnist_dir):
    # Sockets live under the temp dir, whose path length Ray limits: keep it short and unique.
    root = Path(f"/tmp/jr-{secrets.token_hex(4)}")
    home, empty_home = tmp_path / "home", tmp_path / "empty-home"
    home.mkdir()
    empty_home.mkdir()
    shards, out = tmp_path / "shards", tmp_path / "out"
    write_fashion_mnist(
        shards, split="train", limit=N, noise="sym:0.3", seed=0, max_samples_per_shard=100
    )

    subprocess.run(
        [str(RAY), "get-auth-token", "--generate"],
        env=_clean_env(HOME=str(home)),
        check=True,
        capture_output=True,
        timeout=120,
    )
    token = (home / ".ray" / "auth_token").read_text().strip()
    n = len(NODE_PORTS)
    gcs_port, dash_port, client_port, *node_ports = _free_ports(3 + 2 * n)
    dashboard = f"http://127.0.0.1:{dash_port}"
    # `python` in a job resolves through the node's PATH: the venv's bin first, as if activated
    # (docs/architecture.md, 'Ray notes: job entrypoint'). A node drains for up to 30 s on
    # SIGTERM (Ray's preemption handling); the head never finished draining after the jobs
    # and took 32 s to stop, so the nodes stop at once ('Ray notes: SIGTERM drains a node').
    node_env = _clean_env(
        HOME=str(home),
        RAY_AUTH_MODE="token",
        JUMPRAY_TEST_CLUSTER=str(root),
        PATH=f"{RAY.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",
    )
    head_cmd = [str(RAY), "start", "--head", "--block", "--port", str(gcs_port)]
    head_cmd += ["--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--disable-usage-stats"]
    head_cmd += ["--dashboard-host", "127.0.0.1", "--dashboard-port", str(dash_port)]
    head_cmd += ["--ray-client-server-port", str(client_port), "--temp-dir", str(root / "h")]
    head_cmd += ["--object-store-memory", str(256 * 1024**2), *_node_flags(node_ports[:n])]
    worker_cmd = [str(RAY), "start", "--block", "--address", f"127.0.0.1:{gcs_port}"]
    worker_cmd += ["--node-ip-address", "127.0.0.1", "--num-cpus", "1"]
    worker_cmd += ["--temp-dir", str(root / "w"), "--object-store-memory", str(256 * 1024**2)]
    worker_cmd += _node_flags(node_ports[n:])
    logs = tmp_path / "logs"
    logs.mkdir()

    started: list[subprocess.Popen] = []  # stopped in reverse order: worker node, then head
    try:
        started.append(_popen(head_cmd, node_env, logs / "head.log"))
        _wait_for_nodes(dashboard, token, started, 1, logs)
        started.append(_popen(worker_cmd, node_env, logs / "worker.log"))
        _wait_for_nodes(dashboard, token, started, 2, logs)

        job_id = f"jumpray-clean-{secrets.token_hex(4)}"
        clean = ["python", "-m", "jumpray.cli", "clean", "--shards", str(shards)]
        clean += ["--out", str(out), "--config", "configs/smoke.yaml", "tracking.enabled=false"]
        # Which Python and which jumpray the job runs: the venv's, from the uploaded working dir.
        probe = "import sys, importlib.util as u; print('PROBE', sys.executable, "
        probe += "u.find_spec('jumpray').origin)"
        # `ray job submit -- ARGS` quotes each argument: a compound command needs its own shell.
        entrypoint = ["sh", "-c", f"{shlex.join(['python', '-c', probe])} && {shlex.join(clean)}"]
        # The Train V2 cleaner talks to the State API; with a second Ray on the machine it must
        # be pointed at this cluster's dashboard (docs/architecture.md, 'Ray notes: placement
        # group cleanup').
        runtime_env = {"env_vars": {"RAY_API_SERVER_ADDRESS": dashboard}}
        _submit_job(home, dashboard, job_id, runtime_env, entrypoint)

        # Refused while the job runs: no token at all (no RAY_AUTH_*, a HOME without a token
        # file), and a wrong one.
        refused = _submit(_clean_env(HOME=str(empty_home)), dashboard, "--", "echo", "hi")
        assert refused.returncode != 0
        assert "authentication" in (refused.stdout + refused.stderr).lower()
        wrong = _clean_env(HOME=str(empty_home), RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="wrong")
        refused = _submit(wrong, dashboard, "--", "echo", "hi")
        assert refused.returncode != 0
        assert "invalid authentication token" in (refused.stdout + refused.stderr).lower()

        status, job_logs = _wait_for_job(dashboard, token, job_id)
        assert status == "SUCCEEDED", job_logs[-5000:]
        probe_line = next(line for line in job_logs.splitlines() if line.startswith("PROBE "))
        _, python, origin = probe_line.split()
        assert python == sys.executable
        assert "runtime_resources" in origin and str(ROOT) not in origin
        _check_outputs(out)

        # The fault drill of issue 17: a Train worker SIGKILLed mid-epoch, one worker per node.
        marker = tmp_path / "killed.txt"
        drill = ["python", "tests/integration/_drill_worker_kill.py", str(shards), str(marker)]
        job_id = f"jumpray-drill-{secrets.token_hex(4)}"
        _submit_job(home, dashboard, job_id, runtime_env, drill)
        status, job_logs = _wait_for_job(dashboard, token, job_id)
        line = next((x for x in job_logs.splitlines() if x.startswith("DRILL ")), None)
        assert status == "SUCCEEDED" and line is not None, job_logs[-5000:]
        facts = json.loads(line.removeprefix("DRILL "))
        assert marker.exists()  # the kill happened
        assert facts["worker_nodes"] == 2  # one worker on each node
        assert facts["epochs"] == [0, 1, 2] and max(facts["attempt_start_epoch"]) >= 1
        assert facts["every_sample_once"] and facts["flags_same_on_all_ranks"]
        assert facts["visits_per_sample"] == [3] and facts["num_samples"] == N
    finally:
        try:
            _stop(started[::-1], str(root))
        finally:
            shutil.rmtree(root, ignore_errors=True)


def _popen(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as f:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)


def _wait_for_job(dashboard: str, token: str, job_id: str) -> tuple[str, str]:
    """Poll the job to a terminal state (the token goes in a header: no env needed)."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(dashboard, headers={"Authorization": f"Bearer {token}"})
    deadline = time.monotonic() + 900
    while (status := client.get_job_status(job_id)) not in {
        JobStatus.SUCCEEDED,
        JobStatus.FAILED,
        JobStatus.STOPPED,
    }:
        if time.monotonic() > deadline:
            client.stop_job(job_id)
            break
        time.sleep(2)
    return str(status.value), client.get_job_logs(job_id)


def _check_outputs(out: Path) -> None:
    """Every sample once in labels.parquet, with the labels the shards were written with."""
    _, clean = load_fashion_mnist("train", limit=N)
    labels = pq.read_table(out / "labels.parquet").to_pydict()
    assert sorted(labels["idx"]) == list(range(N))
    assert len(set(labels["key"])) == N
    for idx, given, true in zip(
        labels["idx"], labels["given_label"], labels["clean_label"], strict=True
    ):
        assert true == clean[idx] and 0 <= given < 10
    noisy = sum(g != c for g, c in zip(labels["given_label"], labels["clean_label"], strict=True))
    assert pq.read_table(out / "quarantine.parquet").num_rows == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_samples"] == N and summary["num_quarantined"] == 0
    assert summary["num_label_issues"] == sum(labels["is_label_issue"])
    assert summary["true_noise_rate"] == pytest.approx(noisy / N)

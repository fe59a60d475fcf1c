"""Shared fixtures: seeding, one local Ray cluster per test session, GPU skipping, real data paths."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

# Quiet, predictable Ray for throwaway local clusters: docs/architecture.md, 'Ray notes: quiet
# environment' and 'Ray notes: token auth'.
for _k, _v in {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    "RAY_DEDUP_LOGS": "1",
    "RAY_AIR_NEW_OUTPUT": "0",
    "RAY_AUTH_MODE": "disabled",
    "RAY_TRAIN_V2_ENABLED": "1",
}.items():
    os.environ.setdefault(_k, _v)

# Under `pytest -n 2` (./run.sh test) the Ray tests run one after the other in the process
# RAY_TESTS_WORKER, and decide how long the run takes; every other test runs in the other process
# (pytest_xdist_make_scheduler). That one takes only the CPU the Ray tests leave idle (about a
# quarter of the 2 cores by vmstat): nice 19, below even Ray's helper processes (nice 15), which
# at nice 0 it had starved (the API test's first clean took 250 s instead of 60 s). Its torch
# threads wait for each other asleep, not spinning: a spinning thread whose partner is not
# running burns the idle CPU for nothing (the four-method test took 23 min at nice 10).
RAY_TESTS_WORKER = "gw0"
RAY_SCOPE = "ray"
# Unit tests that start processes which must meet within a timeout (two gloo ranks: 60 s) run
# with the Ray tests, at full priority, after them.
WITH_THE_RAY_TESTS = ("tests/unit/train/test_distributed.py",)
_WORKER = os.environ.get("PYTEST_XDIST_WORKER")
if _WORKER and _WORKER != RAY_TESTS_WORKER:
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # read when torch loads OpenMP (not loaded yet)
    os.nice(19 - os.nice(0))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Object storage for tests: a real S3 server (moto) on loopback, started by the `s3` fixture. The
# endpoint and keys are set here, at import, so every process this session starts (the local Ray,
# its workers, jumpray subprocesses) sees them, as a user's would from their environment; a
# real AWS account is never reachable from a test (docs/architecture.md, 'Object storage').
S3_PORT = _free_port()
os.environ.update(
    {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{S3_PORT}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing-secret-value",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
)
for _k in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
    os.environ.pop(_k, None)


@pytest.fixture(autouse=True)
def _seed_everything():
    random.seed(0)
    np.random.seed(0)
    try:
        import torch

        torch.manual_seed(0)
    except ImportError:  # pragma: no cover
        pass
    yield


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory):
    """One local 2-CPU Ray for the whole session (about 5 s once instead of per test).

    The dashboard is on: Train V2 cleanup needs the State API (docs/architecture.md,
    'Ray notes: dashboard for Train V2').
    """
    import ray

    from jumpray.ray_utils import init_ray

    if ray.is_initialized():
        ray.shutdown()
    init_ray(num_cpus=2, object_store_memory=512 * 1024**2, temp_dir=None, for_tests=True)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def fashion_mnist_dir() -> Path:
    """The real Fashion-MNIST idx files (Debian package or cache); skips loudly if absent."""
    from jumpray.data.fashion_mnist import find_fashion_mnist

    path = find_fashion_mnist(download=False)
    if path is None:
        pytest.fail(
            "Fashion-MNIST not found: run ./run.sh test (it installs dataset-fashion-mnist)"
        )
    return path


@pytest.fixture(scope="session")
def s3_server():
    """A moto S3 server on 127.0.0.1 (its own process, stopped by its PID at the end).

    Yields the endpoint URL. Buckets persist for the session; each test uses its own bucket
    (:func:`s3_bucket`).
    """
    moto = Path(sys.executable).with_name("moto_server")
    if not moto.exists():
        pytest.fail("moto_server is missing: run ./run.sh test (it installs the s3test extra)")
    proc = subprocess.Popen(
        [str(moto), "-H", "127.0.0.1", "-p", str(S3_PORT)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", S3_PORT), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"moto_server did not start on 127.0.0.1:{S3_PORT}")
                time.sleep(0.2)
        yield endpoint
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def s3_bucket(s3_server, request):
    """A fresh bucket for this test; yields ``s3://<bucket>``."""
    import boto3

    name = "t-" + "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:50]
    name = f"{name.rstrip('-')}-{os.getpid() % 10000}"
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=name)
    return f"s3://{name}"


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """How ``pytest -n 2`` (what ./run.sh test runs) shares the tests between its two processes:
    every test under tests/integration (and WITH_THE_RAY_TESTS) in RAY_TESTS_WORKER, one after
    the other in file order (they share the session's Ray, and two Ray instances on a machine
    break Ray's State API); every other test in the other process (each slow module whole: its
    module fixture trains for minutes), or in RAY_TESTS_WORKER once its Ray tests are done.
    (xdist's ``--dist loadgroup`` markers do not take effect with this pytest: the group suffix
    never reaches the node ids.)"""
    from xdist.scheduler import LoadScopeScheduling

    class RayTestsTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            if "/integration/" in f"/{path}" or path.endswith(WITH_THE_RAY_TESTS):
                return RAY_SCOPE
            if "/slow/" in f"/{path}":
                return path
            return nodeid

        def _assign_work_unit(self, node) -> None:
            # The base class sends the next unit in the queue to whichever node asks.
            ids = {n.gateway.id for n in self.nodes}
            ray_here = node.gateway.id == RAY_TESTS_WORKER or RAY_TESTS_WORKER not in ids
            if ray_here and RAY_SCOPE in self.workqueue:
                scope = RAY_SCOPE
            else:
                scope = next((s for s in self.workqueue if s != RAY_SCOPE), None)
            if scope is None:  # only the Ray tests are left, and they are not this node's
                return
            work_unit = self.workqueue.pop(scope)
            self.assigned_work.setdefault(node, {})[scope] = work_unit
            collection = self.registered_collections[node]
            node.send_runtest_some(
                [collection.index(nodeid) for nodeid, done in work_unit.items() if not done]
            )

    return RayTestsTogether(config, log)


def pytest_runtest_setup(item):
    if item.get_closest_marker("gpu"):
        import torch

        if not torch.cuda.is_available():
            pytest.skip("needs CUDA")

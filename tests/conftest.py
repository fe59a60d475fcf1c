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
    # Ray starts its helper processes (Train's controller, Ray Data's tasks, the scoring actors)
    # at nice 15: against the other pytest process (nice 0, see pytest_runtest_setup) they got a
    # thirtieth of a shared core, and each Ray test's start-up waited on them.
    "RAY_worker_niceness": "0",
}.items():
    os.environ.setdefault(_k, _v)

# The niceness of the pytest process that runs no Ray test, under `pytest -n 2`: it takes the
# cores the Ray tests leave idle (a quarter of them, measured), about a tenth of a core when both
# are busy, instead of half.
OTHER_TESTS_NICENESS = 10


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
    every test under tests/integration in one process, one after the other in file order (they
    share the session's Ray, and two Ray instances on a machine break Ray's State API); each slow
    module whole in one process (its module fixture trains for minutes); each unit test on its
    own, so the unit tests run beside the Ray tests. (xdist's ``--dist loadgroup`` markers do not
    take effect with this pytest: the group suffix it writes never reaches the node ids.)"""
    from xdist.scheduler import LoadScopeScheduling

    class RayTestsTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            if "/integration/" in f"/{path}":
                return "ray"
            if "/slow/" in f"/{path}":
                return path
            return nodeid

    return RayTestsTogether(config, log)


def pytest_runtest_setup(item):
    if (
        os.environ.get("PYTEST_XDIST_WORKER")
        and "/integration/" not in f"/{item.nodeid}"
        and os.nice(0) < OTHER_TESTS_NICENESS
    ):
        # The Ray tests decide how long the run takes (their process runs nothing else until
        # they are done: pytest_xdist_make_scheduler), so the other process yields the CPU.
        os.nice(OTHER_TESTS_NICENESS - os.nice(0))
    if item.get_closest_marker("gpu"):
        import torch

        if not torch.cuda.is_available():
            pytest.skip("needs CUDA")

"""Shared fixtures: seeding, one local Ray cluster per test session, GPU skipping, real data paths."""

from __future__ import annotations

import os
import random
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


def pytest_runtest_setup(item):
    if item.get_closest_marker("gpu"):
        import torch

        if not torch.cuda.is_available():
            pytest.skip("needs CUDA")

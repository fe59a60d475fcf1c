"""The bench's paper profile on a GPU (skipped without CUDA): its timing runs really take the GPU
path of every method alike, bf16 autocast and channels-last weights, and measure GPU memory."""

from __future__ import annotations

import numpy as np
import pytest

from jumpray.jobs import bench
from jumpray.jobs._bench_worker import run_timing_spec

pytestmark = pytest.mark.gpu


def _data(path, n=64):
    rng = np.random.default_rng(0)
    label = rng.integers(0, 10, n)
    np.savez(
        path,
        image=rng.integers(0, 256, (n, 1, 28, 28), dtype=np.uint8),
        given_label=label,
        clean_label=label,
        test_image=rng.integers(0, 256, (16, 1, 28, 28), dtype=np.uint8),
        test_label=label[:16],
        realized_rate=np.float64(0.0),
    )
    return path


@pytest.mark.parametrize("method", ["jumpteaching", "coteaching"])
def test_paper_profile_timing_runs_use_bf16_autocast_and_channels_last(tmp_path, method):
    cfg = bench.bench_configs("paper", [method], overrides=["train.batch_size=16"])[method]
    row = run_timing_spec(
        {
            "phase": "timing",
            "method": method,
            "round": 0,
            "data": str(_data(tmp_path / "data.npz")),
            "config": cfg.model_dump(),
            "device": "cuda",
            "steps": 3,
            "warmup_steps": 1,
        }
    )
    assert row["amp"] == "bfloat16" and row["channels_last"] is True
    assert row["num_samples"] == 3 * 16 and row["samples_per_s"] > 0
    assert row["peak_memory_mb"] > 0  # torch.cuda.max_memory_allocated above the baseline

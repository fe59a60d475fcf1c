"""GPU paths (skipped without CUDA): AMP (bf16, and fp16 with a loss scaler), channels-last and DDP
over NCCL on one GPU, with the same loop the Ray Train worker runs; then one Ray Train GPU worker."""

from __future__ import annotations

import socket
from datetime import timedelta

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from jumpray.checkpoint import STATE_FILE
from jumpray.config import load_config
from jumpray.train.distributed import all_gather_pairs, all_reduce_sum, any_rank
from jumpray.train.loop import train_epoch
from jumpray.train.methods import build_method

pytestmark = pytest.mark.gpu

N, C, B = 64, 4, 16


def _config(scaling=None, **train):
    return load_config(
        None,
        {
            "model": {"backbone": "cnn28", "semantic_dim": 4},
            "train": {"epochs": 3, "batch_size": B, **train},
            "jump": {"warmup_epochs": 1},
            "scaling": scaling or {},
            "tracking": {"enabled": False},
        },
    )


def _batches():
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (N, 1, 28, 28), generator=g, dtype=torch.uint8)
    labels = torch.arange(N) % C
    return [
        (images[i : i + B].float() / 255.0, labels[i : i + B], torch.arange(i, i + B))
        for i in range(0, N, B)
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_ddp_channels_last_on_one_gpu(amp):
    dist.init_process_group(
        "nccl",
        init_method=f"tcp://127.0.0.1:{_free_port()}",
        rank=0,
        world_size=1,
        timeout=timedelta(seconds=120),
    )
    try:
        torch.cuda.set_device(0)
        cfg = _config(amp=amp, channels_last=True)
        method = build_method(
            cfg,
            num_classes=C,
            num_samples=N,
            in_channels=1,
            device="cuda",
            wrap=DistributedDataParallel,
        )
        method.global_count = all_reduce_sum
        assert isinstance(method.nets[0], DistributedDataParallel)
        assert method.amp_dtype == (torch.bfloat16 if amp == "bf16" else torch.float16)
        assert method.scaler.is_enabled() == (amp == "fp16")
        conv = next(p for p in method.nets[0].parameters() if p.dim() == 4)
        assert conv.is_cuda and conv.is_contiguous(memory_format=torch.channels_last)
        for epoch in range(3):
            counts = train_epoch(method, _batches(), epoch=epoch, device="cuda", sync=any_rank)
            method.end_epoch(epoch, gather=all_gather_pairs)
            assert counts["num_samples"] == N and np.isfinite(counts["loss_sum"])
        assert method.flags.visits().tolist() == [3] * N
        assert all(torch.isfinite(p).all() for p in method.nets[0].parameters())
        if amp == "fp16":
            assert method.state_dict()["scaler"]["scale"] > 0
    finally:
        dist.destroy_process_group()


def test_ray_train_gpu_worker_with_amp(ray_cluster, tmp_path):
    from jumpray.data.convert import write_arrays
    from jumpray.data.shards import read_shards
    from jumpray.train.launch import fit

    rng = np.random.default_rng(0)
    write_arrays(
        tmp_path / "shards",
        rng.integers(0, 256, size=(256, 28, 28), dtype=np.uint8),
        np.arange(256) % C,
        num_classes=C,
        noise="sym:0.2",
        max_samples_per_shard=100,
    )
    cfg = _config({"use_gpu": True, "num_workers": 1}, amp="bf16")
    result = fit(cfg, train=read_shards(tmp_path / "shards"), out_dir=tmp_path / "out")
    assert [m["epoch"] for m in result.history] == [0, 1, 2]
    assert all(m["num_unique_seen"] == 256 for m in result.history)
    # The weights were trained on the GPU (saved from CUDA tensors).
    raw = torch.load(result.checkpoint_dir / STATE_FILE, weights_only=False)
    assert next(iter(raw["method"]["nets"][0].values())).is_cuda

"""Data-parallel mechanics on a real 2-process gloo group (no Ray): unequal shards do not hang DDP,
every rank ends an epoch with the same flags and weights, and every idx is trained on once."""

from __future__ import annotations

import os
import socket
import time
from datetime import timedelta
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.nn.parallel import DistributedDataParallel

from jumpray.train.distributed import (
    Coverage,
    all_gather_pairs,
    all_reduce_counts,
    all_reduce_sum,
    any_rank,
    digest,
    history_digest,
    same_on_all_ranks,
)
from jumpray.train.loop import train_epoch

from ._tiny import N, tiny_batches, tiny_config, tiny_method

EPOCHS = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank_main(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=60))
    result: dict = {}
    # The helpers with unequal lengths and a non-bool dtype.
    mine = (
        (torch.tensor([0, 1, 2]), torch.tensor([7, 8, 9]))
        if rank == 0
        else (
            torch.tensor([5]),
            torch.tensor([4]),
        )
    )
    result["gathered"] = all_gather_pairs(*mine)
    # Float rows travel bit-exactly (the training history's records).
    rows = torch.tensor([[0.1, 2.0], [1 / 3, -5.5]]) if rank == 0 else torch.tensor([[7.25, 1e-30]])
    result["gathered_rows"] = all_gather_pairs(torch.tensor([4, 6] if rank == 0 else [1]), rows)
    # A rank whose split got no sample at all (one shard, two workers) still takes part.
    empty = torch.zeros(0, dtype=torch.int64)
    flags = torch.tensor([True, False]) if rank == 0 else torch.zeros(0, dtype=torch.bool)
    result["gathered_empty"] = all_gather_pairs(torch.tensor([2, 3]) if rank == 0 else empty, flags)
    rows = torch.ones(2, 3) if rank == 0 else torch.zeros(0, 3)
    result["gathered_empty_rows"] = all_gather_pairs(
        torch.tensor([2, 3]) if rank == 0 else empty, rows
    )
    result["counts"] = all_reduce_counts({"n": rank + 1.0, "t": 10.0 * (rank + 1)}, maximum=("t",))
    result["sum"] = all_reduce_sum(rank + 5)
    result["any"] = (any_rank(rank == 1), any_rank(False))

    # Jump-teaching under DDP: rank 0 holds 2 batches (8 samples), rank 1 one batch (4 samples).
    cfg = tiny_config(jump={"warmup_epochs": 1}, train={"epochs": EPOCHS})
    method = tiny_method(cfg, wrap=DistributedDataParallel)
    method.global_count = all_reduce_sum
    batches = tiny_batches()
    mine_batches = batches[:2] if rank == 0 else batches[2:]
    cov = Coverage(N)
    history = []
    for epoch in range(EPOCHS):
        method.begin_epoch(epoch, rank=rank)
        counts = train_epoch(
            method, mine_batches, epoch=epoch, sync=any_rank, on_batch=lambda b, out: cov.add(b.idx)
        )
        dummies = counts["num_dummy_steps"]
        total = all_reduce_counts(counts, maximum=("train_time_s",))
        method.end_epoch(epoch, gather=all_gather_pairs)
        history.append({"dummies": dummies, "num_samples": total["num_samples"]} | cov.summary())
    result["history"] = history
    result["flags"] = method.flags.state_dict()
    result["history_state"] = method.history.state_dict()
    result["history_agrees"] = same_on_all_ranks(history_digest(method.history))
    result["digest_agrees"] = same_on_all_ranks(
        digest(result["flags"]["slots"], result["flags"]["visits"])
    )
    result["digest_differs"] = same_on_all_ranks(rank)
    result["params"] = [p.detach().clone() for p in method.nets[0].parameters()]
    # The baselines under DDP with the same unequal split: every net stays in sync.
    for name in ("ce", "coteaching", "jocor"):
        extra = {"forget_rate": 0.5, "num_gradual": 0} if name != "ce" else {}
        other = tiny_method(
            tiny_config(method={"name": name, **extra}), wrap=DistributedDataParallel
        )
        dummies = []
        for epoch in range(2):
            counts = train_epoch(other, mine_batches, epoch=epoch, sync=any_rank)
            dummies.append(counts["num_dummy_steps"])
            other.end_epoch(epoch)
        result[name] = {
            "dummies": dummies,
            "params": [p.detach().clone() for net in other.nets for p in net.parameters()],
        }
    torch.save(result, Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


def _run_two_ranks(tmp_path: Path, timeout_s: float = 120.0) -> list[dict]:
    ctx = mp.spawn(_rank_main, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=False)
    deadline = time.monotonic() + timeout_s
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("the two ranks hung (a collective was not joined by every rank)")
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]


def test_two_gloo_ranks_with_unequal_shards(tmp_path):
    r0, r1 = _run_two_ranks(tmp_path)
    for r in (r0, r1):
        idx, vals = r["gathered"]
        assert idx.tolist() == [0, 1, 2, 5] and vals.tolist() == [7, 8, 9, 4]
        assert vals.dtype == torch.int64
        idx, rows = r["gathered_rows"]
        assert idx.tolist() == [4, 6, 1] and rows.dtype == torch.float32
        assert torch.equal(rows, torch.tensor([[0.1, 2.0], [1 / 3, -5.5], [7.25, 1e-30]]))
        idx, flags = r["gathered_empty"]
        assert idx.tolist() == [2, 3] and flags.tolist() == [True, False]
        idx, rows = r["gathered_empty_rows"]
        assert idx.tolist() == [2, 3] and torch.equal(rows, torch.ones(2, 3))
        assert r["counts"] == {"n": 3.0, "t": 20.0}
        assert r["sum"] == 11 and r["any"] == (True, False)
    for epoch in range(EPOCHS):
        h0, h1 = r0["history"][epoch], r1["history"][epoch]
        # Rank 1 stood in once per epoch for the batch it did not have.
        assert (h0["dummies"], h1["dummies"]) == (0, 1)
        assert h0["num_samples"] == h1["num_samples"] == N
        assert h0["num_unique_seen"] == N and h0["num_seen_multiple"] == h0["num_unseen"] == 0
    # Every rank applied the same gathered updates and the same averaged gradients.
    assert torch.equal(r0["flags"]["slots"], r1["flags"]["slots"])
    assert r0["flags"]["visits"].tolist() == [EPOCHS] * N
    assert 0 < int(r0["flags"]["slots"].sum()) < N
    for p0, p1 in zip(r0["params"], r1["params"], strict=True):
        torch.testing.assert_close(p0, p1, rtol=0, atol=0)
    assert r0["digest_agrees"] and r1["digest_agrees"]
    # The per-sample training history: identical on both ranks, every sample once per epoch.
    assert r0["history_agrees"] and r1["history_agrees"]
    for name, value in r0["history_state"].items():
        if torch.is_tensor(value):
            assert torch.equal(value, r1["history_state"][name]), name
    assert r0["history_state"]["weight"].tolist() == [float(EPOCHS)] * N
    assert r0["history_state"]["flag_visits"].tolist() == [EPOCHS - 1] * N
    assert not r0["digest_differs"] and not r1["digest_differs"]
    for name in ("ce", "coteaching", "jocor"):
        assert r0[name]["dummies"] == [0, 0] and r1[name]["dummies"] == [1, 1]
        for p0, p1 in zip(r0[name]["params"], r1[name]["params"], strict=True):
            torch.testing.assert_close(p0, p1, rtol=0, atol=0)


def test_digest_is_order_sensitive_and_single_process_agrees():
    a = torch.tensor([True, False, True])
    assert digest(a) == digest(a.clone()) != digest(torch.tensor([True, True, False]))
    assert digest(a, torch.tensor([1, 2])) != digest(a, torch.tensor([2, 1]))
    assert same_on_all_ranks(12345)


def test_single_process_helpers_are_identities():
    idx, vals = all_gather_pairs(torch.tensor([3, 1]), torch.tensor([True, False]))
    assert idx.tolist() == [3, 1] and vals.tolist() == [True, False]
    assert all_reduce_sum(4) == 4 and any_rank(True) and not any_rank(False)
    assert all_reduce_counts({"a": 1}) == {"a": 1.0}
    cov = Coverage(5)
    cov.add(torch.tensor([0, 1, 1]))
    assert cov.summary() == {"num_unique_seen": 2.0, "num_seen_multiple": 1.0, "num_unseen": 3.0}
    assert cov.summary()["num_unseen"] == 5.0  # reset after each summary
    with pytest.raises(ValueError, match="-1 is the padding"):
        all_gather_pairs(torch.tensor([-1]), torch.tensor([True]))

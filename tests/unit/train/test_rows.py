"""In-memory rows of a Ray Train worker (``RowCache``) and the worker thread rule, without Ray."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from jumpray.config import load_config
from jumpray.ray_utils import torch_threads
from jumpray.train.rows import RowCache


def _blocks(idx_order: list[int], *, block: int = 7) -> list[dict[str, np.ndarray]]:
    """Numpy blocks as a Ray split hands them out (with a string column the cache must skip)."""
    idx = np.asarray(idx_order, dtype=np.int64)
    out = []
    for start in range(0, len(idx), block):
        part = idx[start : start + block]
        out.append(
            {
                "key": np.asarray([f"s{i}" for i in part]),
                "idx": part,
                "given_label": part % 10,
                "clean_label": (part + 1) % 10,
                "image": np.broadcast_to(part[:, None, None, None] % 251, (len(part), 1, 4, 4))
                .astype(np.uint8)
                .copy(),
            }
        )
    return out


def _cache(shuffle_buffer: int, splits: dict[str, list[int] | None]):
    reads: list[str] = []
    cfg = load_config(None, {"data": {"shuffle_buffer": shuffle_buffer}})

    def read(name):
        reads.append(name)
        order = splits.get(name)
        return None if order is None else iter(_blocks(order))

    return RowCache(cfg, read), reads


def _epoch_idx(cache: RowCache, seed: int | None, batch_size: int = 8) -> list[int]:
    return [
        i
        for batch in cache.batches("train", batch_size=batch_size, seed=seed)
        for i in batch[2].tolist()
    ]


def test_read_order_is_kept_without_a_shuffle_buffer_and_the_split_is_read_once():
    order = [5, 3, 9, 0, 1, 8, 2, 7, 4, 6, 12, 10, 11]
    cache, reads = _cache(0, {"train": order})
    batches = list(cache.batches("train", batch_size=4, seed=123))
    assert [len(b[2]) for b in batches] == [4, 4, 4, 1]
    assert [i for b in batches for i in b[2].tolist()] == order
    image, given, idx, clean = batches[0]
    assert image.dtype == torch.uint8 and image.shape == (4, 1, 4, 4)
    assert torch.equal(given, idx % 10) and torch.equal(clean, (idx + 1) % 10)
    assert torch.equal(image[:, 0, 0, 0].long(), idx % 251)
    # Later epochs come from memory: the split is read once.
    assert _epoch_idx(cache, 7) == order
    assert reads == ["train"]


def test_shuffled_epochs_visit_every_row_once_and_depend_on_the_seed_alone():
    n = 50
    arrival_a = list(np.random.default_rng(0).permutation(n))
    arrival_b = list(np.random.default_rng(1).permutation(n))
    a, _ = _cache(2048, {"train": arrival_a})
    b, _ = _cache(2048, {"train": arrival_b})
    e0, e1 = _epoch_idx(a, 100), _epoch_idx(a, 101)
    assert sorted(e0) == sorted(e1) == list(range(n))  # every idx exactly once per epoch
    assert e0 != e1  # a new order each epoch
    # The same seed gives the same order whatever order the rows arrived in (exact resume).
    assert _epoch_idx(b, 100) == e0 and _epoch_idx(b, 101) == e1
    # Labels and images stay with their idx after sorting and shuffling.
    for image, given, idx, _clean in a.batches("train", batch_size=16, seed=5):
        assert torch.equal(given, idx % 10) and torch.equal(image[:, 0, 1, 2].long(), idx % 251)


def test_missing_and_empty_splits():
    cache, _ = _cache(0, {"train": [], "test": None})
    assert list(cache.batches("train", batch_size=4, seed=1)) == []
    assert cache.batches("test", batch_size=4, seed=None) is None


@pytest.mark.parametrize(
    "kwargs,expected",
    [
        # An explicit count wins.
        ({"requested": 3, "data_in_memory": False}, 3),
        # Reproducible runs use 1 thread whatever the machine.
        ({"deterministic": True}, 1),
        # Streaming: the reader needs the other cores; keep what the reserved CPUs give.
        ({"data_in_memory": False, "fallback": 1}, 1),
        # In memory: the node's CPUs shared by the processes on it.
        ({}, 2),
        ({"processes_on_node": 2}, 1),
        ({"processes_on_node": 3}, 1),
        ({"node_cpus": 16.0, "processes_on_node": 2, "usable_cores": 16}, 8),
        # Never more than the cores this process may run on.
        ({"node_cpus": 16.0, "usable_cores": 4}, 4),
    ],
)
def test_thread_rule(kwargs, expected):
    args = {
        "requested": None,
        "node_cpus": 2.0,
        "processes_on_node": 1,
        "data_in_memory": True,
        "deterministic": False,
        "fallback": 1,
        "usable_cores": 2,
    } | kwargs
    assert torch_threads(**args) == expected

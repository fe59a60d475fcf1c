"""A training process's rows: its passes over the named Ray Datasets it trains and evaluates on.

:class:`DatasetBatches` is the data half of a worker context (the Ray Train worker's and the
driver's with ``scaling.num_workers=0``): a materialized run keeps the process's rows in a
:class:`RowCache`, read once and served every epoch from tensors (the ``shuffle_buffer: 0`` read
order, or a permutation drawn from the epoch's shuffle seed over the rows sorted by idx); otherwise
every pass streams through Ray Data, shuffled locally from the same seed. No Ray import here: the
datasets are handed in.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from jumpray.config import RunConfig
from jumpray.train.local import ArraySet, iter_batches

__all__ = ["DatasetBatches", "RowCache", "preload_rows", "TRAIN_COLUMNS"]

# The columns a worker reads (strings such as key/shard cannot become tensors).
TRAIN_COLUMNS = ["image", "given_label", "idx", "clean_label"]


def _to_tensor(values: np.ndarray) -> Tensor:
    return torch.from_numpy(np.ascontiguousarray(values))


class RowCache:
    """This process's rows of in-memory datasets: read once, then every epoch from tensors.

    Args:
        cfg: the run config (``data.shuffle_buffer``: 0 keeps the read order).
        read: ``name -> iterable of numpy batches`` (dicts with :data:`TRAIN_COLUMNS`; other
            columns are ignored), or None when there is no such dataset.
    """

    def __init__(self, cfg: RunConfig, read: Callable[[str], Iterable[dict] | None]):
        self.cfg, self.read = cfg, read
        self.rows: dict[str, ArraySet | None] = {}

    def load(self, name: str, *, shuffled: bool) -> ArraySet | None:
        """Read ``name`` into memory once; ``shuffled`` rows are kept sorted by idx."""
        if name in self.rows:
            return self.rows[name]
        source = self.read(name)
        rows = None
        if source is not None:
            parts: dict[str, list[np.ndarray]] = {c: [] for c in TRAIN_COLUMNS}
            for batch in source:
                for c in TRAIN_COLUMNS:
                    if c in batch:
                        parts[c].append(np.asarray(batch[c]))
            if parts["idx"]:
                cols = {c: _to_tensor(np.concatenate(v)) for c, v in parts.items() if v}
                rows = ArraySet(
                    cols["image"], cols["given_label"], cols["idx"], cols.get("clean_label")
                )
                if shuffled:
                    rows = rows.sorted_by_idx()
            else:
                rows = ArraySet(
                    torch.empty(0, 1, 1, 1, dtype=torch.uint8),
                    torch.empty(0, dtype=torch.int64),
                    torch.empty(0, dtype=torch.int64),
                )
        self.rows[name] = rows
        return rows

    def shuffles(self, seed: int | None) -> bool:
        return seed is not None and self.cfg.data.shuffle_buffer > 0

    def batches(self, name: str, *, batch_size: int, seed: int | None) -> Iterable[Any] | None:
        rows = self.load(name, shuffled=self.shuffles(seed))
        if rows is None:
            return None
        generator = torch.Generator().manual_seed(seed) if self.shuffles(seed) else None
        return iter_batches(rows, batch_size=batch_size, generator=generator)


class DatasetBatches:
    """The data half of a :class:`WorkerContext`: passes over named Ray Datasets.

    A subclass says where a named dataset is (:meth:`source`: a Ray Dataset, or this worker's
    ``DataIterator``). Materialized runs keep the rows in a :class:`RowCache`; otherwise every
    pass streams, shuffled locally (``data.shuffle_buffer``) from the epoch's seed.

    Args:
        cfg: the run config.
        in_memory: every dataset was materialized: keep this process's rows in memory instead of
            streaming them every epoch.
    """

    def __init__(self, cfg: RunConfig, *, in_memory: bool = False):
        self.cfg = cfg
        self.cache = RowCache(cfg, self._numpy_batches) if in_memory else None

    def source(self, name: str) -> Any:
        """The dataset (or iterator) called ``name``, or None."""
        raise NotImplementedError

    def _numpy_batches(self, name: str) -> Iterable[dict] | None:
        source = self.source(name)
        if source is None:
            return None
        return source.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=2)

    def preload(self) -> float:
        """Read the splits into memory (in-memory runs); returns the seconds it took."""
        return preload_rows(self.cache)

    def batches(self, name: str, *, batch_size: int, seed: int | None) -> Iterable[Any] | None:
        if self.cache is not None:
            return self.cache.batches(name, batch_size=batch_size, seed=seed)
        source = self.source(name)
        if source is None:
            return None
        buffer = self.cfg.data.shuffle_buffer if seed is not None else 0
        return source.iter_torch_batches(
            batch_size=batch_size,
            device="cpu",  # uint8 images; to_batch moves them (4x fewer bytes than float)
            local_shuffle_buffer_size=buffer or None,
            local_shuffle_seed=seed if buffer else None,
        )


def preload_rows(cache: RowCache | None) -> float:
    """Load the train split (sorted when it is shuffled) and the test split; seconds taken."""
    if cache is None:
        return 0.0
    start = time.perf_counter()
    cache.load("train", shuffled=cache.cfg.data.shuffle_buffer > 0)
    cache.load("test", shuffled=False)
    return time.perf_counter() - start

"""How Ray Train hands each worker its rows: :class:`UnequalSplit`.

Its own torch-free module on purpose: Ray Train's DatasetManager process unpickles the data
config, so it imports this module; importing it from :mod:`jumpray.train.launch` pulled torch
into that process and cost every run about 3 s of start-up.
"""

from __future__ import annotations

from typing import Any

import ray.train
from ray.data.dataset import MaterializedDataset

__all__ = ["UnequalSplit"]


class UnequalSplit(ray.train.DataConfig):
    """Split every dataset with ``streaming_split(equal=False)``: no sample is dropped.

    Ranks then get unequal numbers of rows; the worker's per-step vote and dummy steps keep DDP
    aligned (jumpray.train.loop.train_epoch).

    One worker and a dataset already in the object store (the launcher materialized it): there is
    nothing to split or to stream, so the worker gets the dataset's own iterator, the same rows
    in the same order. ``streaming_split`` would start a split-coordinator actor per dataset, a
    process of its own that imports Ray Data: 2-3 s of every small run's start-up on 2 cores
    (docs/architecture.md, 'Ray notes: start-up of a Train run').

    Args:
        preserve_order: deterministic row order (``data.preserve_order``).
    """

    def __init__(self, *, preserve_order: bool = False):
        super().__init__()
        self.preserve_order = preserve_order

    def configure(
        self,
        datasets: dict[str, Any],
        world_size: int,
        worker_handles: Any,
        worker_node_ids: Any,
        **kwargs: Any,
    ) -> list[dict[str, Any]]:
        output: list[dict[str, Any]] = [{} for _ in range(world_size)]
        for name, ds in datasets.items():
            whole = world_size == 1 and isinstance(ds, MaterializedDataset)
            ds = ds.copy(ds)
            if ds.name is None:
                ds.set_name(name)
            options = self._resolve_execution_options(name)
            options.preserve_order = self.preserve_order or options.preserve_order
            ds.context.execution_options = options
            if whole:
                output[0][name] = ds.iterator()
                continue
            splits = ds.streaming_split(world_size, equal=False, locality_hints=worker_node_ids)
            for rank, split in enumerate(splits):
                output[rank][name] = split
        return output

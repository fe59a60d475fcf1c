"""The metric a sweep ranks by when clean labels are unknown: a noisy held-out split.

Each trial trains on the shards minus a seeded, stratified (by given label) held-out split and
reports ``val_accuracy``, the accuracy on the split's *given* labels. Every trial holds out the
same samples (the seed is the base config's, never a searched one), so the values compare.
Why this metric and not a detection-consistency score: measured rank correlation with clean test
accuracy, README "jumpray tune".
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jumpray.data.scan import FolderScan
from jumpray.data.shards import ShardSource

__all__ = ["stratified_holdout", "usable_labels", "split_holdout"]


def stratified_holdout(
    idx: np.ndarray, given_label: np.ndarray, *, fraction: float, seed: int
) -> np.ndarray:
    """The held-out ids: per given class, ``round(fraction x n_c)`` drawn without replacement.

    A class with at least 2 samples gives at least 1 and keeps at least 1 for training.

    Args:
        idx: (N,) int64 sample ids.
        given_label: (N,) int64 labels as given (noisy).
        fraction: share held out, in (0, 1).
        seed: the draw's seed (same seed and data, same split).

    Returns:
        Sorted (M,) int64 ids.
    """
    rng = np.random.default_rng(seed)
    picked = [np.zeros(0, np.int64)]
    for c in np.unique(given_label):
        members = np.sort(idx[given_label == c])
        if len(members) < 2:
            continue
        k = min(max(int(round(fraction * len(members))), 1), len(members) - 1)
        picked.append(rng.choice(members, size=k, replace=False))
    return np.sort(np.concatenate(picked)).astype(np.int64)


def usable_labels(scan: FolderScan) -> tuple[np.ndarray, np.ndarray]:
    """(idx, given_label) of every sample the scan kept, from headers only (no image decoded)."""
    ids, labels = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for shard in scan.shards:
        keep = np.ones(len(shard.keys), bool)
        keep[np.asarray(scan.drop.get(shard.file, []), np.int64)] = False
        if scan.idx_assigned:
            shard_idx = scan.idx_base[shard.file] + np.arange(len(shard.keys), dtype=np.int64)
        else:
            shard_idx = shard.idx
        ids.append(shard_idx[keep])
        labels.append(shard.given[keep])
    return np.concatenate(ids), np.concatenate(labels)


def _rows(batch: dict[str, np.ndarray], held: np.ndarray, inside: bool) -> dict[str, np.ndarray]:
    mask = np.isin(batch["idx"], held)
    if not inside:
        mask = ~mask
    return {k: v[mask] for k, v in batch.items()}


def split_holdout(
    source: ShardSource, *, fraction: float, seed: int
) -> tuple[ShardSource, ShardSource, np.ndarray]:
    """``source`` as (training rows, held-out rows, held-out ids).

    Both share ``source``'s quarantine sink: close ``source`` only, once both are read.
    """
    idx, given = usable_labels(source.scan)
    held = stratified_holdout(idx, given, fraction=fraction, seed=seed)
    options = {"batch_format": "numpy", "batch_size": None}
    train = source.dataset.map_batches(_rows, fn_args=(held, False), **options)
    val = source.dataset.map_batches(_rows, fn_args=(held, True), **options)
    return (
        dataclasses.replace(source, dataset=train),
        dataclasses.replace(source, dataset=val),
        held,
    )

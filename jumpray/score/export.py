"""After scoring: the cleaned shard folder and the gallery's images, read back from the tars.

:func:`write_clean_shards` copies the kept samples of a shard folder into a new one
(docs/contract.md, ``clean-shards/``), tar by tar: each source tar's decisions are read from
``labels.parquet`` (a filtered read: one tar's rows at a time, never the whole table) and handed to
:func:`jumpray.data.copy_samples`, which streams the tar and writes each kept sample's encoded
image bytes unchanged, with the decided label (:func:`jumpray.score.decide.relabel_decision`).
Quarantined samples are left out. The new folder gets dense idx values 0..M-1; the original shard
and key are kept in each sample's ``source``.

:func:`read_gallery_images` decodes just the few samples the report shows, at preview size
(:func:`jumpray.data.read_sample_images`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from jumpray.data.shards import ShardSource
from jumpray.data.subset import copy_samples, read_sample_images
from jumpray.data.writer import ShardWriter
from jumpray.log import get_logger
from jumpray.score.decide import relabel_decision

__all__ = ["write_clean_shards", "read_gallery_images", "gallery_side"]

log = get_logger(__name__)

_DECISION_COLUMNS = ["key", "given_label", "predicted_label", "pred_prob", "is_label_issue"]


def _decisions(labels_path: Path, shard: str, *, relabel: bool, min_prob: float) -> dict[str, int]:
    """key -> label to write, for the kept samples of one source tar."""
    t = pq.read_table(labels_path, columns=_DECISION_COLUMNS, filters=[("shard", "==", shard)])
    if t.num_rows == 0:
        return {}
    col = {name: t.column(name).to_numpy(zero_copy_only=False) for name in _DECISION_COLUMNS}
    keep, label, _ = relabel_decision(
        col["given_label"],
        col["predicted_label"],
        col["pred_prob"],
        col["is_label_issue"],
        relabel=relabel,
        min_prob=min_prob,
    )
    return dict(zip(col["key"][keep].tolist(), label[keep].tolist(), strict=True))


def write_clean_shards(
    source: ShardSource,
    labels_path: str | Path,
    out: str | Path,
    *,
    relabel: bool = False,
    min_prob: float = 0.9,
    overwrite: bool = True,
) -> dict[str, Any]:
    """Write the kept (optionally relabelled) samples of ``source`` as a new shard folder.

    Args:
        source: the scored shard folder.
        labels_path: its labels.parquet.
        out: the folder to create (atomically, by :class:`~jumpray.data.ShardWriter`).
        relabel, min_prob: the relabel rule (``clean.relabel``, ``clean.relabel_min_prob``).
        overwrite: replace an existing ``out``.

    Returns:
        ``num_kept``, ``num_relabelled``, ``num_dropped`` (flagged and not relabelled),
        ``folder``.
    """
    labels_path, out = Path(labels_path), Path(out)
    info = source.info
    with ShardWriter(
        out,
        prefix="clean",
        overwrite=overwrite,
        total=None,
        sources=[info.folder, labels_path],
        require_samples=False,
    ) as writer:
        counts = copy_samples(
            source.scan,
            writer,
            labels_of=lambda shard: _decisions(
                labels_path, shard, relabel=relabel, min_prob=min_prob
            ),
        )
        kept, relabelled = counts.num_copied, counts.num_relabelled
        num_rows = pq.read_metadata(labels_path).num_rows
        extra = {
            "cleaned_from": {
                "folder": str(info.folder),
                "labels": str(labels_path),
                "num_scored": num_rows,
                "num_relabelled": relabelled,
                "relabel": relabel,
                "relabel_min_prob": min_prob if relabel else None,
            }
        }
        writer.close(**info.carried_facts(), extra=extra)
    log.info(
        "clean shards: kept %d of %d scored samples (%d relabelled) -> %s",
        kept,
        num_rows,
        relabelled,
        out,
    )
    return {
        "folder": str(out),
        "num_kept": kept,
        "num_relabelled": relabelled,
        "num_dropped": num_rows - kept,
    }


def gallery_side(train_side: int) -> int:
    """The side of a gallery picture for a model trained at ``train_side`` pixels: twice that,
    within [64, 224] (a tile in the report is about 200 pixels wide)."""
    return int(min(max(2 * train_side, 64), 224))


def read_gallery_images(
    folder: str | Path,
    rows: Sequence[dict[str, Any]],
    *,
    channels: int | None = None,
    side: int = 64,
) -> list[np.ndarray | None]:
    """Decode the images of ``rows`` (dicts with ``shard`` and ``key``), in the same order, small.

    Only the tars named by the rows are opened, each once. Each image is decoded straight to a
    ``side`` x ``side`` picture (JPEGs at a reduced DCT scale), so a huge image never lives in
    the driver at full size; one whose full decode would exceed (32 x side)^2 pixels and cannot be
    decoded reduced (PNG, WebP) is not previewed at all (None).

    Returns:
        uint8 (C, side, side) arrays; None where a sample could not be read back or previewed.
    """
    return read_sample_images(
        folder,
        [(str(row["shard"]), str(row["key"])) for row in rows],
        channels=channels,
        image_size=side,
        max_pixels=(32 * side) ** 2,
    )

"""After scoring: the cleaned shard folder and the gallery's images, read back from the tars.

:func:`write_clean_shards` copies the kept samples of a shard folder into a new one
(docs/contract.md, ``clean-shards/``), tar by tar: each source tar's decisions are read from
``labels.parquet`` (a filtered read: one tar's rows at a time, never the whole table), its samples
are streamed, and each kept sample's encoded image bytes are written unchanged, with the decided
label (:func:`jumpray.score.decide.relabel_decision`). Quarantined samples are left out. The new
folder gets dense idx values 0..M-1; the original shard and key are kept in each sample's
``source``.

:func:`read_gallery_images` decodes just the few samples the report shows, at preview size.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from jumpray.data.decode import decode_image
from jumpray.data.scan import first_image
from jumpray.data.schema import (
    IMAGE_SUFFIXES,
    LABEL_SUFFIX,
    META_SUFFIX,
    parse_label_member,
    parse_meta_member,
)
from jumpray.data.shards import ShardSource
from jumpray.data.tario import TarSampleReader
from jumpray.data.writer import ShardWriter
from jumpray.errors import DataError
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
    info, index = source.info, source.scan.index
    shape = None
    if index is not None and index.channels and index.image_size:
        shape = (int(index.channels), *(int(s) for s in index.image_size))
    kept = relabelled = 0
    wanted = (*IMAGE_SUFFIXES, LABEL_SUFFIX, META_SUFFIX)
    with ShardWriter(
        out,
        prefix="clean",
        overwrite=overwrite,
        total=None,
        sources=[info.folder, labels_path],
        require_samples=False,
    ) as writer:
        for shard in source.scan.shards:
            decided = _decisions(labels_path, shard.file, relabel=relabel, min_prob=min_prob)
            if not decided:
                continue
            for s in TarSampleReader(shard.path, read_suffixes=wanted):
                label = decided.get(s.key)
                if label is None or not s.complete:
                    continue
                fmt = next(x for x in s.members if x in IMAGE_SUFFIXES)
                _, clean, _ = parse_meta_member(s.members.get(META_SUFFIX))
                given = parse_label_member(s.members.get(LABEL_SUFFIX))
                writer.write(
                    s.members[fmt] or b"",
                    image_format=fmt,
                    given_label=label,
                    clean_label=clean if clean >= 0 else None,
                    source=f"{shard.file}/{s.key}",
                    shape=shape,
                )
                kept += 1
                relabelled += int(label != given)
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
        writer.close(
            num_classes=info.num_classes,
            class_names=info.class_names,
            mean=info.mean,
            std=info.std,
            noise=info.noise,
            extra=extra,
        )
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
    wanted: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        wanted[str(row["shard"])].add(str(row["key"]))
    found: dict[tuple[str, str], np.ndarray] = {}
    max_pixels = (32 * side) ** 2
    for shard, keys in wanted.items():
        path = Path(folder) / shard
        if not path.is_file():
            continue
        for s in TarSampleReader(path, read_suffixes=IMAGE_SUFFIXES):
            if s.key in keys:
                try:
                    found[(shard, s.key)] = decode_image(
                        first_image(s.members) or b"",
                        channels=channels,
                        image_size=side,
                        max_pixels=max_pixels,
                    )
                except DataError as exc:
                    log.info("gallery: %s/%s not previewed: %s", shard, s.key, exc.reason)
                    continue
                if len(found) == len(rows):
                    break
    return [found.get((str(r["shard"]), str(r["key"]))) for r in rows]

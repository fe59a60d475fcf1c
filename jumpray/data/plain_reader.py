"""A plain single-process reader of the same shards, with the ``webdataset`` package.

The baseline :func:`jumpray.data.read_shards` is measured against (benchmarks/data_throughput.py)
and a dependable way to look at a folder without Ray. It yields the same batch dicts (the row
schema of :mod:`jumpray.data.schema`, plus ``weak``/``strong`` with an augmenter).

Safety is explicit rather than inherited from webdataset's defaults: ``select_files`` keeps only
image, ``cls``, ``json`` and ``txt`` members while the tar is read, and decoding is done here by
hand, never with ``.decode()`` (whose default handlers would unpickle ``pyd``/``pickle``
members). Each sample is parsed by :func:`jumpray.data.schema.parse_sample`, like the Ray reader's,
and bad samples follow ``on_error`` with the same reasons; but this reader runs no metadata
scan: duplicate idx values and truncation-lost samples are not detected here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jumpray.data.augment import Augmenter
from jumpray.data.decode import decode_image
from jumpray.data.quarantine import OnError, QuarantineLog
from jumpray.data.schema import (
    CLEAN_LABEL,
    GIVEN_LABEL,
    IDX,
    IMAGE,
    KEY,
    READ_SUFFIXES,
    SHARD,
    list_shard_files,
    parse_sample,
    split_member_name,
)
from jumpray.errors import DataError
from jumpray.storage import is_uri, redact

__all__ = ["iter_plain"]


def _wanted(name: str) -> bool:
    return split_member_name(name)[1] in READ_SUFFIXES


def _row(
    sample: dict[str, Any], position: int, *, channels: int | None, image_size: int | None
) -> tuple:
    """(key, shard, idx, given, clean, image) of one webdataset sample dict.

    Raises:
        DataError: the sample is unusable (the reason of :func:`parse_sample` or the decoder).
    """
    parsed = parse_sample(sample)
    if parsed.problem:
        raise DataError(parsed.problem)
    pixels = decode_image(parsed.image or b"", channels=channels, image_size=image_size)
    idx = position if parsed.idx < 0 else parsed.idx
    shard = Path(sample["__url__"]).name
    return sample["__key__"], shard, idx, parsed.given_label, parsed.clean_label, pixels


def iter_plain(
    shard_dir: str | Path,
    *,
    batch_size: int = 256,
    augmenter: Augmenter | None = None,
    generator: torch.Generator | None = None,
    channels: int | None = None,
    image_size: int | None = None,
    on_error: OnError = "raise",
    quarantine: QuarantineLog | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Yield batches of decoded (and, with ``augmenter``, augmented) rows, in shard order.

    Args:
        shard_dir: a shard folder (docs/contract.md).
        batch_size: rows per batch (the last one may be smaller).
        augmenter: adds ``weak`` and ``strong`` float32 (B, C, S, S) numpy columns.
        generator: the augmenter's random source.
        channels, image_size: as :func:`jumpray.data.decode.decode_image`.
        on_error: ``raise`` or ``skip`` (skipped samples go to ``quarantine`` when given).
        quarantine: collects skipped samples.

    Raises:
        DataError: under ``raise``, naming shard, key and reason.
    """
    import webdataset as wds

    if is_uri(shard_dir):
        raise DataError(
            f"{redact(shard_dir)}: the plain reader reads local folders only",
            fix="use jumpray.data.read_shards (Ray Data streams object storage), or copy the "
            "folder to local disk",
        )
    urls = [str(p) for p in list_shard_files(shard_dir)]
    if not urls:
        raise DataError(f"{shard_dir} holds no .tar shards")
    police = quarantine if quarantine is not None else QuarantineLog(on_error)
    police.on_error = on_error
    dataset = wds.WebDataset(
        urls,
        shardshuffle=False,
        handler=wds.reraise_exception,
        select_files=_wanted,
        empty_check=False,
        nodesplitter=None,
        workersplitter=None,
    )
    rows: list[tuple] = []
    for position, sample in enumerate(dataset):
        try:
            rows.append(_row(sample, position, channels=channels, image_size=image_size))
        except DataError as exc:
            police.add(key=sample["__key__"], shard=Path(sample["__url__"]).name, reason=exc.reason)
            continue
        if len(rows) == batch_size:
            yield _batch(rows, augmenter, generator)
            rows = []
    if rows:
        yield _batch(rows, augmenter, generator)


def _batch(rows: list[tuple], augmenter: Augmenter | None, generator) -> dict[str, np.ndarray]:
    keys, shards, idx, given, clean, images = zip(*rows, strict=True)
    batch = {
        KEY: np.asarray(keys, dtype=object),
        SHARD: np.asarray(shards, dtype=object),
        IDX: np.asarray(idx, np.int64),
        GIVEN_LABEL: np.asarray(given, np.int64),
        CLEAN_LABEL: np.asarray(clean, np.int64),
        IMAGE: np.stack(images),
    }
    if augmenter is not None:
        weak, strong = augmenter.train(batch[IMAGE], generator)
        batch["weak"], batch["strong"] = weak.numpy(), strong.numpy()
    return batch

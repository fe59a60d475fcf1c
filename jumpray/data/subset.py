"""Chosen samples of a shard folder, found by (shard, key): copied to a new folder, or previewed.

:func:`copy_samples` streams each source tar once and writes the samples a caller keeps, with the
label the caller gives, through a :class:`~jumpray.data.writer.ShardWriter`: the encoded image
bytes unchanged, the clean label kept, the original ``shard/key`` in the sample's ``source``.
:func:`read_sample_images` decodes a few named samples, small. Both parse samples with
:func:`jumpray.data.schema.parse_sample`, like every reader.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from jumpray import storage
from jumpray.data.decode import decode_image
from jumpray.data.scan import FolderScan
from jumpray.data.schema import IMAGE_SUFFIXES, LABEL_SUFFIX, META_SUFFIX, parse_sample
from jumpray.data.tario import TarSampleReader
from jumpray.data.writer import ShardWriter
from jumpray.errors import DataError
from jumpray.log import get_logger
from jumpray.storage import Location, join, location, name_of

__all__ = ["CopyCounts", "copy_samples", "read_sample_images"]

log = get_logger(__name__)

_COPY_SUFFIXES = (*IMAGE_SUFFIXES, LABEL_SUFFIX, META_SUFFIX)


@dataclass
class CopyCounts:
    """What :func:`copy_samples` wrote.

    Attributes:
        num_copied: samples written.
        num_relabelled: of those, samples written with a label other than their ``cls``.
    """

    num_copied: int = 0
    num_relabelled: int = 0


def copy_samples(
    scan: FolderScan,
    writer: ShardWriter,
    *,
    labels_of: Callable[[str], Mapping[str, int]],
) -> CopyCounts:
    """Copy the kept samples of a scanned folder into ``writer``, tar by tar.

    Args:
        scan: the source folder's scan (its tars, in order, and its index.json).
        writer: the open writer of the new folder (the caller closes it).
        labels_of: tar file name -> {key: label to write} for the samples of that tar to keep;
            called once per tar, so a caller can load one tar's decisions at a time. A tar with
            no kept sample is not opened.

    Returns:
        The counts.
    """
    index = scan.index
    shape = None
    if index is not None and index.channels and index.image_size:
        shape = (int(index.channels), *(int(s) for s in index.image_size))
    counts = CopyCounts()
    for shard in scan.shards:
        keep = labels_of(shard.file)
        if not keep:
            continue
        for s in TarSampleReader(shard.path, read_suffixes=_COPY_SUFFIXES):
            label = keep.get(s.key)
            if label is None or not s.complete:
                continue
            sample = parse_sample(s.members)
            writer.write(
                sample.image or b"",
                image_format=sample.image_format or "",
                given_label=label,
                clean_label=sample.clean_label if sample.clean_label >= 0 else None,
                source=f"{shard.file}/{s.key}",
                shape=shape,
            )
            counts.num_copied += 1
            counts.num_relabelled += int(label != sample.given_label)
    return counts


def read_sample_images(
    folder: Location,
    samples: Sequence[tuple[str, str]],
    *,
    channels: int | None = None,
    image_size: int,
    max_pixels: int | None = None,
) -> list[np.ndarray | None]:
    """Decode the images of ``samples`` ((shard file name, key) pairs), in the same order.

    Only the tars named are opened, each once, and each is read only until its samples are
    found. Images are decoded straight to ``image_size`` (JPEGs at a reduced DCT scale); see
    :func:`~jumpray.data.decode.decode_image` for ``channels`` and ``max_pixels``.

    Returns:
        uint8 (C, image_size, image_size) arrays; None where a sample is absent or its image
        does not decode within ``max_pixels`` (logged).
    """
    wanted: dict[str, set[str]] = defaultdict(set)
    for shard, key in samples:
        wanted[shard].add(key)
    found: dict[tuple[str, str], np.ndarray] = {}
    for shard, keys in wanted.items():
        path = join(location(str(folder)), shard)
        if storage.exists(path):
            found.update(
                _read_tar_images(
                    path, keys, channels=channels, image_size=image_size, max_pixels=max_pixels
                )
            )
    return [found.get((shard, key)) for shard, key in samples]


def _read_tar_images(
    path: Location,
    keys: set[str],
    *,
    channels: int | None,
    image_size: int,
    max_pixels: int | None,
) -> dict[tuple[str, str], np.ndarray]:
    """(tar file name, key) -> decoded image, for the ``keys`` of one tar that decode."""
    found: dict[tuple[str, str], np.ndarray] = {}
    left = set(keys)
    for s in TarSampleReader(path, read_suffixes=IMAGE_SUFFIXES):
        if s.key not in left:
            continue
        left.discard(s.key)
        try:
            found[(name_of(path), s.key)] = decode_image(
                parse_sample(s.members).image or b"",
                channels=channels,
                image_size=image_size,
                max_pixels=max_pixels,
            )
        except DataError as exc:
            log.info("%s/%s: image not read back: %s", name_of(path), s.key, exc.reason)
        if not left:
            break
    return found

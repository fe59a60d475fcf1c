"""The metadata scan of a shard folder and the per-tar decode pass (pure: no Ray).

:func:`jumpray.data.shards.read_shards` runs both inside Ray; tests and tools can run them
directly. Pass 1, :func:`scan_folder` (:func:`scan_shard` per tar), reads tar headers and the
small ``cls``/``json`` members; image bytes are read only for the first
:data:`HEADERS_PER_SHARD` usable samples of each tar, whose image headers (no pixel decoded) tell
the reader the folder's image sizes; other members are never read. It finds,
per sample: a truncated or corrupt tar, a missing image member, a missing or non-integer ``cls``,
bad ``json``, a label or clean label out of [0, C), an idx out of [0, num_samples), a duplicate idx
or key (the first in (shard, position) order is kept); and per shard: an empty tar, a tar
``index.json`` lists but the folder lacks. Without ``index.json`` or json ``idx`` members it assigns
idx in (shard order, position in the tar) order and logs that.

Pass 2, :func:`read_shard_rows`, re-reads one tar, skips the samples the scan rejected, and decodes
the image of the others; an image that does not decode (or whose size differs when no resize is
asked) follows the policy too.

Under ``raise`` the first problem (in shard, position order) raises
:class:`~jumpray.errors.DataError` naming shard, key and reason; under ``skip`` each becomes a
quarantine row. Rows in = samples found in the tars + samples index.json promised that a
truncated, empty or missing tar could not deliver (keys ``<lost-N>``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jumpray import storage
from jumpray.data.decode import decode_image, image_header
from jumpray.data.quarantine import OnError, QuarantineLog, lost_key
from jumpray.data.schema import (
    CLEAN_LABEL,
    GIVEN_LABEL,
    IDX,
    IMAGE,
    IMAGE_SUFFIXES,
    KEY,
    LABEL_SUFFIX,
    META_SUFFIX,
    READ_SUFFIXES,
    SHARD,
    ShardIndex,
    infer_num_classes,
    list_shard_files,
    parse_sample,
    read_index,
)
from jumpray.data.tario import TarSampleReader
from jumpray.errors import DataError
from jumpray.log import get_logger
from jumpray.storage import Location, join, location, name_of, redact

__all__ = [
    "ShardScan",
    "FolderScan",
    "check_shard_folders",
    "scan_shard",
    "scan_folder",
    "read_shard_rows",
    "HEADERS_PER_SHARD",
]

log = get_logger(__name__)

_SCAN_SUFFIXES = frozenset((LABEL_SUFFIX, META_SUFFIX))
# Image headers read per tar by the scan (the reader samples image sizes from them).
HEADERS_PER_SHARD = 32
_FIX = "repair or remove the sample (or the shard), or set data.on_error=skip to quarantine it"


# ---------------------------------------------------------------------------------------------
# Pass 1: the metadata scan


@dataclass
class ShardScan:
    """What one tar holds, from its headers and ``cls``/``json`` members.

    Attributes:
        file: the tar's file name; path: its full path.
        keys: the key of every sample found, in tar order (position = ordinal).
        idx, given, clean: (n,) int64 each; -1 where absent or unusable.
        problems: ordinal -> reason, for samples bad on their own.
        error: None, or why the tar ended early (truncated, corrupt, empty file).
        image_headers: ordinal -> (C, H, W) from the image header, or why the header does not
            read; for the first :data:`HEADERS_PER_SHARD` samples without a problem, in order.
    """

    file: str
    path: str
    keys: list[str] = field(default_factory=list)
    idx: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    given: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    clean: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    problems: dict[int, str] = field(default_factory=dict)
    error: str | None = None
    image_headers: dict[int, tuple[int, int, int] | str] = field(default_factory=dict)


def _read_header(image: bytes | None) -> tuple[int, int, int] | str:
    """(C, H, W) from an image's header, or the reason it does not read."""
    try:
        return image_header(image or b"")
    except DataError as exc:
        return exc.reason


def scan_shard(path: Location) -> ShardScan:
    """Scan one tar without decoding images (pure; Ray runs it as a task per shard).

    The one pass over the tar also reads the image headers of its first
    :data:`HEADERS_PER_SHARD` samples without a problem, then stops reading image bytes.

    Returns:
        A :class:`ShardScan`; a truncated tar marks its last sample with the truncation reason.
    """
    reader = TarSampleReader(path, read_suffixes=_SCAN_SUFFIXES | frozenset(IMAGE_SUFFIXES))
    keys, idx, given, clean, problems, headers = [], [], [], [], {}, {}
    for s in reader:
        sample = parse_sample(s.members)
        problem = sample.problem if s.complete else f"{reader.error} (this sample may be cut)"
        keys.append(s.key)
        given.append(sample.given_label)
        idx.append(sample.idx)
        clean.append(sample.clean_label)
        if problem:
            problems[s.ordinal] = problem
        elif len(headers) < HEADERS_PER_SHARD:
            headers[s.ordinal] = _read_header(sample.image)
            if len(headers) == HEADERS_PER_SHARD:
                reader.read_suffixes = _SCAN_SUFFIXES
    return ShardScan(
        file=name_of(path),
        path=str(path),
        keys=keys,
        idx=np.asarray(idx, np.int64),
        given=np.asarray(given, np.int64),
        clean=np.asarray(clean, np.int64),
        problems=problems,
        error=reader.error,
        image_headers=headers,
    )


@dataclass
class FolderScan:
    """The scan of a whole folder and the reading plan derived from it.

    Attributes:
        folder: the shard folder.
        index: its index.json, or None.
        shards: one :class:`ShardScan` per tar, in folder order.
        num_samples, num_classes, class_names, has_clean_labels: the folder's facts (from
            index.json, or assumed, see ``assumptions``).
        idx_assigned: True when idx values were assigned in (shard, position) order.
        rows_in: samples found in the tars + samples lost to truncated/empty/missing tars.
        quarantine: the rows rejected by the scan.
        drop: tar file name -> ordinals the decode pass must skip.
        idx_base: tar file name -> idx of its ordinal 0 (only when ``idx_assigned``).
        assumptions: what was assumed because index.json or json members were absent.
        shard_issues: shard-level problems that lost no known sample (e.g. an empty tar).
    """

    folder: Location
    index: ShardIndex | None
    shards: list[ShardScan]
    num_samples: int
    num_classes: int
    class_names: list[str]
    has_clean_labels: bool
    idx_assigned: bool
    rows_in: int
    quarantine: QuarantineLog
    drop: dict[str, list[int]]
    idx_base: dict[str, int]
    assumptions: list[str]
    shard_issues: list[str]

    @property
    def num_good(self) -> int:
        """Samples that passed the scan (the decode pass may still reject some images)."""
        return self.rows_in - len(self.quarantine)


MapFn = Callable[[Callable[[str], ShardScan], Sequence[str]], list[ShardScan]]


def _shard_files(
    folder: Location, index: ShardIndex | None
) -> tuple[list[str], list[str], dict[str, int]]:
    """(tar names in order, names index.json lists but the folder lacks, expected counts)."""
    on_disk = [name_of(p) for p in list_shard_files(folder)]
    if index is None:
        return on_disk, [], {}
    expected = {s.file: s.num_samples for s in index.shards}
    listed = [s.file for s in index.shards]
    extra = [f for f in on_disk if f not in expected]
    if extra:
        log.warning(
            "%s: %d tars not listed in index.json are read too: %s", folder, len(extra), extra[:5]
        )
    present = set(on_disk)
    return (
        [f for f in listed if f in present] + extra,
        [f for f in listed if f not in present],
        expected,
    )


def check_shard_folders(*folders: Location | None) -> None:
    """Fail fast (before Ray starts) on a shard folder that is missing or holds no shards.

    Args:
        folders: shard folders; None entries (an optional folder not given) are skipped.

    Raises:
        DataError: naming the folder and the fix.
    """
    for folder in folders:
        if folder is not None:
            _checked_shard_files(folder)


def _checked_shard_files(
    folder: Location,
) -> tuple[ShardIndex | None, list[str], list[str], dict[str, int]]:
    """index.json (or None) and :func:`_shard_files`' lists, after the missing / empty checks."""
    if not storage.is_dir(folder):
        raise DataError(
            f"shard folder {redact(folder)} does not exist",
            fix="point --shards at a folder written by `jumpray shards` (or `jumpray demo`)",
        )
    index = read_index(folder)
    files, missing, expected = _shard_files(folder, index)
    if not files and not missing:
        raise DataError(
            f"{redact(folder)} holds no .tar shards",
            fix="point --shards at a folder written by `jumpray shards`",
        )
    return index, files, missing, expected


def scan_folder(
    folder: str | Path,
    *,
    on_error: OnError = "raise",
    num_classes: int | None = None,
    map_fn: MapFn | None = None,
) -> FolderScan:
    """Scan every tar of a shard folder and plan the decode pass (no images decoded).

    Args:
        folder: the shard folder.
        on_error: ``raise`` raises on the first problem; ``skip`` quarantines.
        num_classes: C; None = index.json's, else the highest label + 1 (logged as assumed).
        map_fn: how to run :func:`scan_shard` over the paths (default: in this process;
            :func:`read_shards` passes Ray tasks).

    Raises:
        DataError: under ``raise``, the first problem in (shard, position) order; under either
            policy, a folder with no tar at all.
    """
    folder = location(str(folder))
    index, files, missing, expected = _checked_shard_files(folder)
    paths = [str(join(folder, f)) for f in files]
    scans = (map_fn or (lambda fn, xs: [fn(x) for x in xs]))(scan_shard, paths)
    return _plan(
        folder, index, scans, missing, expected, on_error=on_error, num_classes=num_classes
    )


_Issue = tuple[int, int, str, int, str]  # (shard position, ordinal, key, idx, reason)


class _Planner:
    """Turns per-shard scans into the folder's verdicts; one method per kind of check."""

    def __init__(self, folder: Path, index: ShardIndex | None, scans: list[ShardScan]):
        self.folder, self.index, self.scans = folder, index, scans
        self.issues: list[_Issue] = []
        self.assumptions: list[str] = []
        self.keys = [k for s in scans for k in s.keys]
        sizes = [len(s.keys) for s in scans]
        self.offsets = np.cumsum([0, *sizes])
        self.shard_pos = np.repeat(np.arange(len(scans)), sizes)
        self.ordinal = np.arange(len(self.keys)) - np.repeat(self.offsets[:-1], sizes)
        empty = [np.zeros(0, np.int64)]
        self.idx = np.concatenate([s.idx for s in scans] or empty)
        self.given = np.concatenate([s.given for s in scans] or empty)
        self.clean = np.concatenate([s.clean for s in scans] or empty)
        self.bad = np.zeros(len(self.keys), bool)
        for p, s in enumerate(scans):
            self.issues += [(p, o, s.keys[o], int(s.idx[o]), r) for o, r in s.problems.items()]
            self.bad[self.offsets[p] + np.fromiter(s.problems, np.int64, len(s.problems))] = True

    def reject(self, mask: np.ndarray, reason: Callable[[int], str]) -> None:
        """Quarantine the usable samples in ``mask`` (first reason wins)."""
        for i in np.flatnonzero(mask & ~self.bad):
            pos, o = int(self.shard_pos[i]), int(self.ordinal[i])
            self.issues.append((pos, o, self.keys[i], int(self.idx[i]), reason(i)))
        self.bad |= mask

    def shard_level(self, missing: list[str], expected: dict[str, int]) -> None:
        """Empty tars, samples a short tar lost, tars index.json lists but the folder lacks."""
        for pos, scan in enumerate(self.scans):
            found, want = len(scan.keys), expected.get(scan.file)
            if found == 0 and not want:  # no sample to quarantine: a shard-level problem
                self.issues.append((pos, -1, "", -1, f"empty shard ({scan.error or 'no samples'})"))
            if want is not None and found < want:
                why = scan.error or "the tar ended early"
                why = f"empty shard ({why})" if found == 0 else why
                note = f"{why}; index.json lists {want} samples, {found} were found"
                self.issues += [
                    (pos, found + j, lost_key(j), -1, note) for j in range(want - found)
                ]
        for k, name in enumerate(missing):
            note = "shard file listed in index.json is missing"
            self.issues += [
                (len(self.scans) + k, j, lost_key(j), -1, note) for j in range(expected[name])
            ]

    def resolve_idx(self) -> dict[str, int] | None:
        """json idx when every usable sample has one; else assigned in (shard, position) order."""
        has_idx = self.idx >= 0
        if has_idx[~self.bad].any():
            self.reject(
                ~has_idx, lambda i: "json has no idx while other samples of the folder have one"
            )
            return None
        self.idx = np.arange(len(self.keys), dtype=np.int64)
        self.assumptions.append("idx assigned in (shard order, position in tar) order: no json idx")
        return {s.file: int(self.offsets[p]) for p, s in enumerate(self.scans)}

    def resolve_sizes(self, num_classes: int | None) -> tuple[int, int]:
        """(num_samples, num_classes) from index.json, the argument, or the data (assumed).

        Without index.json the idx range is bounded by the samples found (one stray idx must
        not size the flag arrays), and C comes from :func:`~jumpray.data.schema.infer_num_classes`
        (a stray label far outside the dense range is rejected, not made a class).
        """
        index = self.index
        if index is not None:
            num_samples = index.num_samples
        else:
            num_samples = len(self.keys)
            self.assumptions.append(
                f"num_samples = {num_samples} (samples found; idx must lie below it): no index.json"
            )
        if num_classes is None and index is not None:
            num_classes = index.num_classes
        elif num_classes is None:
            usable = np.where(self.bad, -1, self.given)
            num_classes, stray, note = infer_num_classes(usable)
            self.assumptions.append(f"{note}: no index.json")
            given = self.given
            self.reject(
                stray,
                lambda i: (
                    f"label {given[i]} lies far outside the dense labels 0..{num_classes - 1}"
                    f" (set num_classes={int(usable.max()) + 1} if it is a class)"
                ),
            )
        elif index is not None and index.num_classes != num_classes:
            log.warning(
                "%s: num_classes=%d overrides index.json's %d",
                self.folder,
                num_classes,
                index.num_classes,
            )
        return num_samples, num_classes

    def check_values(self, num_samples: int, num_classes: int) -> None:
        """Labels in [0, C), clean labels in [-1, C), idx in [0, num_samples), no duplicates."""
        given, clean, idx = self.given, self.clean, self.idx
        self.reject(
            (given < 0) | (given >= num_classes),
            lambda i: f"label {given[i]} out of range [0, {num_classes})",
        )
        self.reject(
            (clean < -1) | (clean >= num_classes),
            lambda i: f"clean label {clean[i]} out of range [0, {num_classes})",
        )
        where = "of index.json" if self.index is not None else "(the samples found)"
        self.reject(
            (idx < 0) | (idx >= num_samples),
            lambda i: f"idx {idx[i]} outside [0, {num_samples}) {where}",
        )
        self.reject_duplicates(idx.tolist(), "idx")
        self.reject_duplicates(self.keys, "key")

    def reject_duplicates(self, values: list, what: str) -> None:
        """Keep the first usable sample of each value in (shard, position) order."""
        first: dict[Any, int] = {}
        origin: dict[int, int] = {}
        for i in np.flatnonzero(~self.bad):
            j = first.setdefault(values[i], int(i))
            if j != i:
                origin[int(i)] = j
        dup = np.zeros(len(self.keys), bool)
        dup[list(origin)] = True

        def reason(i: int) -> str:
            j = origin[int(i)]
            shard = self.scans[self.shard_pos[j]].file
            return f"duplicate {what} {values[i]}, first in shard {shard} key {self.keys[j]}"

        self.reject(dup, reason)

    def police(self, on_error: OnError, shard_names: list[str]) -> tuple[QuarantineLog, list[str]]:
        """Apply the policy to the issues in (shard, position) order.

        Returns:
            (the quarantine, the shard-level issues).
        """
        quarantine, shard_issues = QuarantineLog(on_error, fix=_FIX), []
        for pos, _, key, sample_idx, reason in sorted(self.issues, key=lambda t: (t[0], t[1])):
            if key:
                quarantine.add(key=key, shard=shard_names[pos], idx=sample_idx, reason=reason)
            elif on_error == "raise":
                raise DataError(reason, shard=shard_names[pos], fix=_FIX)
            else:
                shard_issues.append(f"{shard_names[pos]}: {reason}")
                log.warning("%s: %s", shard_names[pos], reason)
        return quarantine, shard_issues

    def drops(self) -> dict[str, list[int]]:
        """Tar file name -> ordinals the decode pass must skip."""
        drop: dict[str, list[int]] = {s.file: [] for s in self.scans}
        for i in np.flatnonzero(self.bad):
            drop[self.scans[self.shard_pos[i]].file].append(int(self.ordinal[i]))
        return drop


def _plan(
    folder: Path,
    index: ShardIndex | None,
    scans: list[ShardScan],
    missing: list[str],
    expected: dict[str, int],
    *,
    on_error: OnError,
    num_classes: int | None,
) -> FolderScan:
    plan = _Planner(folder, index, scans)
    plan.shard_level(missing, expected)
    idx_base = plan.resolve_idx()
    num_samples, num_classes = plan.resolve_sizes(num_classes)
    plan.check_values(num_samples, num_classes)
    quarantine, shard_issues = plan.police(on_error, [s.file for s in scans] + missing)
    for note in plan.assumptions:
        log.info("%s: %s", folder, note)
    usable_clean = bool((plan.clean[~plan.bad] >= 0).any())
    return FolderScan(
        folder=folder,
        index=index,
        shards=scans,
        num_samples=num_samples,
        num_classes=num_classes,
        class_names=list(index.class_names) if index is not None else [],
        has_clean_labels=index.has_clean_labels if index is not None else usable_clean,
        idx_assigned=idx_base is not None,
        rows_in=len(plan.keys) + sum(1 for t in plan.issues if t[2].startswith("<lost-")),
        quarantine=quarantine,
        drop=plan.drops(),
        idx_base=idx_base or {},
        assumptions=plan.assumptions,
        shard_issues=shard_issues,
    )


# ---------------------------------------------------------------------------------------------
# Pass 2: decoding one tar (Ray Data runs it once per tar)


def read_shard_rows(
    path: str | Path,
    *,
    drop: Collection[int] = (),
    idx_base: int | None = None,
    channels: int | None = None,
    image_size: int | None = None,
    expected_hw: tuple[int, int] | None = None,
    on_error: OnError = "raise",
    batch_rows: int = 256,
) -> Iterator[tuple[dict[str, np.ndarray], list[tuple[str, str, int, str]]]]:
    """Decode one tar's usable samples into row batches (the schema of :mod:`jumpray.data.schema`).

    Args:
        path: the tar.
        drop: ordinals the scan rejected (skipped, never decoded).
        idx_base: when idx is assigned, the idx of ordinal 0; None = from each json.
        channels: output C (1 or 3); None keeps each image's own.
        image_size: resize + centre-crop to this square; None keeps the size.
        expected_hw: with ``image_size`` None, images of another (H, W) are rejected.
        on_error: policy for images that do not decode or have the wrong size.
        batch_rows: rows per yielded batch.

    Yields:
        (batch, quarantine rows (key, shard, idx, reason) since the previous batch).
    """
    shard = name_of(path)
    skip = set(drop)
    police = QuarantineLog(on_error, fix=_FIX)
    cols: dict[str, list] = {KEY: [], IDX: [], GIVEN_LABEL: [], CLEAN_LABEL: [], IMAGE: []}
    for s in TarSampleReader(path, read_suffixes=READ_SUFFIXES):
        if s.ordinal in skip or not s.complete:
            continue
        sample = parse_sample(s.members)
        idx = sample.idx if idx_base is None else idx_base + s.ordinal
        try:
            if sample.problem:  # only without the scan's drop list (which holds these)
                raise DataError(sample.problem)
            image = _decode_checked(
                sample.image,
                shard=shard,
                key=s.key,
                channels=channels,
                image_size=image_size,
                expected_hw=expected_hw,
            )
        except DataError as exc:
            if on_error == "raise" and exc.fix:
                raise
            police.add(key=s.key, shard=shard, idx=idx, reason=exc.reason)
            continue
        row = {
            KEY: s.key,
            IDX: idx,
            GIVEN_LABEL: sample.given_label,
            CLEAN_LABEL: sample.clean_label,
            IMAGE: image,
        }
        for name, value in row.items():
            cols[name].append(value)
        if len(cols[KEY]) >= batch_rows:
            yield _batch(cols, shard), police.rows
            police.rows = []
            cols = {k: [] for k in cols}
    if cols[KEY] or police.rows:
        yield _batch(cols, shard), police.rows


def _decode_checked(
    image: bytes | None,
    *,
    shard: str,
    key: str,
    channels: int | None,
    image_size: int | None,
    expected_hw: tuple[int, int] | None,
) -> np.ndarray:
    """Decode one image (arguments as :func:`read_shard_rows`'s).

    A size other than the folder's raises with its own fix (set ``data.image_size``), which
    ``raise`` passes on as it is instead of suggesting ``on_error=skip``.

    Raises:
        DataError: the image does not decode (no fix), or has the wrong size (with the fix).
    """
    pixels = decode_image(image or b"", channels=channels, image_size=image_size)
    if image_size is None and expected_hw is not None and pixels.shape[1:] != tuple(expected_hw):
        raise DataError(
            f"image is {pixels.shape[1]}x{pixels.shape[2]} but the folder's images are "
            f"{expected_hw[0]}x{expected_hw[1]}",
            shard=shard,
            key=key,
            fix=f"set data.image_size (for example data.image_size={min(expected_hw)}) "
            "to resize every image",
        )
    return pixels


def _batch(cols: dict[str, list], shard: str) -> dict[str, np.ndarray]:
    n = len(cols[KEY])
    return {
        KEY: np.asarray(cols[KEY], dtype=object),
        SHARD: np.full(n, shard, dtype=object),
        IDX: np.asarray(cols[IDX], np.int64),
        GIVEN_LABEL: np.asarray(cols[GIVEN_LABEL], np.int64),
        CLEAN_LABEL: np.asarray(cols[CLEAN_LABEL], np.int64),
        IMAGE: np.stack(cols[IMAGE]) if n else np.zeros((0, 1, 1, 1), np.uint8),
    }

"""Writing a shard folder (docs/contract.md): tars with count and size limits, index.json, atomically.

Everything goes to a hidden temporary folder beside ``out`` (each tar itself under a ``.partial``
name until closed); only a complete folder is renamed to ``out``, so an interrupted run never
leaves half a dataset where a reader would find it. ``out`` is claimed first
(:func:`jumpray.runs.claim_output`): it may not overlap a source, and an existing folder is
replaced only when it is a shard folder jumpray wrote and ``overwrite`` is set. The writer holds
one sample at a time, never the dataset. Closing fails (and publishes nothing) when no sample was
written or more than ``max_quarantine_fraction`` of the source samples were unusable.

``idx`` is assigned densely in write order (0, 1, ...), so a source image quarantined while
writing leaves no hole; the sample's provenance stays in its ``json`` ``source`` field.

Memory does not grow with N: the writer keeps one open tar, a (name, count) entry per closed tar,
the quarantined rows and a few counters (index.json lists shards, never samples). A parallel
conversion writes contiguous ranges as :class:`ShardPart` folders inside the temporary folder;
:meth:`ShardWriter.adopt` appends them in range order, so the samples, their idx and keys are
those of a serial run; only the shard boundaries differ (each part starts a new tar).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tarfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jumpray.config import DataConfig
from jumpray.data.quarantine import (
    OnError,
    QuarantineLog,
    check_quarantine_fraction,
    summarize_reasons,
)
from jumpray.data.schema import (
    IMAGE_SUFFIXES,
    INDEX_FILE,
    LABEL_SUFFIX,
    META_SUFFIX,
    QUARANTINE_FILE,
    ShardEntry,
    ShardIndex,
    sample_key,
    shard_name,
    write_index,
)
from jumpray.data.tario import TarSampleWriter
from jumpray.errors import DataError, UsageError
from jumpray.files import replace_tree
from jumpray.log import get_logger
from jumpray.runs import claim_output, push_mirror
from jumpray.storage import name_of

__all__ = ["ShardWriter", "ProgressLog", "DEFAULT_MAX_SAMPLES", "DEFAULT_MAX_BYTES"]

log = get_logger(__name__)

DEFAULT_MAX_SAMPLES = 5000
DEFAULT_MAX_BYTES = 512 * 1024**2
_PREFIX = re.compile(r"[A-Za-z0-9_-]+")
DEFAULT_MAX_QUARANTINE_FRACTION = DataConfig.model_fields["max_quarantine_fraction"].default


class ProgressLog:
    """Logs ``done/total``, rate and ETA at most every ``every_s`` seconds (and at the end).

    Args:
        what: what is counted ("samples written").
        total: the expected count, or None when unknown (no ETA then).
        every_s: seconds between lines.
    """

    def __init__(self, what: str, total: int | None = None, *, every_s: float = 10.0):
        self.what, self.total, self.every_s = what, total, every_s
        self.done = 0
        self.start = self._last = time.monotonic()

    def update(self, n: int = 1) -> None:
        """Count ``n`` more; log when ``every_s`` has passed since the last line."""
        self.done += n
        now = time.monotonic()
        if now - self._last >= self.every_s:
            self._last = now
            self._log(now)

    def finish(self) -> float:
        """Log the final line; return the elapsed seconds."""
        now = time.monotonic()
        self._log(now)
        return now - self.start

    def _log(self, now: float) -> None:
        elapsed = max(now - self.start, 1e-9)
        rate = self.done / elapsed
        if self.total:
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            log.info(
                "%s: %d/%d (%.0f%%), %.0f/s, ETA %.0f s",
                self.what,
                self.done,
                self.total,
                100.0 * self.done / self.total,
                rate,
                eta,
            )
        else:
            log.info("%s: %d, %.0f/s", self.what, self.done, rate)


class _Shapes:
    """What index.json says about image shapes, in O(1) memory: the one channel count and the one
    (H, W) shared by every sample, or None once they differ (web data has thousands of sizes)."""

    def __init__(self) -> None:
        self.seen = False
        self.channels: int | None = None
        self.size: tuple[int, int] | None = None

    def add(self, shape: Sequence[int]) -> None:
        """Count one (C, H, W)."""
        c, hw = int(shape[0]), (int(shape[1]), int(shape[2]))
        if not self.seen:
            self.seen, self.channels, self.size = True, c, hw
            return
        if self.channels != c:
            self.channels = None
        if self.size != hw:
            self.size = None

    def merge(self, other: _Shapes) -> None:
        """Fold in the shapes another writer saw (a parallel part)."""
        if not other.seen:
            return
        channels, size = other.channels, other.size
        if not self.seen:
            self.seen, self.channels, self.size = True, channels, size
            return
        if self.channels != channels:
            self.channels = None
        if self.size != size:
            self.size = None

    @property
    def image_size(self) -> list[int] | None:
        """[H, W] when every sample has it, else None."""
        return list(self.size) if self.size else None


class _TarSequence:
    """Samples into numbered tars in ``folder``, with count and size limits; idx from
    ``first_idx`` on. Holds one open tar, the list of closed ones and a few counters.

    Args:
        folder: where the tars go (each under a ``.partial`` name until closed).
        prefix, max_samples_per_shard, max_shard_bytes, on_error: see :class:`ShardWriter`.
        first_idx: the idx of the first sample written.
        progress: counts each sample written (``update()``), or None.
    """

    def __init__(
        self,
        folder: Path,
        *,
        prefix: str,
        max_samples_per_shard: int,
        max_shard_bytes: int,
        on_error: OnError,
        first_idx: int = 0,
        progress: Any = None,
    ):
        self.tmp = folder
        self.prefix = prefix
        self.max_samples, self.max_bytes = max_samples_per_shard, max_shard_bytes
        self.first_idx = first_idx
        self.quarantine = QuarantineLog(
            on_error, fix="fix or remove the source image, or pass data.on_error=skip"
        )
        self.progress = progress
        self.shards: list[ShardEntry] = []
        self.num_samples = 0
        self.num_clean = 0
        self.shapes = _Shapes()
        self._tar: TarSampleWriter | None = None

    def write(
        self,
        image: bytes,
        *,
        image_format: str,
        given_label: int,
        clean_label: int | None = None,
        source: str | None = None,
        shape: tuple[int, int, int] | None = None,
    ) -> int:
        """Append one sample; returns the idx it was given.

        Args:
            image: encoded image bytes, stored as they are.
            image_format: the member suffix, one of jpg/jpeg/png/webp.
            given_label: the ``cls`` value (possibly wrong).
            clean_label: the true label when known (stored in ``json`` as ``clean``).
            source: where the image came from (stored in ``json``), e.g. a relative path.
            shape: (C, H, W) of the decoded image, for index.json's channels/image_size.
        """
        fmt = image_format.lower().lstrip(".")
        if fmt not in IMAGE_SUFFIXES:
            raise ValueError(f"image_format must be one of {IMAGE_SUFFIXES}, got {image_format!r}")
        idx = self.first_idx + self.num_samples
        meta: dict[str, Any] = {"idx": idx}
        if clean_label is not None:
            meta["clean"] = int(clean_label)
            self.num_clean += 1
        if source is not None:
            meta["source"] = source
        members = {
            fmt: image,
            LABEL_SUFFIX: str(int(given_label)).encode(),
            META_SUFFIX: _dump_meta(meta),
        }
        size = sum(512 + len(v) + 511 for v in members.values())
        tar = self._tar
        if (
            tar is None
            or tar.num_samples >= self.max_samples
            or (tar.num_samples and tar.num_bytes + size > self.max_bytes)
        ):
            tar = self._next_tar()
        tar.write(sample_key(idx), members)
        if shape is not None:
            self.shapes.add(shape)
        self.num_samples += 1
        if self.progress is not None:
            self.progress.update()
        return idx

    def skip(self, *, source: str, reason: str) -> None:
        """A source sample that cannot be written: raise or quarantine it (``on_error``).

        Raises:
            DataError: under ``on_error=raise``, naming the source and the reason.
        """
        self.quarantine.add(key=source, shard="", reason=reason)

    def _next_tar(self) -> TarSampleWriter:
        self._close_tar()
        name = shard_name(self.prefix, len(self.shards))
        self._tar = TarSampleWriter(self.tmp / f"{name}.partial")
        return self._tar

    def _close_tar(self) -> None:
        tar, self._tar = self._tar, None
        if tar is None:
            return
        tar.close()
        final = tar.path.with_name(tar.path.name.removesuffix(".partial"))
        os.replace(tar.path, final)
        self.shards.append(ShardEntry(final.name, tar.num_samples))

    def _drop_tar(self) -> None:
        if self._tar is not None:
            self._tar.close()
            self._tar = None


@dataclass
class PartResult:
    """What a parallel part wrote into its own folder (:class:`ShardPart`), for the driver.

    Attributes:
        folder: the part's folder (inside the driver's temporary folder).
        first_idx: the idx the part gave its first sample.
        shards: its tars, in order, named from ``<prefix>-000000.tar`` in ``folder``.
        num_samples, num_clean: counts.
        shapes: the shapes it saw.
        quarantine: its quarantined rows.
        extra: whatever the converter returns with it (statistics, counts).
    """

    folder: Path
    first_idx: int
    shards: list[ShardEntry]
    num_samples: int
    num_clean: int
    shapes: _Shapes
    quarantine: list[tuple[str, str, int, str]]
    extra: dict[str, Any] = field(default_factory=dict)


class ShardPart(_TarSequence):
    """One contiguous range of a parallel conversion, written by one Ray task into ``folder``.

    Its tars are numbered from 0 and its idx start at ``first_idx`` (the range's start assuming no
    earlier sample is quarantined); :meth:`ShardWriter.adopt` renames them into the final order
    and shifts the idx when an earlier part quarantined samples. Progress goes to
    ``folder/progress`` (a count the driver reads), since a task's log lines are not the driver's.
    """

    def __init__(self, folder: str | Path, *, first_idx: int, **options: Any):
        folder = Path(folder)
        # Not parents=True: a task starting after the driver aborted must not recreate the
        # temporary folder it removed.
        folder.mkdir()
        super().__init__(
            folder, first_idx=first_idx, progress=_CountFile(folder / PROGRESS_FILE), **options
        )

    def finish(self, **extra: Any) -> PartResult:
        """Close the last tar; returns what the driver needs."""
        self._close_tar()
        self.progress.flush()
        return PartResult(
            self.tmp,
            self.first_idx,
            self.shards,
            self.num_samples,
            self.num_clean,
            self.shapes,
            self.quarantine.rows,
            extra,
        )


PROGRESS_FILE = "progress"


class _CountFile:
    """A sample count written to a file at most every ``every_s`` seconds (a part's progress)."""

    def __init__(self, path: Path, every_s: float = 1.0):
        self.path, self.every_s = path, every_s
        self.count = 0
        self._last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.count += n
        if time.monotonic() - self._last >= self.every_s:
            self.flush()

    def flush(self) -> None:
        self._last = time.monotonic()
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(str(self.count))
        os.replace(tmp, self.path)


def read_count(folder: Path) -> int:
    """The samples a running :class:`ShardPart` in ``folder`` has written so far (0 if unknown)."""
    try:
        return int((folder / PROGRESS_FILE).read_text())
    except (OSError, ValueError):
        return 0


class ShardWriter(_TarSequence):
    """Write samples into ``out``: ``<prefix>-NNNNNN.tar``, ``index.json``, ``quarantine.parquet``.

    Use as a context manager (an exception removes the temporary folder), or call :meth:`close`.

    Args:
        out: the shard folder to create.
        prefix: shard file name prefix (``train`` gives ``train-000000.tar``).
        max_samples_per_shard: a new tar starts after this many samples.
        max_shard_bytes: a new tar starts before one would exceed this size (a single larger
            sample gets a tar of its own).
        overwrite: replace an existing ``out`` that is a jumpray shard folder (only once the new
            folder is complete).
        on_error: policy for :meth:`skip` (source images that cannot be used).
        total: expected number of samples, for progress lines.
        sources: folders and files the samples come from; ``out`` may not overlap them.
        max_quarantine_fraction: :meth:`close` fails when more than this fraction of the samples
            offered (written + skipped) were skipped (``data.max_quarantine_fraction``).
        require_samples: :meth:`close` fails when no sample was written.

    Raises:
        UsageError: ``out`` may not be written (see :func:`jumpray.runs.claim_output`), or a bad
            prefix or limit.
    """

    def __init__(
        self,
        out: str | Path,
        *,
        prefix: str = "train",
        max_samples_per_shard: int = DEFAULT_MAX_SAMPLES,
        max_shard_bytes: int = DEFAULT_MAX_BYTES,
        overwrite: bool = False,
        on_error: OnError = "raise",
        total: int | None = None,
        sources: Sequence[str | Path | None] = (),
        max_quarantine_fraction: float = DEFAULT_MAX_QUARANTINE_FRACTION,
        require_samples: bool = True,
    ):
        if not _PREFIX.fullmatch(prefix):
            raise UsageError(
                f"--prefix {prefix!r}: use letters, digits, '-' and '_' only (it names the "
                "shard files inside --out)"
            )
        if max_samples_per_shard < 1:
            raise UsageError(f"--max-samples-per-shard must be >= 1, got {max_samples_per_shard}")
        if max_shard_bytes < 1024:
            raise UsageError(f"--max-shard-bytes must be at least 1K, got {max_shard_bytes}")
        # An object-storage ``out`` is built in its local mirror and uploaded by _publish.
        self.claim = claim_output(
            out, command="shards", kind="shards", sources=sources, overwrite=overwrite
        )
        self.out = self.claim.out
        self.max_quarantine_fraction = max_quarantine_fraction
        self.require_samples = require_samples
        self.overwrite = overwrite
        tmp = self.out.parent / f".{self.out.name}.partial-{os.getpid()}"
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        super().__init__(
            tmp,
            prefix=prefix,
            max_samples_per_shard=max_samples_per_shard,
            max_shard_bytes=max_shard_bytes,
            on_error=on_error,
            progress=ProgressLog(f"{name_of(self.claim.label)}: samples written", total),
        )
        self._closed = False

    @property
    def part_options(self) -> dict[str, Any]:
        """The keyword arguments of a :class:`ShardPart` that writes like this writer."""
        return {
            "prefix": self.prefix,
            "max_samples_per_shard": self.max_samples,
            "max_shard_bytes": self.max_bytes,
            "on_error": self.quarantine.on_error,
        }

    def adopt(self, part: PartResult) -> None:
        """Append a finished part's tars after everything written so far, in order.

        Each tar is renamed to the next shard number; when earlier samples were quarantined the
        part's idx are shifted down (its tars rewritten) so idx stays dense (docs/contract.md).
        """
        self._close_tar()
        shift = part.first_idx - self.num_samples
        for entry in part.shards:
            src = part.folder / entry.file
            dst = self.tmp / shard_name(self.prefix, len(self.shards))
            if shift:
                _shift_idx(src, dst, shift)
                src.unlink()
            else:
                os.replace(src, dst)
            self.shards.append(ShardEntry(dst.name, entry.num_samples))
        self.num_samples += part.num_samples
        self.num_clean += part.num_clean
        self.shapes.merge(part.shapes)
        self.quarantine.extend(part.quarantine)
        shutil.rmtree(part.folder)

    # -- finishing ----------------------------------------------------------------------------

    def close(
        self,
        *,
        num_classes: int,
        class_names: list[str] | None = None,
        mean: list[float] | None = None,
        std: list[float] | None = None,
        noise: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> ShardIndex:
        """Finish the last tar, write index.json and quarantine.parquet, rename into place.

        Returns:
            The index written.
        """
        self._close_tar()
        offered = self.num_samples + len(self.quarantine)
        if self.num_samples == 0 and self.require_samples:
            why = summarize_reasons([row[3] for row in self.quarantine.rows])
            raise DataError(
                f"no sample could be written to {self.claim.label}: "
                + (
                    f"all {offered} source samples were unusable ({why})"
                    if offered
                    else "the source holds none"
                ),
                fix="check the source paths (--root, the list file, the folder)",
            )
        check_quarantine_fraction(
            [row[3] for row in self.quarantine.rows],
            offered,
            self.max_quarantine_fraction,
            what=f"{self.claim.label}: of the {offered} source samples",
        )
        index = ShardIndex(
            num_samples=self.num_samples,
            num_classes=int(num_classes),
            class_names=list(class_names or []),
            has_clean_labels=self.num_clean > 0,
            shards=self.shards,
            channels=self.shapes.channels,
            image_size=self.shapes.image_size,
            mean=mean,
            std=std,
            noise=noise,
            extra={
                "num_clean_labels": self.num_clean,
                "num_quarantined": len(self.quarantine),
                **(extra or {}),
            },
        )
        write_index(self.tmp, index)
        self.quarantine.write(self.tmp / QUARANTINE_FILE)
        self._publish()
        elapsed = self.progress.finish()
        log.info(
            "wrote %d samples in %d shards to %s (%.1f s, %d quarantined)",
            self.num_samples,
            len(self.shards),
            self.claim.label,
            elapsed,
            len(self.quarantine),
        )
        return index

    def _publish(self) -> None:
        # The one place that decides where the finished folder goes.
        if self.out.exists() and not self.overwrite and any(self.out.iterdir()):
            raise DataError(f"output folder {self.out} appeared while writing", fix="retry")
        replace_tree(self.tmp, self.out)
        push_mirror(self.claim, head=INDEX_FILE)  # object storage: index.json uploaded last
        self._closed = True

    def abort(self) -> None:
        """Drop everything written so far (the temporary folder); ``out`` is untouched."""
        self._drop_tar()
        shutil.rmtree(self.tmp, ignore_errors=True)
        self._closed = True

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or not self._closed:
            self.abort()


def _dump_meta(meta: dict[str, Any]) -> bytes:
    return json.dumps(meta, separators=(",", ":")).encode()


def _shift_idx(src: Path, dst: Path, shift: int) -> None:
    """Copy tar ``src`` to ``dst`` with every sample's idx (key and ``json``) lowered by
    ``shift``; member order and everything else unchanged. One sample in memory at a time."""
    out = TarSampleWriter(dst)
    try:
        with tarfile.open(src, "r:") as tar:
            key, members = "", {}
            for info in tar:
                stem, suffix = info.name.split(".", 1)
                if stem != key and members:
                    _write_shifted(out, members, shift)
                    members = {}
                key = stem
                handle = tar.extractfile(info)
                members[suffix] = handle.read() if handle is not None else b""
            if members:
                _write_shifted(out, members, shift)
    finally:
        out.close()


def _write_shifted(out: TarSampleWriter, members: dict[str, bytes], shift: int) -> None:
    meta = json.loads(members[META_SUFFIX])
    meta["idx"] -= shift
    members[META_SUFFIX] = _dump_meta(meta)
    out.write(sample_key(meta["idx"]), members)

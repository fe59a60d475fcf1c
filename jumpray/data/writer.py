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
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Sequence
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
from jumpray.runs import claim_output

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


class ShardWriter:
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
        self.out = Path(out)
        if not _PREFIX.fullmatch(prefix):
            raise UsageError(
                f"--prefix {prefix!r}: use letters, digits, '-' and '_' only (it names the "
                "shard files inside --out)"
            )
        if max_samples_per_shard < 1:
            raise UsageError(f"--max-samples-per-shard must be >= 1, got {max_samples_per_shard}")
        if max_shard_bytes < 1024:
            raise UsageError(f"--max-shard-bytes must be at least 1K, got {max_shard_bytes}")
        claim_output(
            self.out, command="shards", kind="shards", sources=sources, overwrite=overwrite
        )
        self.max_quarantine_fraction = max_quarantine_fraction
        self.require_samples = require_samples
        self.prefix, self.overwrite = prefix, overwrite
        self.max_samples, self.max_bytes = max_samples_per_shard, max_shard_bytes
        self.tmp = self.out.parent / f".{self.out.name}.partial-{os.getpid()}"
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir(parents=True)
        self.quarantine = QuarantineLog(
            on_error, fix="fix or remove the source image, or pass data.on_error=skip"
        )
        self.progress = ProgressLog(f"{self.out.name}: samples written", total)
        self.shards: list[ShardEntry] = []
        self.num_samples = 0
        self.num_clean = 0
        self._shapes: set[tuple[int, int, int]] = set()
        self._tar: TarSampleWriter | None = None
        self._closed = False

    # -- writing ------------------------------------------------------------------------------

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
        idx = self.num_samples
        meta: dict[str, Any] = {"idx": idx}
        if clean_label is not None:
            meta["clean"] = int(clean_label)
            self.num_clean += 1
        if source is not None:
            meta["source"] = source
        members = {
            fmt: image,
            LABEL_SUFFIX: str(int(given_label)).encode(),
            META_SUFFIX: json.dumps(meta, separators=(",", ":")).encode(),
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
            self._shapes.add(tuple(int(s) for s in shape))
        self.num_samples += 1
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
                f"no sample could be written to {self.out}: "
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
            what=f"{self.out}: of the {offered} source samples",
        )
        channels = {s[0] for s in self._shapes}
        sizes = {s[1:] for s in self._shapes}
        index = ShardIndex(
            num_samples=self.num_samples,
            num_classes=int(num_classes),
            class_names=list(class_names or []),
            has_clean_labels=self.num_clean > 0,
            shards=self.shards,
            channels=channels.pop() if len(channels) == 1 else None,
            image_size=list(sizes.pop()) if len(sizes) == 1 else None,
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
            self.out,
            elapsed,
            len(self.quarantine),
        )
        return index

    def _publish(self) -> None:
        if self.out.exists() and not self.overwrite and any(self.out.iterdir()):
            raise DataError(f"output folder {self.out} appeared while writing", fix="retry")
        replace_tree(self.tmp, self.out)
        self._closed = True

    def abort(self) -> None:
        """Drop everything written so far (the temporary folder); ``out`` is untouched."""
        if self._tar is not None:
            self._tar.close()
            self._tar = None
        shutil.rmtree(self.tmp, ignore_errors=True)
        self._closed = True

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None or not self._closed:
            self.abort()

"""Converters from users' raw formats to shard folders (docs/contract.md).

- :func:`write_arrays`: numpy images + labels (each image encoded as PNG).
- :func:`write_fashion_mnist`: the Fashion-MNIST idx files (a split, optionally the first N).
- :func:`write_from_list`: ``relpath label`` list files (Clothing1M, WebVision), with an optional
  clean list, an optional key list (Clothing1M: only these keys, in this order) and a label cap
  (WebVision "mini": the first 50 classes = ``max_label=49``).
- :func:`write_from_folder`: one sub-folder per class (sorted names = class indices).

Noise (``--noise SPEC``, see :mod:`jumpray.core.noise`) is drawn once from ``seed`` over all
labels before any image is written, so it needs only labels, never images in memory. The labels
the source provides become the clean labels and the noisy ones the given labels. ``instance``
noise needs image features: it is offered for array sources (Fashion-MNIST included), whose images
are in memory anyway, and refused for list and folder sources (a million-image feature pass is not
worth it; use sym/pairflip/asym there).

List and folder sources stream: one image is read, verified (fully decoded once, JPEGs at a
reduced DCT scale) and written at a time; an unreadable or missing image follows ``on_error``
(``skip`` records it in ``quarantine.parquet``). Their bytes are stored unchanged when they are
JPEG, PNG or WebP; other formats (GIF, BMP, TIFF) are re-encoded as PNG.
"""

from __future__ import annotations

import functools
import math
import os
import resource
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from jumpray.core.noise import make_noisy_labels, parse_noise_spec
from jumpray.data.decode import PixelStats, encode_png, inspect_image
from jumpray.data.filelist import (
    Entry,
    FolderEntries,
    ListEntries,
    MemoryEntries,
    iter_list_file,
)
from jumpray.data.quarantine import OnError
from jumpray.data.schema import ShardIndex, infer_num_classes
from jumpray.data.writer import PartResult, ShardPart, ShardWriter, read_count
from jumpray.errors import ConfigError, DataError, UsageError
from jumpray.log import get_logger

__all__ = [
    "apply_noise",
    "apply_array_noise",
    "write_arrays",
    "write_fashion_mnist",
    "read_list_file",
    "write_from_list",
    "write_from_folder",
    "FOLDER_IMAGE_EXTENSIONS",
]

log = get_logger(__name__)

FOLDER_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
_STORED_FORMATS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "WEBP": "webp"}
_STATS_SAMPLES = 2000  # images used for the suggested mean/std


def apply_noise(
    labels: np.ndarray,
    *,
    spec: str | None,
    num_classes: int,
    seed: int,
    features: np.ndarray | None = None,
    asym_map: str | None = None,
) -> tuple[np.ndarray, dict[str, Any] | None]:
    """Draw noisy labels once from ``seed``.

    Args:
        labels: (N,) int64 clean labels.
        spec: a noise SPEC (``sym:0.4``...); None or ``none`` = no noise.
        num_classes: C.
        seed: the seed of the only random generator used.
        features: (N, D) float32 normalised images, for ``instance`` noise.
        asym_map: a named map of :data:`jumpray.core.noise.ASYM_MAPS` for ``asym``.

    Returns:
        (given (N,) int64, the ``noise`` entry of index.json, or None without noise).

    Raises:
        ConfigError: a bad spec, or a kind the source cannot support.
    """
    kind, rate = parse_noise_spec(spec or "none")
    if kind == "none":
        return np.asarray(labels, dtype=np.int64), None
    result = make_noisy_labels(
        np.asarray(labels, dtype=np.int64),
        num_classes=num_classes,
        kind=kind,
        rate=rate,
        rng=np.random.default_rng(seed),
        features=features,
        asym_map=asym_map,
    )
    info = {
        "spec": f"{kind}:{rate:g}",
        "kind": kind,
        "rate": rate,
        "seed": int(seed),
        "realized_rate": round(result.realized_rate, 6),
        "convention": "sym:p relabels a fraction p with a different class (realized rate p)",
    }
    log.info(
        "noise %s (seed %d): realized wrong-label rate %.4f",
        info["spec"],
        seed,
        result.realized_rate,
    )
    return result.given_label, info


@dataclass(frozen=True)
class _FolderFacts:
    """What a converter knows about the folder it writes, for index.json (the writer counts the
    rest).

    Attributes:
        num_classes: C.
        class_names: C names, or None.
        noise: the ``noise`` entry of :func:`apply_noise`, or None.
        extra: more fields for index.json, or None.
    """

    num_classes: int
    class_names: Sequence[str] | None
    noise: dict[str, Any] | None
    extra: dict[str, Any] | None


def _writer_kwargs(kwargs: dict[str, Any]) -> dict[str, Any]:
    allowed = {
        "prefix",
        "max_samples_per_shard",
        "max_shard_bytes",
        "overwrite",
        "on_error",
        "max_quarantine_fraction",
    }
    unknown = set(kwargs) - allowed
    if unknown:
        raise TypeError(f"unexpected arguments {sorted(unknown)}; allowed: {sorted(allowed)}")
    return kwargs


# ---------------------------------------------------------------------------------------------
# In-memory arrays


def write_arrays(
    out: str | Path,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    clean_labels: np.ndarray | None = None,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    noise: str | None = None,
    seed: int = 0,
    asym_map: str | None = None,
    extra: dict[str, Any] | None = None,
    **writer_options: Any,
) -> ShardIndex:
    """Write uint8 images and integer labels as a shard folder (PNG members).

    Args:
        out: the folder to create.
        images: uint8 (N, H, W) gray or (N, H, W, 3) RGB.
        labels: (N,) int labels. With ``noise`` they are the clean labels and noisy copies become
            the given labels; without, they are the given labels.
        clean_labels: (N,) true labels, when known and ``noise`` is None.
        num_classes: C; default max label + 1.
        class_names: C names.
        noise, seed, asym_map: see :func:`apply_noise`.
        extra: more fields for index.json.
        **writer_options: prefix, max_samples_per_shard, max_shard_bytes, overwrite, on_error.

    Returns:
        The index written.
    """
    images = np.asarray(images)
    labels = np.asarray(labels, dtype=np.int64)
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or len(images) != len(labels):
        raise DataError(
            f"images must be uint8 (N, H, W) or (N, H, W, 3) with N = len(labels) = {len(labels)}, "
            f"got {images.dtype} {images.shape}"
        )
    num_classes = int(num_classes or (labels.max() + 1 if labels.size else 1))
    noise_info = None
    if noise and parse_noise_spec(noise)[0] != "none":
        if clean_labels is not None:
            raise ConfigError("pass either clean_labels or noise, not both (noise makes them)")
        clean_labels = labels
        labels, noise_info = apply_array_noise(
            images, labels, spec=noise, num_classes=num_classes, seed=seed, asym_map=asym_map
        )
    write = functools.partial(
        _write_images, images=images, labels=labels, clean_labels=clean_labels
    )
    facts = _FolderFacts(num_classes, class_names, noise_info, extra)
    return _write_folder(out, write, facts, total=len(images), writer_options=writer_options)


def apply_array_noise(
    images: np.ndarray,
    labels: np.ndarray,
    *,
    spec: str | None,
    num_classes: int,
    seed: int,
    asym_map: str | None = None,
) -> tuple[np.ndarray, dict[str, Any] | None]:
    """:func:`apply_noise` for images in memory: ``instance`` noise draws from the images, flattened,
    scaled to 0..1 and standardised over the whole array (what :func:`write_arrays` writes).

    Args:
        images: uint8 (N, H, W) or (N, H, W, C).
        labels: (N,) int64 clean labels.
        spec, num_classes, seed, asym_map: as :func:`apply_noise`.

    Returns:
        As :func:`apply_noise`.
    """
    features = None
    if parse_noise_spec(spec or "none")[0] == "instance":
        flat = images.reshape(len(images), -1).astype(np.float32) / 255.0
        features = (flat - flat.mean()) / max(float(flat.std()), 1e-6)
    return apply_noise(
        labels, spec=spec, num_classes=num_classes, seed=seed, features=features, asym_map=asym_map
    )


def _write_images(
    writer: ShardWriter,
    *,
    images: np.ndarray,
    labels: np.ndarray,
    clean_labels: np.ndarray | None,
) -> PixelStats:
    """Write each image as PNG with its labels; returns the pixel statistics of a sample."""
    stats = PixelStats(1 if images.ndim == 3 else images.shape[3])
    stride = max(1, len(images) // _STATS_SAMPLES)
    for i in range(len(images)):
        img = images[i]
        chw = img[None] if img.ndim == 2 else img.transpose(2, 0, 1)
        if i % stride == 0:
            stats.add(chw)
        writer.write(
            encode_png(img),
            image_format="png",
            given_label=int(labels[i]),
            clean_label=None if clean_labels is None else int(clean_labels[i]),
            shape=chw.shape,
        )
    return stats


def write_fashion_mnist(
    out: str | Path,
    *,
    split: str = "train",
    limit: int | None = None,
    noise: str | None = None,
    seed: int = 0,
    root: str | Path | None = None,
    **writer_options: Any,
) -> ShardIndex:
    """Fashion-MNIST (the first ``limit`` samples of ``split``, in file order) as shards.

    The dataset's labels are the clean labels; ``asym`` noise uses the Fashion-MNIST map.
    """
    from jumpray.data.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist
    from jumpray.runs import check_sources

    check_sources(out, [root])
    images, labels = load_fashion_mnist(split, root=root, limit=limit)
    clean = None if noise and parse_noise_spec(noise)[0] != "none" else labels
    writer_options.setdefault("prefix", split)
    return write_arrays(
        out,
        images,
        labels,
        clean_labels=clean,
        num_classes=len(FASHION_MNIST_CLASSES),
        class_names=list(FASHION_MNIST_CLASSES),
        noise=noise,
        seed=seed,
        asym_map="fashion_mnist",
        extra={"source": {"kind": "fashion-mnist", "split": split, "limit": limit}},
        **writer_options,
    )


# ---------------------------------------------------------------------------------------------
# Files on disk: list files and class folders


def read_list_file(path: str | Path, *, with_labels: bool = True) -> list[tuple[str, int]]:
    """Parse a whole ``relpath label`` list (or, ``with_labels=False``, a ``relpath`` key list).

    The converters stream the file instead (:func:`jumpray.data.filelist.iter_list_file`); this
    list is for callers that want it all.

    Returns:
        [(relpath, label)] in file order (label -1 for a key list).

    Raises:
        DataError: the file is missing, or a line is malformed (the message names file and line).
    """
    return [(p, y) for p, y, _ in iter_list_file(path, with_labels=with_labels)]


@dataclass(frozen=True)
class _Plan:
    """What the write pass needs besides re-reading the source: arrays, never per-sample objects.

    Attributes:
        entries: re-readable (relpath, label, line) source entries.
        total: N, the entries to write (those with a label >= ``reject_from`` are not counted).
        where: the file the line numbers refer to (the list, the key list) or the folder.
        reject_from: entries with a label at or above it were quarantined up front; None = none.
        given: (N,) noisy given labels for entries [given_from, given_from + len); None = the
            source's labels are given (then ``clean_of`` gives the clean ones).
        given_from: the position of ``given[0]``.
        clean_of: the ``--clean-list`` labels by relpath, or None.
    """

    entries: Callable[[], Iterator[Entry]]
    total: int
    where: str
    reject_from: int | None = None
    given: np.ndarray | None = None
    given_from: int = 0
    clean_of: dict[str, int] | None = None

    def window(self, start: int, stop: int) -> _Plan:
        """The same plan carrying only the noisy labels of [start, stop) (for one task)."""
        if self.given is None:
            return self
        return replace(self, given=self.given[start:stop].copy(), given_from=start)

    def iter(
        self, start: int = 0, stop: int | None = None
    ) -> Iterator[tuple[int, str, int, Any, int]]:
        """(position, relpath, given, clean or None, line) of entries [start, stop), streamed."""
        stop = self.total if stop is None else stop
        position = 0
        for relpath, label, line in self.entries():
            if self.reject_from is not None and label >= self.reject_from:
                continue
            if position >= stop:
                return
            if position >= start:
                if self.given is not None:
                    yield (
                        position,
                        relpath,
                        int(self.given[position - self.given_from]),
                        label,
                        line,
                    )
                else:
                    clean = self.clean_of.get(relpath) if self.clean_of else None
                    yield position, relpath, label, clean, line
            position += 1


class _Stats:
    """The pixel statistics of every ``stride``-th image written (a bounded sample).

    A parallel part keeps the few thumbnails instead (``keep=True``); the driver adds every part's
    in range order, which gives the very sums of a serial run.
    """

    def __init__(self, *, keep: bool = False):
        self.keep = keep
        self.channels: int | None = None
        self.thumbs: list[np.ndarray] = []
        self._stats: PixelStats | None = None

    def first(self, channels: int) -> None:
        """An image was written: the first one fixes C of the statistics."""
        if self.channels is None:
            self.channels = channels

    def add(self, thumb: np.ndarray) -> None:
        """Count one (C, h, w) uint8 thumbnail."""
        if self.keep:
            self.thumbs.append(thumb)
            return
        if self._stats is None:
            self._stats = PixelStats(self.channels or 3)
        self._stats.add(thumb)

    def pixel_stats(self) -> PixelStats:
        """The statistics (empty when nothing was written)."""
        return self._stats or PixelStats(self.channels or 3)


def _skip(writer: Any, relpath: str, line: int, where: str, reason: str) -> None:
    """Quarantine one entry; under ``on_error=raise`` the error names the list line and the fix."""
    try:
        writer.skip(source=relpath, reason=reason)
    except DataError as exc:
        if not line:
            raise
        raise DataError(f"{where}, line {line}: {relpath}: {reason}", fix=exc.fix) from None


def _stream_files(
    writer: Any,
    entries: Iterable[tuple[int, str, int, int | None, int]],
    *,
    root: Path,
    where: str,
    stride: int,
    stats: _Stats,
) -> int:
    """Read, verify and write each entry (one image in memory at a time); returns how many were
    written with a given label other than their clean one."""
    wrong = 0
    base = os.path.abspath(root)
    for position, relpath, given, clean, line in entries:
        # Lexically (symlinks inside --root are the user's own and trusted): an absolute path or
        # a ../ that leaves --root would embed files from elsewhere in the shards.
        path = os.path.normpath(os.path.join(base, relpath))
        if not path.startswith(base + os.sep):
            _skip(writer, relpath, line, where, f"path lies outside --root {root}")
            continue
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            reason = f"image file unreadable: {exc.strerror or exc}"
            _skip(writer, relpath, line, where, reason)
            continue
        try:
            fmt, channels, h, w, thumb = inspect_image(data)
        except DataError as exc:
            _skip(writer, relpath, line, where, exc.reason)
            continue
        suffix = _STORED_FORMATS.get(fmt)
        if suffix is None:
            from PIL import Image  # re-encode formats the shard contract does not list

            with Image.open(path) as im:
                im = im.convert("L" if channels == 1 else "RGB")
                data, suffix = encode_png(np.asarray(im)), "png"
        stats.first(channels)
        if position % stride == 0:
            stats.add(thumb)
        writer.write(
            data,
            image_format=suffix,
            given_label=given,
            clean_label=clean,
            source=relpath,
            shape=(channels, h, w),
        )
        wrong += clean is not None and clean != given
    return wrong


def _labels(entries: Callable[[], Iterator[Entry]]) -> np.ndarray:
    """(M,) int64 labels of the source, in order: the only per-entry array a conversion keeps."""
    return np.fromiter((label for _, label, _ in entries()), dtype=np.int64)


def _noisy_labels(
    labels: np.ndarray,
    clean_of: dict[str, int] | None,
    *,
    noise: str | None,
    num_classes: int,
    seed: int,
) -> tuple[np.ndarray | None, dict[str, Any] | None]:
    """(N,) given labels drawn over all N labels at once (None without noise), and the noise
    entry of index.json."""
    kind, _ = parse_noise_spec(noise or "none")
    if kind == "none":
        return None, None
    if clean_of is not None:
        raise ConfigError(
            "--noise and --clean-list exclude each other: noise makes the clean labels"
        )
    if kind == "instance":
        raise ConfigError(
            "instance noise needs image features and is offered for fashion-mnist and numpy "
            "arrays only; for list or folder sources use sym, pairflip or asym"
        )
    return apply_noise(labels, spec=noise, num_classes=num_classes, seed=seed)


def _check_labels(labels: np.ndarray, plan: _Plan, num_classes: int) -> None:
    """Every label in [0, C); the error names the first bad entry, its list line and the fix."""
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if not bad.size:
        return
    first = int(bad[0])
    _, relpath, label, _, line = next(plan.iter(first, first + 1))
    at = f", line {line}" if line else ""
    raise DataError(
        f"{plan.where}{at}: label {label} of {relpath} is outside [0, {num_classes})",
        fix="pass --num-classes, or --max-label to drop the higher classes",
    )


def _key_list_entries(
    listed: ListEntries, key_list: str | Path, on_error: OnError
) -> tuple[MemoryEntries, list[str]]:
    """Clothing1M's key list: its paths in its order, labelled from the list file.

    The lookup table of the list file is the one O(N) dict of a conversion (a key list is a join);
    returns the entries and the keys without a label.
    """
    label_of = {p: y for p, y, _ in listed()}
    entries, missing = [], []
    for relpath, _, line in iter_list_file(key_list, with_labels=False):
        if relpath in label_of:
            entries.append((relpath, label_of[relpath], line))
        else:
            missing.append(relpath)
    if missing and on_error == "raise":
        raise DataError(
            f"{key_list}: {len(missing)} keys have no label in {listed.path}, first {missing[0]!r}",
            fix="fix the lists, or set data.on_error=skip to quarantine those keys",
        )
    return MemoryEntries(tuple(entries)), missing


def write_from_list(
    list_file: str | Path,
    *,
    root: str | Path,
    out: str | Path,
    clean_list: str | Path | None = None,
    key_list: str | Path | None = None,
    max_label: int | None = None,
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    noise: str | None = None,
    seed: int = 0,
    parallel: int = 1,
    **writer_options: Any,
) -> ShardIndex:
    """Shards from a ``relpath label`` list (Clothing1M / WebVision format, docs/contract.md).

    The list is streamed: one pass reads the labels into an (N,) array (for C and the noise), the
    write pass reads it again line by line. Only a key list is held (it is a join).

    Args:
        list_file: lines ``relative/path.jpg LABEL``.
        root: the folder the paths are relative to.
        out: the shard folder to create.
        clean_list: a second list of ``relpath clean_label`` (only the paths it names get one).
        key_list: Clothing1M's ``*_key_list.txt``: only these paths, in this order (idx = position);
            their labels are looked up in ``list_file``; a key absent from it follows ``on_error``.
        max_label: keep only lines with label <= this (WebVision mini: 49).
        num_classes: C; default ``max_label + 1`` or the highest label + 1.
        class_names: C names.
        noise, seed: see :func:`apply_noise` (asym needs a map and is refused unless C = 10 ...
            as :func:`jumpray.core.noise.make_noisy_labels` decides).
        parallel: write N contiguous ranges in N Ray tasks (Ray must be up); 1 = in this process.
        **writer_options: prefix, max_samples_per_shard, max_shard_bytes, overwrite, on_error.

    Returns:
        The index written.
    """
    listed = ListEntries(Path(list_file), max_label)
    entries: Callable[[], Iterator[Entry]] = listed
    on_error: OnError = writer_options.get("on_error", "raise")
    rejected: list[tuple[str, str]] = []
    if key_list is not None:
        entries, missing = _key_list_entries(listed, key_list, on_error)
        rejected += [(p, "key has no label in the list file") for p in missing]
    labels = _labels(entries)
    reject_from = None
    if num_classes is None and max_label is not None:
        num_classes = max_label + 1
    elif num_classes is None:
        num_classes, far, note = infer_num_classes(labels)
        log.info("%s: %s (pass --num-classes to set it)", list_file, note)
        if far.any():
            # far is exactly the labels >= C: the write pass skips them by value.
            reject_from = num_classes
            labels = labels[~far]
            rejected += [
                (
                    p,
                    f"label {y} lies far outside the dense labels 0..{num_classes - 1} (pass "
                    f"--num-classes {y + 1} if it is a class)",
                )
                for p, y, _ in entries()
                if y >= num_classes
            ]
    clean_of = {p: y for p, y, _ in iter_list_file(clean_list)} if clean_list is not None else None
    plan = _Plan(entries, len(labels), str(key_list or list_file), reject_from, clean_of=clean_of)
    _check_labels(labels, plan, num_classes)
    given, noise_info = _noisy_labels(
        labels, clean_of, noise=noise, num_classes=num_classes, seed=seed
    )
    plan = replace(plan, given=given)
    del labels
    source = {
        "kind": "from-list",
        "list": str(list_file),
        "root": str(root),
        "clean_list": None if clean_list is None else str(clean_list),
        "key_list": None if key_list is None else str(key_list),
        "max_label": max_label,
    }
    facts = _FolderFacts(num_classes, class_names, noise_info, {"source": source})
    return _write_entries(
        out,
        plan,
        facts,
        root=Path(root),
        rejected=rejected,
        sources=[root, list_file, clean_list, key_list],
        writer_options=writer_options,
        parallel=parallel,
    )


def write_from_folder(
    folder: str | Path,
    *,
    out: str | Path,
    noise: str | None = None,
    seed: int = 0,
    parallel: int = 1,
    **writer_options: Any,
) -> ShardIndex:
    """Shards from an image-folder tree: ``folder/<class name>/**/<image>``.

    Classes are the sub-folders in sorted name order (class index = position); images are the
    files with an image extension (:data:`FOLDER_IMAGE_EXTENSIONS`), in sorted path order. Other
    files are ignored and counted in the log. The tree is walked, never listed whole: one pass for
    the labels, one to write (``parallel``: see :func:`write_from_list`).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(
            f"{folder} has no class sub-folders", fix="put each class's images in folder/<class>/"
        )
    entries = FolderEntries(folder, tuple(classes), FOLDER_IMAGE_EXTENSIONS)
    labels = _labels(entries)
    ignored = entries.count_ignored()
    if ignored:
        log.warning("%s: ignored %d files without an image extension", folder, ignored)
    given, noise_info = _noisy_labels(
        labels, None, noise=noise, num_classes=len(classes), seed=seed
    )
    plan = _Plan(entries, len(labels), str(folder), given=given)
    source = {"kind": "from-folder", "folder": str(folder), "ignored_files": ignored}
    facts = _FolderFacts(len(classes), classes, noise_info, {"source": source})
    return _write_entries(
        out,
        plan,
        facts,
        root=folder,
        rejected=[],
        sources=[folder],
        writer_options=writer_options,
        parallel=parallel,
    )


def _write_entries(
    out: str | Path,
    plan: _Plan,
    facts: _FolderFacts,
    *,
    root: Path,
    rejected: Sequence[tuple[str, str]],
    sources: Sequence[str | Path | None],
    writer_options: dict[str, Any],
    parallel: int = 1,
) -> ShardIndex:
    """Write the plan's entries, read from files under ``root``; the ``rejected`` (relpath,
    reason) pairs are quarantined first. A noise entry in ``facts`` gets the rate realized among
    the samples written."""
    if parallel < 1:
        raise UsageError(f"--parallel must be >= 1, got {parallel}")
    stride = max(1, plan.total // _STATS_SAMPLES)

    def write_samples(writer: ShardWriter) -> PixelStats:
        for relpath, reason in rejected:
            writer.skip(source=relpath, reason=reason)
        if parallel > 1:
            stats, wrong = _write_on_ray(writer, plan, root=root, stride=stride, parallel=parallel)
        else:
            stats = _Stats()
            wrong = _stream_files(
                writer, plan.iter(), root=root, where=plan.where, stride=stride, stats=stats
            )
        if facts.noise is not None and writer.num_samples:
            facts.noise["realized_rate"] = round(wrong / writer.num_samples, 6)
        return stats.pixel_stats()

    return _write_folder(
        out,
        write_samples,
        facts,
        total=plan.total,
        sources=sources,
        writer_options=writer_options,
    )


# ---------------------------------------------------------------------------------------------
# Parallel writing: contiguous ranges in Ray tasks


def _cpus_per_task(cpus: float, parallel: int) -> float:
    """CPUs each write task reserves: at most 1, and together one less than the cluster has when
    it has 2 or more, so the driver and Ray's daemons keep a core (docs/architecture.md,
    'Ray notes: CPU starvation')."""
    free = cpus - 1 if cpus >= 2 else cpus
    return max(0.01, min(1.0, math.floor(100 * free / parallel) / 100))


def _rss_bytes() -> int:
    """This process's resident memory now (Linux /proc; 0 elsewhere)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _write_part(
    plan: _Plan,
    start: int,
    stop: int,
    root: Path,
    folder: Path,
    options: dict[str, Any],
    stride: int,
) -> PartResult:
    """One Ray task: entries [start, stop) into ``folder``, idx from ``start``."""
    rss_start = _rss_bytes()
    part = ShardPart(folder, first_idx=start, **options)
    stats = _Stats(keep=True)
    wrong = _stream_files(
        part, plan.iter(start, stop), root=root, where=plan.where, stride=stride, stats=stats
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    return part.finish(
        channels=stats.channels,
        thumbs=stats.thumbs,
        wrong=wrong,
        peak_rss_above_start=max(0, peak - rss_start) if rss_start else None,
    )


def _write_on_ray(
    writer: ShardWriter, plan: _Plan, *, root: Path, stride: int, parallel: int
) -> tuple[_Stats, int]:
    """Write ``parallel`` contiguous ranges of the plan in Ray tasks, each into its own part
    folder inside the writer's temporary folder, then append the parts in range order.

    The tasks need the temporary folder on a filesystem every node sees (one node: always).
    Returns the merged statistics and the wrong-label count.
    """
    bounds = [plan.total * i // parallel for i in range(parallel + 1)]
    ranges = [(a, b) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]
    calls = [
        (plan.window(a, b), a, b, root, writer.tmp / f".part-{i:04d}", writer.part_options, stride)
        for i, (a, b) in enumerate(ranges)
    ]
    parts = _run_parts(calls, writer.progress)
    stats, wrong = _Stats(), 0
    for i, part in enumerate(parts):
        writer.adopt(part)
        if part.extra["channels"] is not None:
            stats.first(part.extra["channels"])
        for thumb in part.extra["thumbs"]:
            stats.add(thumb)
        wrong += part.extra["wrong"]
        peak = part.extra["peak_rss_above_start"]
        log.info(
            "part %d: %d samples, %d shards, task peak RSS %s above its start",
            i,
            part.num_samples,
            len(part.shards),
            "unknown" if peak is None else f"{peak / 2**20:.1f} MiB",
        )
    return stats, wrong


def _run_parts(calls: list[tuple[Any, ...]], progress: Any) -> list[PartResult]:
    """Run :func:`_write_part` once per argument tuple, one Ray task each, and wait for all;
    the driver sums the parts' counts once a second into ``progress``."""
    import ray

    if not ray.is_initialized():
        raise UsageError(
            "--parallel needs Ray: jumpray shards starts it (jumpray.jobs._run.start_ray); from "
            "Python, call jumpray.ray_utils.init_ray() first"
        )
    per_task = _cpus_per_task(float(ray.cluster_resources().get("CPU", 1.0)), len(calls))
    log.info("writing in %d Ray tasks of %g CPU each", len(calls), per_task)
    task = ray.remote(_write_part).options(num_cpus=per_task, max_retries=0)
    refs = [task.remote(*call) for call in calls]
    return _gather(refs, [call[4] for call in calls], progress)


def _gather(refs: list[Any], folders: list[Path], progress: Any) -> list[PartResult]:
    """Wait for every task, feeding their counts to ``progress``; the first failure cancels the
    rest and is raised as the task raised it (a DataError names the list line)."""
    import ray

    pending = list(refs)
    try:
        while pending:
            ready, pending = ray.wait(pending, num_returns=len(pending), timeout=1.0)
            ray.get(ready)  # raises a failed task's error now, not after the others finish
            progress.update(sum(read_count(f) for f in folders) - progress.done)
        return ray.get(refs)
    except ray.exceptions.RayTaskError as exc:
        for ref in pending:
            ray.cancel(ref)
        # Let the cancelled tasks stop before the writer removes the folder they write in.
        ray.wait(pending, num_returns=len(pending), timeout=30.0)
        cause = exc.cause
        if isinstance(cause, Exception):
            raise cause from None
        raise


def _write_folder(
    out: str | Path,
    write_samples: Callable[[ShardWriter], PixelStats],
    facts: _FolderFacts,
    *,
    total: int,
    writer_options: dict[str, Any],
    sources: Sequence[str | Path | None] = (),
) -> ShardIndex:
    """The one way every converter writes a folder: open a :class:`ShardWriter`, let
    ``write_samples`` fill it, close it with the pixel statistics as the suggested normalisation.

    Returns:
        The index written.
    """
    options = _writer_kwargs(dict(writer_options))
    with ShardWriter(out, total=total, sources=sources, **options) as writer:
        mean, std = write_samples(writer).result()
        return writer.close(
            num_classes=facts.num_classes,
            class_names=list(facts.class_names or []),
            mean=mean,
            std=std,
            noise=facts.noise,
            extra=facts.extra,
        )

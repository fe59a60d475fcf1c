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
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jumpray.core.noise import make_noisy_labels, parse_noise_spec
from jumpray.data.decode import PixelStats, encode_png, inspect_image
from jumpray.data.quarantine import OnError
from jumpray.data.schema import ShardIndex, infer_num_classes
from jumpray.data.writer import ShardWriter
from jumpray.errors import ConfigError, DataError
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
    """Parse a ``relpath label`` list (or, ``with_labels=False``, a ``relpath`` key list).

    Blank lines and lines starting with ``#`` are skipped. The path is everything before the last
    whitespace-separated field, so paths may contain spaces.

    Returns:
        [(relpath, label)] in file order (label -1 for a key list).

    Raises:
        DataError: the file is missing, or a line is malformed (the message names file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"list file {path} not found")
    entries = []
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            if not with_labels:
                entries.append((text, -1))
                continue
            parts = text.rsplit(None, 1)
            if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
                raise DataError(
                    f"{path}, line {number}: expected 'relative/path.jpg LABEL' with an integer "
                    f"label, got {text[:120]!r}",
                    fix="fix or remove that line",
                )
            entries.append((parts[0], int(parts[1])))
    return entries


def _stream_files(
    writer: ShardWriter,
    entries: Sequence[tuple[str, int, int | None]],
    *,
    root: Path,
) -> tuple[PixelStats, int]:
    """Read, verify and write each (relpath, given, clean) entry; returns stats and wrong count."""
    stats: PixelStats | None = None
    stride = max(1, len(entries) // _STATS_SAMPLES)
    wrong = 0
    base = os.path.abspath(root)
    for position, (relpath, given, clean) in enumerate(entries):
        # Lexically (symlinks inside --root are the user's own and trusted): an absolute path or
        # a ../ that leaves --root would embed files from elsewhere in the shards.
        path = os.path.normpath(os.path.join(base, relpath))
        if not path.startswith(base + os.sep):
            writer.skip(source=relpath, reason=f"path lies outside --root {root}")
            continue
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            writer.skip(source=relpath, reason=f"image file unreadable: {exc.strerror or exc}")
            continue
        try:
            fmt, channels, h, w, thumb = inspect_image(data)
        except DataError as exc:
            writer.skip(source=relpath, reason=exc.reason)
            continue
        suffix = _STORED_FORMATS.get(fmt)
        if suffix is None:
            from PIL import Image  # re-encode formats the shard contract does not list

            with Image.open(path) as im:
                im = im.convert("L" if channels == 1 else "RGB")
                data, suffix = encode_png(np.asarray(im)), "png"
        if stats is None:
            stats = PixelStats(channels)
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
    return stats or PixelStats(3), wrong


def _noisy_entries(
    items: Sequence[tuple[str, int]],
    clean_of: dict[str, int] | None,
    *,
    noise: str | None,
    num_classes: int,
    seed: int,
) -> tuple[list[tuple[str, int, int | None]], dict[str, Any] | None]:
    kind, _ = parse_noise_spec(noise or "none")
    if kind == "none":
        return [(p, y, clean_of.get(p) if clean_of else None) for p, y in items], None
    if clean_of is not None:
        raise ConfigError(
            "--noise and --clean-list exclude each other: noise makes the clean labels"
        )
    if kind == "instance":
        raise ConfigError(
            "instance noise needs image features and is offered for fashion-mnist and numpy "
            "arrays only; for list or folder sources use sym, pairflip or asym"
        )
    labels = np.array([y for _, y in items], dtype=np.int64)
    given, info = apply_noise(labels, spec=noise, num_classes=num_classes, seed=seed)
    return [(p, int(g), int(y)) for (p, y), g in zip(items, given, strict=True)], info


def _check_labels(items: Iterable[tuple[str, int]], num_classes: int, source: str) -> None:
    for relpath, label in items:
        if not 0 <= label < num_classes:
            raise DataError(
                f"{source}: label {label} of {relpath} is outside [0, {num_classes})",
                fix="pass --num-classes, or --max-label to drop the higher classes",
            )


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
    **writer_options: Any,
) -> ShardIndex:
    """Shards from a ``relpath label`` list (Clothing1M / WebVision format, docs/contract.md).

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
        **writer_options: prefix, max_samples_per_shard, max_shard_bytes, overwrite, on_error.

    Returns:
        The index written.
    """
    items = read_list_file(list_file)
    if max_label is not None:
        items = [(p, y) for p, y in items if y <= max_label]
    on_error: OnError = writer_options.get("on_error", "raise")
    missing: list[str] = []
    if key_list is not None:
        label_of = dict(items)
        keys = [p for p, _ in read_list_file(key_list, with_labels=False)]
        missing = [p for p in keys if p not in label_of]
        if missing and on_error == "raise":
            raise DataError(
                f"{key_list}: {len(missing)} keys have no label in {list_file}, "
                f"first {missing[0]!r}",
                fix="fix the lists, or set data.on_error=skip to quarantine those keys",
            )
        items = [(p, label_of[p]) for p in keys if p in label_of]
    stray: list[tuple[str, int]] = []
    if num_classes is None and max_label is not None:
        num_classes = max_label + 1
    elif num_classes is None:
        labels = np.array([y for _, y in items], dtype=np.int64)
        num_classes, far, note = infer_num_classes(labels)
        log.info("%s: %s (pass --num-classes to set it)", list_file, note)
        stray = [item for item, bad in zip(items, far.tolist(), strict=True) if bad]
        items = [item for item, bad in zip(items, far.tolist(), strict=True) if not bad]
    _check_labels(items, num_classes, str(list_file))
    clean_of = dict(read_list_file(clean_list)) if clean_list is not None else None
    entries, noise_info = _noisy_entries(
        items, clean_of, noise=noise, num_classes=num_classes, seed=seed
    )
    source = {
        "kind": "from-list",
        "list": str(list_file),
        "root": str(root),
        "clean_list": None if clean_list is None else str(clean_list),
        "key_list": None if key_list is None else str(key_list),
        "max_label": max_label,
    }
    rejected = [(p, "key has no label in the list file") for p in missing]
    rejected += [
        (
            p,
            f"label {y} lies far outside the dense labels 0..{num_classes - 1} (pass "
            f"--num-classes {y + 1} if it is a class)",
        )
        for p, y in stray
    ]
    facts = _FolderFacts(num_classes, class_names, noise_info, {"source": source})
    return _write_entries(
        out,
        entries,
        facts,
        root=Path(root),
        rejected=rejected,
        sources=[root, list_file, clean_list, key_list],
        writer_options=writer_options,
    )


def write_from_folder(
    folder: str | Path,
    *,
    out: str | Path,
    noise: str | None = None,
    seed: int = 0,
    **writer_options: Any,
) -> ShardIndex:
    """Shards from an image-folder tree: ``folder/<class name>/**/<image>``.

    Classes are the sub-folders in sorted name order (class index = position); images are the
    files with an image extension (:data:`FOLDER_IMAGE_EXTENSIONS`), in sorted path order. Other
    files are ignored and counted in the log.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder")
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(
            f"{folder} has no class sub-folders", fix="put each class's images in folder/<class>/"
        )
    items, ignored = [], 0
    for label, name in enumerate(classes):
        for path in sorted((folder / name).rglob("*")):
            if not path.is_file():
                continue
            if path.suffix.lower() in FOLDER_IMAGE_EXTENSIONS:
                items.append((path.relative_to(folder).as_posix(), label))
            else:
                ignored += 1
    if ignored:
        log.warning("%s: ignored %d files without an image extension", folder, ignored)
    entries, noise_info = _noisy_entries(
        items, None, noise=noise, num_classes=len(classes), seed=seed
    )
    source = {"kind": "from-folder", "folder": str(folder), "ignored_files": ignored}
    facts = _FolderFacts(len(classes), classes, noise_info, {"source": source})
    return _write_entries(
        out,
        entries,
        facts,
        root=folder,
        rejected=[],
        sources=[folder],
        writer_options=writer_options,
    )


def _write_entries(
    out: str | Path,
    entries: Sequence[tuple[str, int, int | None]],
    facts: _FolderFacts,
    *,
    root: Path,
    rejected: Sequence[tuple[str, str]],
    sources: Sequence[str | Path | None],
    writer_options: dict[str, Any],
) -> ShardIndex:
    """Write the (relpath, given, clean) entries read from files under ``root``; the
    ``rejected`` (relpath, reason) pairs are quarantined first. A noise entry in ``facts`` gets
    the rate realized among the samples written."""

    def write_samples(writer: ShardWriter) -> PixelStats:
        for relpath, reason in rejected:
            writer.skip(source=relpath, reason=reason)
        stats, wrong = _stream_files(writer, entries, root=root)
        if facts.noise is not None and writer.num_samples:
            facts.noise["realized_rate"] = round(wrong / writer.num_samples, 6)
        return stats

    return _write_folder(
        out,
        write_samples,
        facts,
        total=len(entries),
        sources=sources,
        writer_options=writer_options,
    )


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

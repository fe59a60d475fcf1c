"""The shard folder contract (docs/contract.md, 'Shard folder') and the row schema of the data layer.

A shard folder holds WebDataset tars ``<prefix>-NNNNNN.tar`` and an ``index.json``. A sample is the
run of consecutive tar members sharing a ``__key__`` (the member name up to its first dot); its
members are one image (``jpg``/``jpeg``/``png``/``webp``), ``cls`` (the given label, ASCII integer)
and ``json`` (``{"idx": int, "clean": int, "source": str}``). Members with any other suffix are
never read, let alone decoded or unpickled.

Rows that :func:`jumpray.data.read_shards` yields (numpy batches; one row per usable sample):

======================  ==============================================================
``key``                 str, the sample's ``__key__``
``shard``               str, the tar's file name (not the path)
``idx``                 int64, the global sample id (``json`` idx, or assigned, see below)
``given_label``         int64, the ``cls`` member: the label as given, possibly wrong
``clean_label``         int64, ``json`` "clean", or -1 when unknown
``image``               uint8 (C, H, W), C = 1 or 3
======================  ==============================================================

Quarantine rows (:data:`QUARANTINE_COLUMNS`): ``key``, ``shard``, ``idx`` (-1 when unknown) and
``reason``; one per sample that could not be used, so rows out + quarantined = rows in.

:func:`parse_sample` is the one reading of a sample's members: the scan, the decode pass, the
plain reader and the sample copier all call it, so they agree on what a bad sample is and why.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jumpray import storage
from jumpray.errors import DataError
from jumpray.files import write_json
from jumpray.storage import Location, join, list_files

__all__ = [
    "FORMAT",
    "INDEX_FILE",
    "QUARANTINE_FILE",
    "KEY",
    "SHARD",
    "IDX",
    "GIVEN_LABEL",
    "CLEAN_LABEL",
    "IMAGE",
    "ROW_COLUMNS",
    "QUARANTINE_COLUMNS",
    "IMAGE_SUFFIXES",
    "LABEL_SUFFIX",
    "META_SUFFIX",
    "TEXT_SUFFIX",
    "READ_SUFFIXES",
    "ShardEntry",
    "ShardIndex",
    "ParsedSample",
    "parse_sample",
    "sample_key",
    "shard_name",
    "split_member_name",
    "list_shard_files",
    "parse_label_member",
    "parse_meta_member",
    "read_index",
    "write_index",
    "infer_num_classes",
]

FORMAT = "jumpray-shards/1"
INDEX_FILE = "index.json"
QUARANTINE_FILE = "quarantine.parquet"

KEY = "key"
SHARD = "shard"
IDX = "idx"
GIVEN_LABEL = "given_label"
CLEAN_LABEL = "clean_label"
IMAGE = "image"
ROW_COLUMNS = (KEY, SHARD, IDX, GIVEN_LABEL, CLEAN_LABEL, IMAGE)
QUARANTINE_COLUMNS = (KEY, SHARD, IDX, "reason")

IMAGE_SUFFIXES = ("jpg", "jpeg", "png", "webp")
LABEL_SUFFIX = "cls"
META_SUFFIX = "json"
TEXT_SUFFIX = "txt"
# The only members whose bytes are ever read; everything else (pyd, pickle, pth, npy...) is skipped.
READ_SUFFIXES = frozenset((*IMAGE_SUFFIXES, LABEL_SUFFIX, META_SUFFIX, TEXT_SUFFIX))


def sample_key(idx: int) -> str:
    """The writer's key for a sample: ``s`` + 9 digits (no dots, sorts in idx order)."""
    return f"s{idx:09d}"


def shard_name(prefix: str, number: int) -> str:
    """``<prefix>-NNNNNN.tar``."""
    return f"{prefix}-{number:06d}.tar"


def split_member_name(name: str) -> tuple[str, str]:
    """Split a tar member name into (key, suffix) the WebDataset way.

    The key is the directory part plus the base name up to its first dot; the suffix is the rest
    of the base name, lower-cased. A name without a dot has suffix "".
    """
    head, sep, base = name.rpartition("/")
    stem, dot, suffix = base.partition(".")
    return head + sep + stem, suffix.lower() if dot else ""


def list_shard_files(folder: Location) -> list[Location]:
    """The ``*.tar`` files of a shard folder (a path or a URI), sorted by name (the folder's
    shard order)."""
    return [join(folder, name) for name in list_files(folder, ".tar")]


@dataclass
class ShardEntry:
    """One tar of a shard folder as listed in ``index.json``."""

    file: str
    num_samples: int


@dataclass
class ShardIndex:
    """The content of ``index.json`` (docs/contract.md, plus optional fields this writer adds).

    Attributes:
        num_samples: samples in the folder; idx values are 0..num_samples-1.
        num_classes: C; every ``cls`` is in [0, C).
        class_names: C names, or empty when unknown.
        has_clean_labels: True when at least one sample's json carries ``clean``.
        shards: the tars, in order.
        channels: 1 or 3 when every image has it, else None.
        image_size: [H, W] when every image has it, else None.
        mean, std: per-channel normalisation suggested from a sample of images (0..1 scale).
        noise: {"spec", "kind", "rate", "seed", "realized_rate"} when noise was injected.
        extra: anything else (source description, counts), kept verbatim.
    """

    num_samples: int
    num_classes: int
    class_names: list[str] = field(default_factory=list)
    has_clean_labels: bool = False
    shards: list[ShardEntry] = field(default_factory=list)
    channels: int | None = None
    image_size: list[int] | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    noise: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The JSON object written to ``index.json`` (``format`` first)."""
        body = asdict(self)
        extra = body.pop("extra")
        return {"format": FORMAT, **body, **extra}

    @classmethod
    def from_json(cls, data: dict[str, Any], *, path: str = INDEX_FILE) -> ShardIndex:
        """Parse and check an ``index.json`` object.

        Raises:
            DataError: a required field is missing or has the wrong type.
        """
        fmt = data.get("format", FORMAT)
        if not str(fmt).startswith("jumpray-shards/"):
            raise DataError(f"{path}: unknown format {fmt!r}, expected {FORMAT!r}")
        try:
            shards = [ShardEntry(str(s["file"]), int(s["num_samples"])) for s in data["shards"]]
            known = {f for f in cls.__dataclass_fields__ if f != "extra"}
            return cls(
                num_samples=int(data["num_samples"]),
                num_classes=int(data["num_classes"]),
                class_names=[str(c) for c in data.get("class_names") or []],
                has_clean_labels=bool(data.get("has_clean_labels", False)),
                shards=shards,
                channels=data.get("channels"),
                image_size=data.get("image_size"),
                mean=data.get("mean"),
                std=data.get("std"),
                noise=data.get("noise"),
                extra={k: v for k, v in data.items() if k not in known and k != "format"},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(
                f"{path}: missing or invalid field ({exc!r})",
                fix="rewrite the folder with `jumpray shards`, "
                "or delete index.json to read the tars alone",
            ) from None


def parse_label_member(raw: bytes | None) -> int | None:
    """The integer in a ``cls`` member, or None when absent or not an integer."""
    try:
        text = raw.decode("ascii").strip() if raw is not None else ""
        return int(text) if text.lstrip("-").isdigit() else None
    except UnicodeDecodeError:
        return None


def parse_meta_member(raw: bytes | None) -> tuple[int, int, str | None]:
    """(idx or -1, clean or -1, problem or None) of a ``json`` member (absent: no idx, no clean).

    Parsed with :func:`json.loads` only: data, never code.
    """
    if raw is None:
        return -1, -1, None
    try:
        meta = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return -1, -1, "json member is not valid JSON"
    if not isinstance(meta, dict):
        return -1, -1, "json member is not an object"
    idx, clean = meta.get("idx", -1), meta.get("clean", -1)
    if clean is None:
        clean = -1
    for name, value in (("idx", idx), ("clean", clean)):
        if isinstance(value, bool) or not isinstance(value, int):
            return -1, -1, f"json {name} is not an integer: {value!r}"
    return idx, clean, None


@dataclass(frozen=True)
class ParsedSample:
    """The fields of one sample, read from its members by :func:`parse_sample`.

    Attributes:
        given_label: the ``cls`` integer; -1 when the image or ``cls`` is missing or unreadable.
        idx: json ``idx``, or -1 when absent (kept for a sample missing its image or ``cls``,
            so its quarantine row names it).
        clean_label: json ``clean``, or -1 when absent or when ``given_label`` is -1.
        image_format: the suffix of the sample's first image member (member order), or None.
        image: that member's bytes; None when it is absent or was not read.
        problem: why the sample cannot be used (the quarantine reason), or None.
    """

    given_label: int
    idx: int
    clean_label: int
    image_format: str | None
    image: bytes | None
    problem: str | None


def parse_sample(members: Mapping[str, bytes | None]) -> ParsedSample:
    """Parse one sample's members (suffix -> bytes, or None for a member present but not read).

    The checks, in the order their reasons win: an image member exists, a ``cls`` member exists
    and holds an integer, the ``json`` member (if any) is an object whose idx and clean are
    integers. Only the presence of the image is checked here; decoding it is the reader's job.
    Keys other than member suffixes (webdataset's ``__key__``, ``__url__``) are ignored.
    """
    idx, clean, problem = parse_meta_member(members.get(META_SUFFIX))
    fmt = next((suffix for suffix in members if suffix in IMAGE_SUFFIXES), None)
    image = members[fmt] if fmt is not None else None
    if fmt is None:
        problem = f"no image member (one of {', '.join(IMAGE_SUFFIXES)})"
    elif LABEL_SUFFIX not in members:
        problem = "no cls member (the label)"
    else:
        given = parse_label_member(members[LABEL_SUFFIX])
        if given is not None:
            return ParsedSample(given, idx, clean, fmt, image, problem)
        problem = f"cls is not an integer: {(members[LABEL_SUFFIX] or b'')[:40]!r}"
    return ParsedSample(-1, idx, -1, fmt, image, problem)


def read_index(folder: Location) -> ShardIndex | None:
    """Read ``folder/index.json``; None when the folder has none.

    Raises:
        DataError: the file exists but is not valid JSON or misses a field.
    """
    path = join(folder, INDEX_FILE)
    if not storage.exists(path):
        return None
    try:
        data = json.loads(storage.read_bytes(path))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: the top level must be an object")
    return ShardIndex.from_json(data, path=str(path))


def write_index(folder: str | Path, index: ShardIndex) -> Path:
    """Write ``folder/index.json`` atomically (temp name, then rename)."""
    return write_json(Path(folder) / INDEX_FILE, index.to_json(), indent=1)


def infer_num_classes(labels: np.ndarray) -> tuple[int, np.ndarray, str]:
    """C from the labels alone (no index.json, no --num-classes), and the labels far outside.

    Labels are dense from 0 in every dataset format jumpray reads, so C is the length of the run
    0, 1, ... of labels present; the few labels beyond a gap in that run (together at most 1 % of
    the samples, or a single one) are treated as errors rather than as classes: one stray ``cls``
    of 42 would otherwise make a 43-class model. When many samples lie beyond the gap (a class
    missing in the middle of real data), C = highest label + 1 and nothing is rejected.

    Args:
        labels: (N,) int64 given labels; negative values (unknown) are ignored.

    Returns:
        (C, (N,) bool mask of the labels to reject, a sentence saying how C was chosen).
    """
    labels = np.asarray(labels, np.int64)
    known = labels[labels >= 0]
    if known.size == 0:
        return 1, np.zeros(labels.shape, bool), "num_classes = 1: no label found"
    present = set(np.unique(known).tolist())
    run_end = 0
    while run_end in present:
        run_end += 1
    beyond = labels >= run_end
    highest = int(known.max())
    if run_end == 0 or not beyond.any() or beyond.sum() > max(1, 0.01 * known.size):
        note = f"num_classes = {highest + 1} (highest label + 1)"
        return highest + 1, np.zeros(labels.shape, bool), note
    strays = sorted(set(labels[beyond].tolist()))
    note = (
        f"num_classes = {run_end} (labels 0..{run_end - 1} are all present); "
        f"{int(beyond.sum())} sample(s) with label(s) {strays[:5]} beyond that are rejected "
        f"(set num_classes={highest + 1} to keep them as classes)"
    )
    return run_end, beyond, note

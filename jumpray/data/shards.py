"""``read_shards``: a shard folder as a Ray Dataset (the only Ray Data reader of the project).

Two passes (docs/architecture.md, 'Data safety'), both defined without Ray in :mod:`jumpray.data.scan`:

1. **Scan**: :func:`~jumpray.data.scan.scan_shard` as one Ray task per tar, combined by
   :func:`~jumpray.data.scan.scan_folder`: tar headers, ``cls`` and ``json``, and the image
   headers of a few samples per tar (the folder's image sizes), no pixel decoded; every bad
   sample is found here, except images that do not decode.
2. **Decode**: a Ray Data ``Datasource`` with one read task per tar running
   :func:`~jumpray.data.scan.read_shard_rows`; images that fail go to the quarantine too.

So each tar is opened once by the scan and once per execution of the dataset (once in all when
the rows are materialized).

Under ``on_error=raise`` the first problem raises :class:`~jumpray.errors.DataError` naming
shard, key and reason (a decode-time one surfaces when the dataset executes, as a Ray error that
is also a DataError, with the same attributes). Under ``skip`` rows out + quarantined = rows in
(:meth:`ShardSource.check_counts`).

Why not ``ray.data.read_webdataset``: it silently returns the readable prefix of a truncated tar
(a 5,000-sample shard cut at 1 MB gave 298 rows and no error, Ray 2.60) and reads every member
into memory before grouping. Reading tars here keeps both under our control and was also faster:
on 20,000 Fashion-MNIST samples (2 cores, same decode and augmentation), a pass took 2.0-3.8 s
here against 4.4-10.5 s with ``read_webdataset(decoder=None)`` + ``map_batches``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from jumpray.data.decode import resolve_normalization
from jumpray.data.quarantine import OnError, QuarantineLog, check_quarantine_fraction
from jumpray.data.scan import FolderScan, ShardScan, read_shard_rows, scan_folder
from jumpray.data.schema import KEY
from jumpray.errors import DataError
from jumpray.log import get_logger

if TYPE_CHECKING:
    import ray.data

    from jumpray.config import DataConfig
    from jumpray.data.augment import Augmenter

__all__ = ["ShardInfo", "ShardSource", "read_shards"]

log = get_logger(__name__)


# ---------------------------------------------------------------------------------------------
# Ray Data: the only place a shard folder becomes a Dataset


# Decoded rows are materialized only when they take at most this share of the object store: the
# rest is for Ray Data's blocks in flight, the snapshots and what the job puts there meanwhile.
STORE_SHARE = 0.5
# Bytes a decoded row takes beside its image: idx, the labels, the key and shard strings.
_ROW_EXTRA_BYTES = 64


def _row_bytes(channels: int, hw: Sequence[int]) -> int:
    """Bytes of one decoded row: its (C, H, W) uint8 image and the other columns."""
    return int(channels) * int(hw[0]) * int(hw[1]) + _ROW_EXTRA_BYTES


@dataclass
class ShardInfo:
    """What a reader of :attr:`ShardSource.dataset` needs to know about the folder.

    Attributes:
        folder: the shard folder.
        num_samples: idx values lie in [0, num_samples).
        num_classes, class_names, has_clean_labels: from index.json, or assumed.
        channels: C of every ``image`` row; image_hw: its (H, W).
        mean, std: index.json's suggested normalisation (None when absent); see
            :func:`jumpray.data.decode.resolve_normalization`.
        noise: index.json's noise entry, if any.
        num_shards: tars read.
        rows_in: samples found + samples known lost (the left side of the count invariant).
        idx_assigned: idx values were assigned by the reader, not read from json.
        assumptions: what was assumed for lack of index.json / json members.
        shard_issues: shard-level problems that lost no known sample.
        image_size_choice: how ``image_hw`` was decided (:func:`choose_image_size`).
    """

    folder: str
    num_samples: int
    num_classes: int
    class_names: list[str]
    has_clean_labels: bool
    channels: int
    image_hw: tuple[int, int]
    mean: list[float] | None
    std: list[float] | None
    noise: dict[str, Any] | None
    num_shards: int
    rows_in: int
    idx_assigned: bool
    assumptions: list[str]
    shard_issues: list[str]
    image_size_choice: str = ""

    def carried_facts(self) -> dict[str, Any]:
        """The facts a folder made from this one's samples keeps in its index.json: the
        ``num_classes``, ``class_names``, ``mean``, ``std`` and ``noise`` arguments of
        :meth:`jumpray.data.ShardWriter.close`."""
        return {
            "num_classes": self.num_classes,
            "class_names": self.class_names,
            "mean": self.mean,
            "std": self.std,
            "noise": self.noise,
        }


@dataclass
class ShardSource:
    """The result of :func:`read_shards`: the good rows, the folder's facts, and the quarantine.

    Attributes:
        dataset: a Ray Dataset of usable rows (columns of :mod:`jumpray.data.schema`).
        info: :class:`ShardInfo`.
        scan: the full :class:`FolderScan`.
    """

    dataset: ray.data.Dataset
    info: ShardInfo
    scan: FolderScan
    _sink: Any = None
    max_quarantine_fraction: float = 1.0
    _late: list[tuple[str, str, int, str]] | None = None
    _said_streams: bool = False

    def close(self) -> None:
        """End the quarantine sink actor, keeping the rows it collected (call when the dataset
        will not be read again).

        The read tasks carry the sink's handle inside pickled closures, which Ray cannot track,
        so the actor would otherwise live as long as the driver: one per ``read_shards`` call.
        """
        import ray

        if self._sink is None:
            return
        self._late = sorted(ray.get(self._sink.get.remote()))
        ray.kill(self._sink)
        self._sink = None

    def quarantine(self) -> pa.Table:
        """Every sample dropped so far: the scan's rows, then undecodable images.

        Images are decoded lazily, so their rows are complete once :attr:`dataset` has been
        consumed (or materialized) once; the scan's rows are known from the start. Repeated
        executions of the dataset do not duplicate rows.
        """
        import ray

        tables = [self.scan.quarantine.to_table()]
        rows = self._late
        if self._sink is not None:
            rows = sorted(ray.get(self._sink.get.remote()))
        if rows is not None:
            late = QuarantineLog("skip")
            late.extend(rows)
            tables.append(late.to_table())
        return pa.concat_tables(tables) if len(tables) > 1 else tables[0]

    def make_augmenter(self, config: DataConfig | None = None) -> Augmenter:
        """The :class:`~jumpray.data.augment.Augmenter` for these rows under ``config``.

        Normalisation: ``data.mean``/``data.std`` when set, else index.json's suggestion, else
        0.5 (:func:`~jumpray.data.decode.resolve_normalization`); the output size is the rows'.
        """
        from jumpray.config import DataConfig
        from jumpray.data.augment import build_augmenter

        cfg = config or DataConfig()
        mean, std = resolve_normalization(
            cfg.mean,
            cfg.std,
            channels=self.info.channels,
            index_mean=self.info.mean,
            index_std=self.info.std,
        )
        return build_augmenter(
            cfg, channels=self.info.channels, image_hw=self.info.image_hw, mean=mean, std=std
        )

    def decoded_bytes(self) -> int:
        """Bytes of the decoded rows (every column), as the object store would hold them."""
        h, w = self.info.image_hw
        return self.scan.num_good * _row_bytes(self.info.channels, (h, w))

    def fits_object_store(self, store_bytes: float | None = None) -> bool:
        """Whether the decoded rows fit in :data:`STORE_SHARE` of the object store (the one
        estimate behind every "materialize or stream" choice); logs one line, once per source,
        when they do not (the clean job asks first, then the training launcher).

        Args:
            store_bytes: the object store's size; None = the running cluster's.
        """
        import ray

        if store_bytes is None:
            store_bytes = ray.cluster_resources().get("object_store_memory", 0.0)
        need = self.decoded_bytes()
        if need <= store_bytes * STORE_SHARE:
            return True
        if self._said_streams:
            return False
        self._said_streams = True
        log.info(
            "%s: streaming, not materializing: %.0f MB of decoded rows > %.0f %% of the object "
            "store (%.0f MB)",
            self.info.folder,
            need / 2**20,
            100 * STORE_SHARE,
            store_bytes / 2**20,
        )
        return False

    def materialize(self) -> bool:
        """Decode every row once into the object store, when they fit (:meth:`fits_object_store`).

        Every later pass (training epochs, scoring) then reads the decoded rows instead of the
        tars, and needs no CPU for reading; rows that do not fit stream on every pass. Returns
        whether the rows are materialized.
        """
        from ray.data.dataset import MaterializedDataset

        from jumpray.ray_utils import materialize_in_order

        if isinstance(self.dataset, MaterializedDataset):
            return True
        if not self.fits_object_store():
            return False
        self.dataset = materialize_in_order(self.dataset)
        return True

    def check_counts(self, rows_out: int) -> int:
        """Assert the invariant rows out + quarantined = rows in, and the quarantined fraction
        (:meth:`check_quarantine`); returns the quarantine size.

        Raises:
            DataError: the counts disagree (a reader bug: nothing may be lost silently), or too
                many samples were quarantined.
        """
        quarantined = self.quarantine().num_rows
        if rows_out + quarantined != self.info.rows_in:
            raise DataError(
                f"{self.info.folder}: {rows_out} rows out + {quarantined} quarantined != "
                f"{self.info.rows_in} rows in"
            )
        self.check_quarantine()
        return quarantined

    def check_quarantine(self) -> None:
        """Fail when more than ``data.max_quarantine_fraction`` of the samples were unusable
        (complete once :attr:`dataset` has been consumed once).

        Raises:
            DataError: with the counts and the most common reasons.
        """
        reasons = self.quarantine().column("reason").to_pylist()
        check_quarantine_fraction(
            reasons,
            self.info.rows_in,
            self.max_quarantine_fraction,
            what=f"{self.info.folder}: of the {self.info.rows_in} samples",
        )


def _ray_map(fn: Callable[[str], ShardScan], paths: Sequence[str]) -> list[ShardScan]:
    import ray

    # DEFAULT: never captured into a caller's placement group (a Tune trial's holds no CPU).
    task = ray.remote(num_cpus=1, max_retries=2, scheduling_strategy="DEFAULT")(fn)
    return ray.get([task.remote(p) for p in paths])


# Sizes come from the image headers the scan read (no pixel decoded): those of the usable samples
# (up to scan.HEADERS_PER_SHARD a tar) of up to this many tars, spread over the folder.
_SIZE_SHARDS = 8
# The largest side chosen from the data when the user sets none (ImageNet-style models use 224;
# a bigger automatic choice would multiply memory and time without being asked for).
MAX_CHOSEN_SIZE = 224


@dataclass
class _Probe:
    """Image headers sampled from a folder: (C, H, W) per readable one, the first failure."""

    shapes: list[tuple[int, int, int]]
    tried: int
    first_error: str | None


def _probe(scan: FolderScan) -> _Probe:
    """The image headers the scan read, of usable samples in :data:`_SIZE_SHARDS` tars spread
    over the folder (no tar is opened here)."""
    usable = [s for s in scan.shards if len(scan.drop.get(s.file, ())) < len(s.keys)]
    step = max(1, len(usable) // _SIZE_SHARDS)
    probe = _Probe([], 0, None)
    for shard in usable[::step][:_SIZE_SHARDS]:
        drop = set(scan.drop.get(shard.file, ()))
        for ordinal, header in shard.image_headers.items():
            if ordinal in drop:
                continue
            probe.tried += 1
            if isinstance(header, str):
                where = f"{shard.file}/{shard.keys[ordinal]}"
                probe.first_error = probe.first_error or f"{where}: {header}"
            else:
                probe.shapes.append(header)
    return probe


def choose_image_size(
    shapes: Sequence[tuple[int, int, int]],
    *,
    configured: int | None,
    index_hw: Sequence[int] | None,
    configured_by: str = "data.image_size",
) -> tuple[int | None, tuple[int, int], str]:
    """The one place that decides the size images are decoded at.

    Args:
        shapes: sampled (C, H, W) of the folder's images.
        configured: ``data.image_size``, or the size a model was trained at (test shards,
            scoring).
        configured_by: where ``configured`` came from, for the note.
        index_hw: index.json's ``image_size``: [H, W] when every image has it; None when the
            sizes are mixed or unknown (then the sampled sizes decide).

    Returns:
        (resize_to or None to keep the size, the (H, W) of every row, a sentence saying why).
    """
    if configured is not None:
        return configured, (configured, configured), f"{configured}x{configured} ({configured_by})"
    if index_hw:
        h, w = int(index_hw[0]), int(index_hw[1])
        return None, (h, w), f"{h}x{w} (every image, by index.json)"
    if not shapes:
        return None, (0, 0), "unknown (no image read)"
    sizes = {(h, w) for _, h, w in shapes}
    if len(sizes) == 1:  # an image of another size found later is rejected with this fix
        h, w = sizes.pop()
        return None, (h, w), f"{h}x{w} (every one of {len(shapes)} sampled images)"
    short = sorted(min(h, w) for _, h, w in shapes)
    side = int(min(max(short[len(short) // 2], 8), MAX_CHOSEN_SIZE))
    lo, hi = min(short), max(max(h, w) for _, h, w in shapes)
    note = (
        f"{side}x{side}, chosen from the data (mixed sizes, {lo} to {hi} pixels a side in "
        f"{len(shapes)} sampled: the median shorter side, at most {MAX_CHOSEN_SIZE}; every image "
        "is resized and centre-cropped to it; data.image_size=N sets it)"
    )
    return side, (side, side), note


def _read_one_shard(
    path: str, idx_base: int | None, drop: list[int], options: dict[str, Any], sink: Any
) -> Iterator[pa.Table]:
    """A Ray Data read task: one tar -> Arrow blocks of decoded rows."""
    import ray
    from ray.data.block import BlockAccessor

    for rows, bad in read_shard_rows(path, drop=drop, idx_base=idx_base, **options):
        if bad:
            ray.get(sink.add.remote(bad))  # blocking: the rows must be in before the task ends
        if len(rows[KEY]):
            yield BlockAccessor.batch_to_block(rows)


def _shard_datasource(scan: FolderScan, options: dict[str, Any], sink: Any, row_bytes: int):
    """A ``ray.data.Datasource`` with one read task per tar that has usable samples.

    A datasource (not ``from_items`` + ``map_batches``) keeps one task per tar even when the
    caller adds ``map_batches(batch_size=256)``: Ray fuses that into the read task instead of
    bundling 256 input rows, i.e. all the tars, into a single task.
    """
    from ray.data import Datasource, ReadTask
    from ray.data.block import BlockMetadata

    class ShardDatasource(Datasource):
        def get_name(self) -> str:
            return "JumprayShards"

        def estimate_inmemory_data_size(self) -> int:
            return scan.num_good * row_bytes

        def get_read_tasks(self, parallelism, per_task_row_limit=None, data_context=None):
            tasks = []
            for s in scan.shards:
                good = len(s.keys) - len(scan.drop[s.file])
                if good <= 0:
                    continue
                read = functools.partial(
                    _read_one_shard,
                    s.path,
                    scan.idx_base.get(s.file),
                    scan.drop[s.file],
                    options,
                    sink,
                )
                meta = BlockMetadata(
                    num_rows=good,
                    size_bytes=good * row_bytes,
                    exec_stats=None,
                    input_files=(s.path,),
                )
                tasks.append(ReadTask(read, meta, per_task_row_limit=per_task_row_limit))
            return tasks

    return ShardDatasource()


def _sink_actor(on_error: OnError) -> Any:
    """The actor that collects decode-stage quarantine rows; None under ``raise``.

    Under ``raise`` the first bad image raises inside its read task, so no row is ever sent, and
    the actor (a process of its own, started while the run starts up) is not needed.
    """
    if on_error != "skip":
        return None
    import ray

    @ray.remote(num_cpus=0)
    class QuarantineSink:
        """Collects decode-stage quarantine rows from the read tasks (deduplicated)."""

        def __init__(self) -> None:
            self.rows: dict[tuple[str, str], tuple[str, str, int, str]] = {}

        def add(self, rows: list[tuple[str, str, int, str]]) -> None:
            for row in rows:
                self.rows[(row[1], row[0])] = tuple(row)

        def get(self) -> list[tuple[str, str, int, str]]:
            return list(self.rows.values())

    return QuarantineSink.remote()


def read_shards(
    folder: str | Path,
    config: DataConfig | None = None,
    *,
    num_classes: int | None = None,
    on_error: OnError | None = None,
    image_size: int | None = None,
    channels: int | None = None,
    read_parallelism: int | None = None,
    max_quarantine_fraction: float | None = None,
    batch_rows: int = 256,
) -> ShardSource:
    """Scan a shard folder and return a Ray Dataset of its usable, decoded rows.

    Needs a running Ray (see :func:`jumpray.ray_utils.init_ray`). Keyword arguments override the
    matching ``config`` fields (``data.on_error``, ``data.image_size``, ``data.channels``,
    ``data.read_parallelism``, ``data.max_quarantine_fraction``); without ``config`` the defaults
    of ``DataConfig()`` apply. The dataset streams; :meth:`ShardSource.materialize` caches the
    decoded rows in the object store when they fit (the clean job does, and training caches the
    tensor columns itself when ``data.materialize``).

    Args:
        folder: the shard folder (docs/contract.md; a folder of tars without index.json works too).
        config: the ``data`` section of the run config.
        num_classes: C; None = index.json's (or assumed, see :attr:`ShardInfo.assumptions`).
        batch_rows: rows per block produced by a read task.

    Returns:
        A :class:`ShardSource`.

    Raises:
        DataError: under ``raise``, at the first bad sample found by the scan (here) or by the
            decode pass (when the dataset executes: Ray then raises an error wrapping it, whose
            message names shard, key and reason); under either policy, when the scan quarantined
            more than ``max_quarantine_fraction`` of the samples or no sampled image is readable.
    """
    import ray
    import ray.data

    from jumpray.config import DataConfig

    cfg = config or DataConfig()
    on_error = on_error or cfg.on_error
    size_by = "data.image_size" if image_size is None else "the size the model works at"
    image_size = image_size if image_size is not None else cfg.image_size
    channels = channels if channels is not None else cfg.channels
    read_parallelism = read_parallelism or cfg.read_parallelism
    if max_quarantine_fraction is None:
        max_quarantine_fraction = cfg.max_quarantine_fraction

    scan = scan_folder(folder, on_error=on_error, num_classes=num_classes, map_fn=_ray_map)
    check_quarantine_fraction(
        [row[3] for row in scan.quarantine.rows],
        scan.rows_in,
        max_quarantine_fraction,
        what=f"{folder}: of the {scan.rows_in} samples",
    )
    index = scan.index
    probe = _probe(scan)
    if probe.tried and not probe.shapes:
        raise DataError(
            f"{folder}: none of the {probe.tried} images sampled is a readable image (first: "
            f"{probe.first_error})",
            fix="point --shards at a folder of image shards written by `jumpray shards`",
        )
    if channels is None:
        channels = (index.channels if index is not None and index.channels else None) or (
            probe.shapes[0][0] if probe.shapes else 3
        )
    image_size, hw, size_note = choose_image_size(
        probe.shapes,
        configured=image_size,
        index_hw=index.image_size if index is not None else None,
        configured_by=size_by,
    )
    expected_hw = hw if image_size is None else None
    sink = _sink_actor(on_error)
    options = {
        "channels": channels,
        "image_size": image_size,
        "expected_hw": expected_hw,
        "on_error": on_error,
        "batch_rows": batch_rows,
    }
    source = _shard_datasource(scan, options, sink, _row_bytes(channels, hw))
    compute = ray.data.TaskPoolStrategy(size=read_parallelism) if read_parallelism else None
    num_tasks = sum(1 for s in scan.shards if len(scan.drop[s.file]) < len(s.keys))
    # One block stream per tar: without this Ray splits blocks and stops fusing map_batches.
    ds = ray.data.read_datasource(source, compute=compute, override_num_blocks=max(1, num_tasks))
    info = ShardInfo(
        folder=str(folder),
        num_samples=scan.num_samples,
        num_classes=scan.num_classes,
        class_names=scan.class_names,
        has_clean_labels=scan.has_clean_labels,
        channels=int(channels),
        image_hw=(int(hw[0]), int(hw[1])),
        mean=index.mean if index is not None else None,
        std=index.std if index is not None else None,
        noise=index.noise if index is not None else None,
        num_shards=len(scan.shards),
        rows_in=scan.rows_in,
        idx_assigned=scan.idx_assigned,
        assumptions=scan.assumptions,
        shard_issues=scan.shard_issues,
        image_size_choice=size_note,
    )
    log.info(
        "%s: %d shards, %d samples in, %d quarantined by the scan; images %d channel(s), %s",
        folder,
        info.num_shards,
        info.rows_in,
        len(scan.quarantine),
        channels,
        size_note,
    )
    source = ShardSource(
        dataset=ds,
        info=info,
        scan=scan,
        _sink=sink,
        max_quarantine_fraction=max_quarantine_fraction,
    )
    return source

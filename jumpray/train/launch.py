"""``fit()``: one distributed training run on Ray Train, from shard sources to OUT/ (DESIGN §3).

The driver:

1. creates the run's snapshot store actor (it owns every snapshot, so they outlive the workers);
2. starts the MLflow run (params = the flattened resolved config);
3. builds a ``TorchTrainer`` over :func:`~jumpray.train.worker.train_fn_per_worker` with
   ``ScalingConfig`` from ``scaling.*``, ``FailureConfig(max_failures)`` (restarts resume from the
   last checkpoint), ``CheckpointConfig(num_to_keep=2)``, a unique run name (a uuid, so V2 never
   silently resumes an old run: ray-stack-notes gotcha 11) and :class:`UnequalSplit`, a
   ``DataConfig`` with ``streaming_split(equal=False)`` (gotcha 9: the default drops samples);
4. prints one line per epoch and logs the metrics to MLflow from the driver
   (:mod:`jumpray.train.progress`);
5. copies the final checkpoint to ``OUT/checkpoint/`` and writes ``OUT/train_summary.json``,
   ``OUT/config.yaml``, ``OUT/model.pt`` and ``OUT/selection_curves.png`` (also MLflow artifacts),
   ``OUT/quarantine.parquet`` (the training shards' unusable samples) and ``OUT/train_run.json``
   (the run name, for ``jumpray train --resume``).

``scaling.num_workers=0`` runs the same worker function in the driver process (no TorchTrainer,
no DDP, no failure retries), over the same Ray Datasets.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
import ray.train
import torch
import yaml
from torch import nn

from jumpray.checkpoint import STATE_FILE, load_checkpoint
from jumpray.config import RunConfig, config_to_flat_dict
from jumpray.data.decode import resolve_normalization
from jumpray.data.shards import ShardSource
from jumpray.errors import JumprayError
from jumpray.log import get_logger
from jumpray.tracking import NoopTracker, build_tracker
from jumpray.train.progress import DriverProgress, EpochForwarder, make_queue, plot_selection_curves
from jumpray.train.snapshots import create_snapshot_store, store_name
from jumpray.train.worker import TRAIN_COLUMNS, run_worker, train_fn_per_worker

__all__ = ["fit", "TrainResult", "UnequalSplit", "RUN_FILE", "loop_config_for"]

log = get_logger(__name__)

RUN_FILE = "train_run.json"
SUMMARY_FILE = "train_summary.json"


@dataclass
class TrainResult:
    """What :func:`fit` produced.

    Attributes:
        run_name: the Ray Train run name (unique per run unless resumed on purpose).
        out_dir: OUT.
        history: metrics of every epoch, in epoch order (from the final checkpoint).
        checkpoint_dir: OUT/checkpoint (``jumpray.checkpoint.load_checkpoint`` reads it).
        snapshot_store: the actor holding the last R snapshots (alive until :meth:`release`,
            at the latest while this driver is).
        snapshots: ``[(epoch, ObjectRef)]`` of the kept snapshots, oldest first.
        summary: the content of OUT/train_summary.json.
        mlflow_run_id: the tracking run, or None.
        extra: ``reported_epochs``, the epochs in the order the driver received their reports;
            ``report_times_s``, seconds from the start of ``fit()`` to each arrival.
    """

    run_name: str
    out_dir: Path
    history: list[dict[str, float]]
    checkpoint_dir: Path
    snapshot_store: Any
    snapshots: list[tuple[int, Any]]
    summary: dict[str, Any]
    mlflow_run_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def release(self) -> None:
        """End the snapshot store actor and drop its snapshots (call once they are scored).

        Without this the store lives as long as the driver: one per ``fit()`` piles up in a
        process that runs many (a sweep, a test session).
        """
        if self.snapshot_store is not None:
            ray.kill(self.snapshot_store)
        self.snapshot_store = None
        self.snapshots = []


class UnequalSplit(ray.train.DataConfig):
    """Split every dataset with ``streaming_split(equal=False)``: no sample is dropped.

    Ranks then get unequal numbers of rows; the worker's per-step vote and dummy steps keep DDP
    aligned (jumpray.train.loop.train_epoch).

    Args:
        preserve_order: deterministic row order (``data.preserve_order``).
    """

    def __init__(self, *, preserve_order: bool = False):
        super().__init__()
        self.preserve_order = preserve_order

    def configure(
        self,
        datasets: dict[str, Any],
        world_size: int,
        worker_handles: Any,
        worker_node_ids: Any,
        **kwargs: Any,
    ) -> list[dict[str, Any]]:
        output: list[dict[str, Any]] = [{} for _ in range(world_size)]
        for name, ds in datasets.items():
            ds = ds.copy(ds)
            if ds.name is None:
                ds.set_name(name)
            options = self._resolve_execution_options(name)
            options.preserve_order = self.preserve_order or options.preserve_order
            ds.context.execution_options = options
            splits = ds.streaming_split(world_size, equal=False, locality_hints=worker_node_ids)
            for rank, split in enumerate(splits):
                output[rank][name] = split
        return output


def loop_config_for(
    cfg: RunConfig, train: ShardSource, *, has_test: bool, store: Any = None, has_val: bool = False
) -> dict[str, Any]:
    """The ``train_loop_config`` a worker needs, from the config and the training source."""
    info = train.info
    mean, std = resolve_normalization(
        cfg.data.mean,
        cfg.data.std,
        channels=info.channels,
        index_mean=info.mean,
        index_std=info.std,
    )
    noise = info.noise or {}
    return {
        "config": cfg.model_dump(),
        "num_classes": cfg.num_classes or info.num_classes,
        "num_samples": info.num_samples,
        "channels": info.channels,
        "image_hw": list(info.image_hw),
        "mean": list(mean),
        "std": list(std),
        "noise_rate": noise.get("realized_rate", noise.get("rate")),
        "has_test": has_test,
        "has_val": has_val,
        "snapshot_store": store,
        "fault": None,
    }


def fit(
    cfg: RunConfig,
    *,
    train: ShardSource,
    test: ShardSource | None = None,
    out_dir: str | Path,
    run_name: str | None = None,
    tracker: NoopTracker | None = None,
    fault_injection: dict[str, Any] | None = None,
    val: ShardSource | None = None,
    callbacks: Sequence[Any] = (),
) -> TrainResult:
    """Train ``cfg.method.name`` on ``train`` with Ray Train and write OUT/ (see module docstring).

    Args:
        cfg: the resolved run configuration.
        train: the training shards (``jumpray.data.read_shards``).
        test: clean test shards for test accuracy each epoch, or None.
        out_dir: OUT; created if missing.
        run_name: reuse a run name to resume that run from its storage (on purpose only);
            None = a new unique name.
        tracker: an already started tracker (the caller ends it); None = start one from
            ``cfg.tracking`` and end it here.
        fault_injection: test-only: ``{"rank", "epoch", "batch", "marker"}`` SIGKILLs that worker
            once at that batch (the marker file records that it fired).
        val: a held-out split of the noisy data: ``val_accuracy`` (on its given labels) each
            epoch (sweeps: jumpray.tune), or None.
        callbacks: more ``ray.train.UserCallback``s (Tune's report callback in a sweep trial);
            they need Ray Train (``scaling.num_workers >= 1``).

    Returns:
        A :class:`TrainResult`.

    Raises:
        JumprayError: a data or config problem raised inside a worker, unwrapped.
        ray.train.TrainingFailedError: training failed for another reason after the retries.
    """
    if not ray.is_initialized():
        raise RuntimeError("fit() needs a running Ray: call jumpray.ray_utils.init_ray() first")
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    run_name = run_name or f"jumpray-{cfg.method.name}-{uuid.uuid4().hex[:8]}"
    storage = Path(cfg.scaling.storage_path or out_dir / "ray_results").resolve()
    _write_json(out_dir / RUN_FILE, {"run_name": run_name, "storage_path": str(storage)})

    # One store per fit() call: a resumed run gets a fresh store, refilled from the checkpoint
    # (reusing the name could hand back the previous call's store while it is being destroyed).
    store_id = f"{run_name}-{uuid.uuid4().hex[:6]}"
    store = create_snapshot_store(store_id, keep=cfg.snapshots.keep)
    own_tracker = tracker is None
    if tracker is None:
        tracker = build_tracker(
            enabled=cfg.tracking.enabled,
            uri=cfg.tracking.uri,
            experiment=cfg.tracking.experiment,
            run_name=cfg.tracking.run_name or run_name,
            strict=cfg.tracking.strict,
        )
    tracker.log_params(config_to_flat_dict(cfg))
    tracker.set_tags({"jumpray.run_name": run_name, "jumpray.shards": train.info.folder})

    start = time.perf_counter()  # fit wall: dataset caching + Ray Train, not the final copy
    loop_config = loop_config_for(
        cfg, train, has_test=test is not None, store=store, has_val=val is not None
    )
    loop_config["fault"] = fault_injection
    datasets = {"train": _prepare(cfg, train)}
    if test is not None:
        datasets["test"] = _prepare(cfg, test)
    if val is not None:
        datasets["val"] = _prepare(cfg, val)
    log.info(
        "training %s on %d samples (%d classes) with %d worker(s)%s; run %s",
        cfg.method.name,
        train.info.num_samples,
        loop_config["num_classes"],
        cfg.scaling.num_workers,
        " on GPU" if cfg.scaling.use_gpu else "",
        run_name,
    )
    queue = make_queue()
    progress = DriverProgress(
        queue, epochs=cfg.train.epochs, tracker=tracker, label=cfg.method.name
    ).start()
    try:
        if cfg.scaling.num_workers == 0:
            if callbacks:
                raise ValueError("fit(callbacks=...) needs Ray Train: scaling.num_workers >= 1")
            checkpoint = _fit_in_driver(cfg, loop_config, datasets, storage / run_name, progress)
        else:
            checkpoint = _fit_ray(cfg, loop_config, datasets, storage, run_name, queue, callbacks)
    except BaseException as exc:
        progress.stop()
        _close_queue(queue)
        with contextlib.suppress(Exception):  # no TrainResult will carry it to a release()
            ray.kill(store)
        if own_tracker:
            tracker.end("FAILED")
        user = _user_error(exc)
        if user is not None and user is not exc:
            raise user from exc
        raise
    fit_wall = time.perf_counter() - start
    progress.stop()
    _close_queue(queue)
    result = _finish(
        cfg, out_dir, checkpoint, (store, store_id), run_name, tracker, fit_wall, train
    )
    result.extra["reported_epochs"] = list(progress.arrivals)
    # Seconds from the start of fit() to each report's arrival on the driver (benchmarks).
    result.extra["report_times_s"] = [t - start for t in progress.arrival_times]
    if own_tracker:
        tracker.end()
    return result


def _close_queue(queue: Any) -> None:
    """End the progress queue actor now rather than whenever its last handle is collected."""
    try:
        queue.shutdown()
    except Exception as exc:  # already gone with the cluster
        log.debug("progress queue shutdown: %s", exc)


def _prepare(cfg: RunConfig, source: ShardSource) -> Any:
    """Select the tensor columns; materialize when ``data.materialize`` and it fits in memory."""
    from ray.data.dataset import MaterializedDataset

    cached = isinstance(source.dataset, MaterializedDataset)
    ds = source.dataset.select_columns(TRAIN_COLUMNS)
    if cached or not cfg.data.materialize:
        return ds
    h, w = source.info.image_hw
    approx = source.info.num_samples * (source.info.channels * h * w + 24)
    budget = ray.cluster_resources().get("object_store_memory", 0) * 0.5
    if approx > budget:
        log.info(
            "%s: streaming (about %.0f MB decoded, over half the object store)",
            source.info.folder,
            approx / 1e6,
        )
        return ds
    return ds.materialize()


def _fit_ray(
    cfg: RunConfig,
    loop_config: dict[str, Any],
    datasets: dict[str, Any],
    storage: Path,
    run_name: str,
    queue: Any,
    callbacks: Sequence[Any] = (),
) -> ray.train.Checkpoint:
    from ray.train.torch import TorchTrainer

    sc = cfg.scaling
    resources = {"CPU": sc.cpus_per_worker} | ({"GPU": sc.gpus_per_worker} if sc.use_gpu else {})
    trainer = TorchTrainer(
        train_fn_per_worker,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=sc.num_workers, use_gpu=sc.use_gpu, resources_per_worker=resources
        ),
        run_config=ray.train.RunConfig(
            name=run_name,
            storage_path=str(storage),
            failure_config=ray.train.FailureConfig(max_failures=sc.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            callbacks=[EpochForwarder(queue), *callbacks],
            # Ray Train's per-report INFO lines would bury the one progress line per epoch.
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
        ),
        datasets=datasets,
        dataset_config=UnequalSplit(preserve_order=cfg.data.preserve_order),
    )
    result = _fit_keeping_sigint(trainer)
    if result.checkpoint is None:
        raise RuntimeError(f"run {run_name} finished without a checkpoint")
    return result.checkpoint


def _fit_keeping_sigint(trainer: Any) -> Any:
    """``trainer.fit()``, then put back the SIGINT handler that was there before.

    In the main thread Ray Train 2.60 installs its own SIGINT handler and never removes it; that
    handler holds the finished run's controller actor, which in turn keeps the run's dataset
    actors alive until the next fit() replaces it.
    """
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main else None
    try:
        return trainer.fit()
    finally:
        if main and previous is not None:
            signal.signal(signal.SIGINT, previous)


class _DriverContext:
    """:class:`~jumpray.train.worker.WorkerContext` for ``num_workers=0``: the driver trains."""

    rank = 0
    world_size = 1

    def __init__(self, cfg: RunConfig, datasets: dict[str, Any], folder: Path, progress):
        self.cfg, self.datasets, self.folder, self.progress = cfg, datasets, folder, progress
        use_gpu = cfg.scaling.use_gpu and torch.cuda.is_available()
        self.device = torch.device("cuda" if use_gpu else "cpu")
        self.last: Path | None = None

    def prepare_model(self, net: nn.Module) -> nn.Module:
        return net.to(self.device)

    def batches(self, name: str, *, batch_size: int, seed: int | None) -> Iterable[Any] | None:
        ds = self.datasets.get(name)
        if ds is None:
            return None
        buffer = self.cfg.data.shuffle_buffer if seed is not None else 0
        return ds.iter_torch_batches(
            batch_size=batch_size,
            device="cpu",
            local_shuffle_buffer_size=buffer or None,
            local_shuffle_seed=seed if buffer else None,
        )

    def checkpoint(self) -> Any:
        return None

    def report(self, metrics: dict[str, float], checkpoint_dir: str | None) -> None:
        if checkpoint_dir:
            target = self.folder / f"checkpoint_epoch_{int(metrics['epoch']):06d}"
            _replace_dir(Path(checkpoint_dir), target)
            if self.last is not None and self.last != target:
                shutil.rmtree(self.last, ignore_errors=True)
            self.last = target
        self.progress.handle(metrics)


def _fit_in_driver(
    cfg: RunConfig,
    loop_config: dict[str, Any],
    datasets: dict[str, Any],
    folder: Path,
    progress: DriverProgress,
) -> ray.train.Checkpoint:
    folder.mkdir(parents=True, exist_ok=True)
    ctx = _DriverContext(cfg, datasets, folder, progress)
    run_worker(loop_config, ctx)
    if ctx.last is None:
        raise RuntimeError("the run finished without a checkpoint")
    return ray.train.Checkpoint.from_directory(str(ctx.last))


def _finish(
    cfg: RunConfig,
    out_dir: Path,
    checkpoint: ray.train.Checkpoint,
    store_and_id: tuple[Any, str],
    run_name: str,
    tracker: NoopTracker,
    fit_wall: float,
    train: ShardSource,
) -> TrainResult:
    final = out_dir / "checkpoint"
    with checkpoint.as_directory() as folder:
        _replace_dir(Path(folder), final)
    state = load_checkpoint(final)
    history = list(state["history"])
    (out_dir / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(), sort_keys=False))
    torch.save(
        {"model_args": state["model_args"], "state_dict": state["model"]}, out_dir / "model.pt"
    )
    summary = _summary(cfg, history, state, run_name, fit_wall, train, final)
    summary["num_quarantined"] = _write_quarantine(train, out_dir / "quarantine.parquet")
    store, store_id = store_and_id
    summary["snapshot_store"] = store_name(store_id)
    summary["mlflow_run_id"] = tracker.run_id
    summary["mlflow_tracking_uri"] = tracker.uri
    _write_json(out_dir / SUMMARY_FILE, summary)
    plot = plot_selection_curves(
        history, out_dir / "selection_curves.png", title=f"{cfg.method.name}: {run_name}"
    )
    for path in (out_dir / "config.yaml", out_dir / SUMMARY_FILE, plot):
        tracker.log_artifact(path)
    tracker.log_artifact(out_dir / "model.pt", "model")
    snapshots = ray.get(store.list.remote())
    log.info(
        "done: %d epochs in %.1f s (%.1f s start-up); checkpoint %s; snapshots of epochs %s",
        len(history),
        fit_wall,
        summary["startup_s"],
        final,
        [e for e, _ in snapshots],
    )
    return TrainResult(
        run_name=run_name,
        out_dir=out_dir,
        history=history,
        checkpoint_dir=final,
        snapshot_store=store,
        snapshots=snapshots,
        summary=summary,
        mlflow_run_id=tracker.run_id,
    )


def _summary(
    cfg: RunConfig,
    history: list[dict[str, float]],
    state: dict[str, Any],
    run_name: str,
    fit_wall: float,
    train: ShardSource,
    final: Path,
) -> dict[str, Any]:
    times = [h["epoch_time_s"] for h in history]
    later = times[1:] or times
    # Epochs trained by this fit() call (a resumed run re-reports only the epochs after its start).
    this_fit = sum(times)
    return {
        "run_name": run_name,
        "method": cfg.method.name,
        "shards": train.info.folder,
        "num_samples": train.info.num_samples,
        "num_classes": state["model_args"]["num_classes"],
        "num_workers": cfg.scaling.num_workers,
        "use_gpu": cfg.scaling.use_gpu,
        "epochs": len(history),
        "final": {k: v for k, v in history[-1].items() if isinstance(v, int | float)},
        "mean_epoch_time_s": sum(later) / max(len(later), 1),
        "first_epoch_time_s": times[0] if times else 0.0,
        "fit_wall_s": fit_wall,
        "startup_s": max(fit_wall - this_fit, 0.0),
        "snapshot_epochs": list(state["snapshot_epochs"]),
        "checkpoint": str(final),
        "checkpoint_file": str(final / STATE_FILE),
    }


def _write_quarantine(source: ShardSource, path: Path) -> int:
    """Write the training shards' quarantine table (complete once the data was read)."""
    import pyarrow.parquet as pq

    table = source.quarantine()
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return int(table.num_rows)


def _replace_dir(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` via a temporary name, then swap (a reader never sees half a copy)."""
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
    if dst.exists():
        os.replace(dst, old)
    os.replace(tmp, dst)
    shutil.rmtree(old, ignore_errors=True)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def _user_error(exc: BaseException) -> JumprayError | None:
    """The JumprayError a worker raised, found inside Ray's wrappers, or None."""
    seen: set[int] = set()
    todo: list[Any] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, JumprayError):
            return e
        todo += [getattr(e, "__cause__", None), getattr(e, "cause", None)]
        failures = getattr(e, "worker_failures", None)
        if isinstance(failures, dict):
            todo += list(failures.values())
    return None

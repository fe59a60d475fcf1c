"""``fit()``: one distributed training run on Ray Train, from shard sources to OUT/ (docs/architecture.md).

The driver:

1. creates the run's snapshot store actor (it owns every snapshot, so they outlive the workers);
2. starts the MLflow run (params = the flattened resolved config);
3. builds a ``TorchTrainer`` over :func:`~jumpray.train.worker.train_fn_per_worker` with
   ``ScalingConfig`` from ``scaling.*``, ``FailureConfig(max_failures)`` (restarts resume from the
   last checkpoint), ``CheckpointConfig(num_to_keep=2)``, a unique run name (a uuid, so V2 never
   silently resumes an old run) and :class:`~jumpray.train.split.UnequalSplit`, a
   ``DataConfig`` with ``streaming_split(equal=False)`` (Ray's default split drops samples);
4. prints one line per epoch and logs the metrics to MLflow from the driver
   (:mod:`jumpray.train.progress`);
5. copies the final checkpoint to ``OUT/checkpoint/`` and writes ``OUT/train_summary.json``,
   ``OUT/config.yaml``, ``OUT/model.pt`` and ``OUT/selection_curves.png`` (also MLflow artifacts),
   ``OUT/quarantine.parquet`` (the training shards' unusable samples) and ``OUT/train_run.json``
   (the run name, for ``jumpray train --resume``).

``scaling.num_workers=0`` runs the same worker function in the driver process (no TorchTrainer,
no DDP, no failure retries), over the same Ray Datasets.

Rows that fit in half the object store are materialized once (``data.materialize``); the workers
then keep their split in memory and take the node's cores (:mod:`jumpray.train.worker`).

Start-up parts in ``train_summary.json`` (seconds; see :func:`fit`'s ``startup`` argument for the
ones its caller measures): ``startup_materialize_s``, ``startup_trainer_s``, ``startup_worker_s``,
``startup_load_rows_s``, ``teardown_s``; ``startup_s`` stays the whole fixed part of the fit wall
(fit wall minus the epochs' time).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import ray
import ray.train
import torch
import yaml
from torch import nn

from jumpray.checkpoint import STATE_FILE, load_checkpoint
from jumpray.config import RunConfig, config_to_flat_dict
from jumpray.core.codebook import make_codebook
from jumpray.data.decode import resolve_normalization
from jumpray.data.shards import ShardSource
from jumpray.errors import user_error
from jumpray.files import atomic_path, copy_tree, write_json, write_parquet
from jumpray.log import get_logger
from jumpray.plots import plot_selection_curves
from jumpray.ray_utils import materialize_in_order
from jumpray.storage import is_uri, redact
from jumpray.tracking import PENDING_DIR, NoopTracker, build_tracker
from jumpray.train.progress import DriverProgress, EpochForwarder, make_queue
from jumpray.train.rows import TRAIN_COLUMNS, DatasetBatches
from jumpray.train.snapshots import create_snapshot_store, store_name
from jumpray.train.spec import SPEC_KEY, FaultInjection, WorkerSpec
from jumpray.train.split import UnequalSplit
from jumpray.train.worker import run_worker, train_fn_per_worker

__all__ = ["fit", "TrainResult", "RUN_FILE", "worker_spec_for", "log_served_model"]

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


# How often Ray Train's controller polls the workers (its default is 2 s). Each poll is a small
# remote call; the end of a run and each checkpoint's registration wait for the next one, so 2 s
# added about 2 s to every fit (measured: last report to fit() returned 2.6-2.9 s at 2 s,
# 0.8-1.0 s at 0.2 s). A value set in the environment wins.
HEALTH_CHECK_INTERVAL_S = "0.5"


# Ray starts worker processes at nice 15, so that its own daemons stay responsive. A Ray Train
# worker does the job's work: at nice 15 it yields the CPU to every other program on the machine,
# which the plain loop (nice 0) does not. The workers get nice 0 (what Ray gives its job
# drivers); a value set in the environment wins.
NICENESS_ENV = "RAY_worker_niceness"


def _worker_niceness() -> str:
    return os.environ.get(NICENESS_ENV, "0")


def worker_spec_for(
    cfg: RunConfig, train: ShardSource, *, has_test: bool, store: Any = None, has_val: bool = False
) -> WorkerSpec:
    """The :class:`WorkerSpec` every worker gets, from the config and the training source."""
    info = train.info
    mean, std = resolve_normalization(
        cfg.data.mean,
        cfg.data.std,
        channels=info.channels,
        index_mean=info.mean,
        index_std=info.std,
    )
    noise = info.noise or {}
    return WorkerSpec(
        config=cfg,
        num_classes=int(cfg.num_classes or info.num_classes),
        num_samples=int(info.num_samples),
        channels=int(info.channels),
        image_hw=(int(info.image_hw[0]), int(info.image_hw[1])),
        mean=tuple(mean),
        std=tuple(std),
        shards=str(info.folder),
        noise_rate=noise.get("realized_rate", noise.get("rate")),
        has_test=has_test,
        has_val=has_val,
        snapshot_store=store,
    )


def fit(
    cfg: RunConfig,
    *,
    train: ShardSource,
    test: ShardSource | None = None,
    out_dir: str | Path,
    run_name: str | None = None,
    tracker: NoopTracker | None = None,
    fault_injection: dict[str, Any] | None = None,
    work_dir: str | Path | None = None,
    startup: dict[str, float] | None = None,
    val: ShardSource | None = None,
    callbacks: Sequence[Any] = (),
    storage_path: str | Path | None = None,
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
        work_dir: where the resumable state goes (``ray_results/`` unless
            ``scaling.storage_path``, and the run file); None = ``out_dir``. The jobs pass the
            run folder here and a staging folder as ``out_dir`` (jumpray.runs).
        startup: start-up parts the caller measured before ``fit`` (for example
            ``startup_ray_init_s``, ``startup_scan_s``), copied into the summary.
        val: a held-out split of the noisy data: ``val_accuracy`` (on its given labels) each
            epoch (sweeps: jumpray.tune), or None.
        storage_path: where Ray Train keeps the run's checkpoints when
            ``scaling.storage_path`` is unset (a folder or an object-storage URI; the jobs pass
            OUT/ray_results, in object storage when OUT is); None = ``work_dir/ray_results``.
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
    work_dir = Path(work_dir).resolve() if work_dir is not None else out_dir
    # Config problems that only the data reveals fail here, on the driver, before any worker.
    check_model_fits(cfg, cfg.num_classes or train.info.num_classes)
    run_name = run_name or f"jumpray-{cfg.method.name}-{uuid.uuid4().hex[:8]}"
    storage = _storage(cfg.scaling.storage_path or storage_path, work_dir)
    write_json(work_dir / RUN_FILE, {"run_name": run_name, "storage_path": redact(storage)})

    # One store per fit() call: a resumed run gets a fresh store, refilled from the checkpoint
    # (reusing the name could hand back the previous call's store while it is being destroyed).
    store_id = f"{run_name}-{uuid.uuid4().hex[:6]}"
    store = create_snapshot_store(store_id, keep=cfg.snapshots.keep)
    own_tracker = tracker is None
    if tracker is None:
        tracker = build_tracker(
            cfg.tracking, default_name=run_name, pending_dir=work_dir / PENDING_DIR
        )
    tracker.log_params(config_to_flat_dict(cfg))
    tracker.set_tags({"jumpray.run_name": run_name, "jumpray.shards": train.info.folder})

    start = time.perf_counter()  # fit wall: dataset caching + Ray Train, not the final copy
    spec = worker_spec_for(
        cfg, train, has_test=test is not None, store=store, has_val=val is not None
    )
    queue = make_queue()
    spec = replace(
        spec,
        fault=FaultInjection(**fault_injection) if fault_injection else None,
        progress_queue=queue,  # workers report a data/config error through it
    )
    t_mat = time.perf_counter()
    prepared = {"train": _prepare(cfg, train)}
    if test is not None:
        prepared["test"] = _prepare(cfg, test)
    if val is not None:
        prepared["val"] = _prepare(cfg, val)
    datasets = {name: ds for name, (ds, _) in prepared.items()}
    spec = replace(spec, in_memory=all(in_memory for _, in_memory in prepared.values()))
    timings = dict(startup or {})
    timings["startup_materialize_s"] = timings.get("startup_materialize_s", 0.0) + (
        time.perf_counter() - t_mat
    )
    log.info(
        "training %s on %d samples (%d classes) with %d worker(s)%s; run %s",
        cfg.method.name,
        train.info.num_samples,
        spec.num_classes,
        cfg.scaling.num_workers,
        " on GPU" if cfg.scaling.use_gpu else "",
        run_name,
    )
    progress = DriverProgress(
        queue, epochs=cfg.train.epochs, tracker=tracker, label=cfg.method.name
    ).start()
    try:
        spec = replace(spec, submitted_at=time.time())
        if cfg.scaling.num_workers == 0:
            if callbacks:
                raise ValueError("fit(callbacks=...) needs Ray Train: scaling.num_workers >= 1")
            # The driver loop keeps its per-epoch folders on local disk (no Ray Train here).
            local = storage if isinstance(storage, Path) else work_dir / "ray_results"
            checkpoint = _fit_in_driver(spec, datasets, local / run_name, progress)
        else:
            checkpoint = _fit_ray(spec, datasets, storage, run_name, queue, progress, callbacks)
    except BaseException as exc:
        progress.stop()
        _close_queue(queue)
        with contextlib.suppress(Exception):  # no TrainResult will carry it to a release()
            ray.kill(store)
        if own_tracker:
            tracker.end("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        user = progress.user_error or user_error(exc)
        if user is not None and user is not exc and not isinstance(exc, KeyboardInterrupt):
            raise user from None  # its message is the one paragraph; Ray's wrappers add tracebacks
        raise
    fit_wall = time.perf_counter() - start
    if progress.arrival_times:
        timings["teardown_s"] = time.perf_counter() - progress.arrival_times[-1]
    progress.stop()
    _close_queue(queue)
    result = _finish(
        cfg, out_dir, checkpoint, (store, store_id), run_name, tracker, fit_wall, train, timings
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


def _prepare(cfg: RunConfig, source: ShardSource) -> tuple[Any, bool]:
    """The dataset a worker reads, and whether its rows are in the object store.

    An already materialized source is used as it is (the workers pick the tensor columns when
    they load it); otherwise the tensor columns are materialized when ``data.materialize`` and
    they fit (:meth:`~jumpray.data.shards.ShardSource.fits_object_store`), else they stream.
    """
    from ray.data.dataset import MaterializedDataset

    if isinstance(source.dataset, MaterializedDataset):
        return source.dataset, True
    ds = source.dataset.select_columns(TRAIN_COLUMNS)
    if not cfg.data.materialize or not source.fits_object_store():
        return ds, False
    return materialize_in_order(ds), True


def check_model_fits(cfg: RunConfig, num_classes: int) -> None:
    """Raise the config error a worker would raise for this data (C > 2K), on the driver.

    Raises:
        ConfigError: naming the ``model.semantic_dim`` values that work.
    """
    if cfg.method.name == "jumpteaching":
        make_codebook(num_classes, cfg.model.semantic_dim)


def _trainer_class() -> type:
    """TorchTrainer without Ray Train's own SIGINT handler.

    Ray Train installs a handler in ``fit()`` that asks the controller to abort and never
    restores the previous one, so Ctrl-C stops working for the rest of the process (scoring ran
    to its end). Keeping ours, Ctrl-C raises KeyboardInterrupt in the driver at once;
    :func:`_fit_ray` then aborts the controller. ``_register_sigint_handler`` is private Ray
    API: were it renamed, :func:`_fit_ray` still restores our handler after ``fit()``.
    """
    from ray.train.torch import TorchTrainer

    class Trainer(TorchTrainer):
        controller: Any = None

        def _register_sigint_handler(self, controller: Any) -> None:
            self.controller = controller

        def abort(self) -> None:
            if self.controller is not None:
                try:
                    self.controller.abort.remote()
                except Exception as exc:  # the controller may be gone already
                    log.debug("controller abort: %s", exc)

    return Trainer


def _storage(named: str | Path | None, work_dir: Path) -> str | Path:
    """Ray Train's storage: an object-storage URI as named, a local folder made absolute."""
    if is_uri(named):
        return str(named)
    return Path(named or work_dir / "ray_results").resolve()


def _fit_ray(
    spec: WorkerSpec,
    datasets: dict[str, Any],
    storage: str | Path,
    run_name: str,
    queue: Any,
    progress: DriverProgress,
    callbacks: Sequence[Any] = (),
) -> ray.train.Checkpoint:
    cfg = spec.config
    sc = cfg.scaling
    resources = {"CPU": sc.cpus_per_worker} | ({"GPU": sc.gpus_per_worker} if sc.use_gpu else {})
    # Read by TrainController when it starts (the driver's value is passed on to it).
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", HEALTH_CHECK_INTERVAL_S)
    trainer = _trainer_class()(
        train_fn_per_worker,
        train_loop_config={SPEC_KEY: spec},
        scaling_config=ray.train.ScalingConfig(
            num_workers=sc.num_workers,
            use_gpu=sc.use_gpu,
            resources_per_worker=resources,
            placement_strategy=sc.placement_strategy,
        ),
        run_config=ray.train.RunConfig(
            name=run_name,
            storage_path=str(storage),
            failure_config=ray.train.FailureConfig(max_failures=sc.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            callbacks=[EpochForwarder(queue), *callbacks],
            # Ray Train's per-report INFO lines would bury the one progress line per epoch.
            logging_config=ray.train.LoggingConfig(log_level="WARNING"),
            worker_runtime_env={"env_vars": {NICENESS_ENV: _worker_niceness()}},
        ),
        datasets=datasets,
        dataset_config=UnequalSplit(preserve_order=cfg.data.preserve_order),
    )
    # A data or config error in a worker would be retried max_failures times: abort instead.
    progress.on_user_error = lambda exc: trainer.abort()
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGINT) if main else None
    try:
        result = trainer.fit()
    except BaseException:
        trainer.abort()
        raise
    finally:
        if main and signal.getsignal(signal.SIGINT) is not previous:
            signal.signal(signal.SIGINT, previous)
    if result.checkpoint is None:
        raise RuntimeError(f"run {run_name} finished without a checkpoint")
    return result.checkpoint


class _DriverContext(DatasetBatches):
    """:class:`~jumpray.train.worker.WorkerContext` for ``num_workers=0``: the driver trains."""

    rank = 0
    world_size = 1

    def __init__(
        self,
        cfg: RunConfig,
        datasets: dict[str, Any],
        folder: Path,
        progress,
        *,
        in_memory: bool = False,
    ):
        super().__init__(cfg, in_memory=in_memory)
        self.datasets, self.folder, self.progress = datasets, folder, progress
        use_gpu = cfg.scaling.use_gpu and torch.cuda.is_available()
        self.device = torch.device("cuda" if use_gpu else "cpu")
        self.last: Path | None = None
        self.entered_at = time.time()

    def prepare_model(self, net: nn.Module) -> nn.Module:
        return net.to(self.device)

    def source(self, name: str) -> Any:
        return self.datasets.get(name)

    def checkpoint(self) -> Any:
        return None

    def report(self, metrics: dict[str, float], checkpoint_dir: str | None) -> None:
        if checkpoint_dir:
            target = self.folder / f"checkpoint_epoch_{int(metrics['epoch']):06d}"
            copy_tree(Path(checkpoint_dir), target)
            if self.last is not None and self.last != target:
                shutil.rmtree(self.last, ignore_errors=True)
            self.last = target
        self.progress.handle(metrics)


def _fit_in_driver(
    spec: WorkerSpec, datasets: dict[str, Any], folder: Path, progress: DriverProgress
) -> ray.train.Checkpoint:
    folder.mkdir(parents=True, exist_ok=True)
    ctx = _DriverContext(spec.config, datasets, folder, progress, in_memory=spec.in_memory)
    run_worker(spec, ctx)
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
    timings: dict[str, float],
) -> TrainResult:
    final = out_dir / "checkpoint"
    with checkpoint.as_directory() as folder:
        copy_tree(Path(folder), final)
    state = load_checkpoint(final)
    history = list(state["history"])
    (out_dir / "config.yaml").write_text(yaml.safe_dump(cfg.model_dump(), sort_keys=False))
    with atomic_path(out_dir / "model.pt") as tmp:
        torch.save({"model_args": state["model_args"], "state_dict": state["model"]}, tmp)
    summary = _summary(cfg, history, state, run_name, fit_wall, train, final)
    summary["mlflow_model_uri"] = log_served_model(cfg, state, train.info.class_names, tracker)
    summary |= _startup_parts(history, timings)
    summary["num_quarantined"] = write_parquet(out_dir / "quarantine.parquet", train.quarantine())
    store, store_id = store_and_id
    summary["snapshot_store"] = store_name(store_id)
    summary["mlflow_run_id"] = tracker.run_id
    summary["mlflow_tracking_uri"] = tracker.uri
    write_json(out_dir / SUMMARY_FILE, summary)
    plot = plot_selection_curves(
        history, out_dir / "selection_curves.png", title=f"{cfg.method.name}: {run_name}"
    )
    for path in (out_dir / "config.yaml", out_dir / SUMMARY_FILE, plot):
        if path is not None:
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
        "image_size": list(train.info.image_hw),
        "image_size_choice": train.info.image_size_choice,
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


STARTUP_FROM_WORKER = (
    "startup_trainer_s",
    "startup_worker_s",
    "startup_load_rows_s",
    "torch_threads",
)


def _startup_parts(history: list[dict[str, float]], timings: dict[str, float]) -> dict[str, Any]:
    """The start-up parts of the last attempt (rank 0's, from its first epoch) and the driver's."""
    out: dict[str, Any] = {k: round(float(v), 3) for k, v in timings.items()}
    for metrics in reversed(history):
        if "startup_worker_s" in metrics:
            out |= {k: round(float(metrics[k]), 3) for k in STARTUP_FROM_WORKER if k in metrics}
            break
    if "torch_threads" in out:
        out["torch_threads"] = int(out["torch_threads"])
    fixed = [v for k, v in out.items() if k.startswith("startup_")]
    out["startup_parts_total_s"] = round(sum(fixed) + out.get("teardown_s", 0.0), 3)
    return out


def log_served_model(
    cfg: RunConfig, state: dict[str, Any], class_names: list[str], tracker: NoopTracker
) -> str | None:
    """The final network as an MLflow model (:mod:`jumpray.models.serving`): uint8 images in,
    probabilities out; returns its ``runs:/`` URI, or None when not tracked."""
    if tracker.run_id is None:
        return None
    from jumpray.models.serving import (
        WEIGHTS_FILE,
        build_probability_model,
        example_images,
        weights_record,
    )

    served = build_probability_model(
        state["model"],
        model_args=state["model_args"],
        data=state["data"],
        image_size=cfg.data.image_size,
        temperature=cfg.selection.temperature,
        class_names=class_names,
        config=cfg.model_dump(),
        epoch=int(state["epoch"]),
    )
    metadata = {
        "jumpray_model": "probabilities",
        "class_names": served.class_names,
        "num_classes": served.num_classes,
        "image_size": served.image_size,
        "channels": int(served.data["channels"]),
        "mean": list(served.data["mean"]),
        "std": list(served.data["std"]),
        "temperature": served.temperature,
        "epoch": served.epoch,
    }
    return tracker.log_pytorch_model(
        served,
        input_example=example_images(served),
        metadata=metadata,
        extra_files={WEIGHTS_FILE: weights_record(served)},
    )

"""The Ray Train per-worker function: the core loop over this worker's dataset shard (docs/architecture.md).

Each worker (one DDP rank) builds the method with ``prepare_model`` (DDP, gloo on CPU / NCCL on
GPU), resumes from ``ray.train.get_checkpoint()`` when there is one, and every epoch:

1. trains over ``get_dataset_shard("train")`` with :func:`~jumpray.train.loop.train_epoch`; a rank
   whose shard ran out joins the others' steps with dummy steps (ranks vote each step), so unequal
   splits (``streaming_split(equal=False)``: every sample seen once per epoch) never hang DDP;
2. all-reduces the epoch counts, all-gathers the (idx, flag) records so every rank commits the
   same flag generation (``method.end_epoch``), and all-reduces the per-idx visit counts (every
   idx exactly once per epoch: ``num_unique_seen``, ``num_seen_multiple``, ``num_unseen``);
3. evaluates its part of ``test`` and all-reduces the correct counts;
4. on rank 0: sends the weights to the run's snapshot store actor and writes a checkpoint;
   every rank calls ``ray.train.report`` with the same metrics (rank 0 with the checkpoint).

Per-epoch metrics besides :func:`~jumpray.train.loop.finalize_counts`'s: ``num_unique_seen``,
``num_seen_multiple``, ``num_unseen`` (ids trained on once / more than once / never, over all
ranks), ``flags_same_on_all_ranks`` (1.0 when the flag tables agree),
``history_same_on_all_ranks`` (1.0 when the per-sample training histories agree), ``num_dummy_steps``,
``attempt_start_epoch`` (the epoch this worker attempt started at: > 0 after a resume),
``test_accuracy`` (and ``test_semantic_accuracy``), ``val_accuracy`` (and
``val_semantic_accuracy``) when a ``val`` dataset is given, ``epoch``, ``epoch_time_s``.

Checkpoint ``state.pt`` keys (read by scoring): ``epoch``, ``method_name``, ``method`` (networks,
optimizers, schedulers, scaler, all flag generations), ``model`` (the evaluation network's weights),
``model_args`` (``build_model`` arguments), ``config``, ``rng``, ``given_label`` ((N,) int64, -1 for
ids never seen), ``snapshots`` (last R ``(epoch, weights)``), ``snapshot_epochs``, ``history``
(metrics of every epoch so far), ``data`` (normalisation and image shape).

Durability: Ray Train registers a reported checkpoint when its controller next polls the worker
(``RAY_TRAIN_HEALTH_CHECK_INTERVAL_S``, 2 s by default). A worker lost inside that window after a
report resumes from the checkpoint before it: one epoch is redone, the state stays consistent.

Rows in memory: when the launcher materialized every dataset (``WorkerSpec.in_memory``), a
worker reads its split once per attempt (:class:`~jumpray.train.rows.RowCache`, before the first
epoch) and serves every epoch from those tensors: the ``shuffle_buffer: 0`` read order, or else a
permutation drawn from (seed, epoch, rank) over its rows sorted by idx (a resumed epoch draws what
the interrupted one drew). Its split stays fixed for the attempt, so every idx is still trained on
once per epoch. Otherwise the split streams through Ray Data every epoch.

Threads: :func:`jumpray.ray_utils.torch_threads` (``train.num_threads: null``): with the rows in
memory nothing reads during training, so a worker takes the node's CPUs divided by the workers on
that node; while Ray Data streams, it keeps what its reserved CPUs give.

Start-up timing (metrics of an attempt's first epoch): ``startup_trainer_s`` (the driver's
``TorchTrainer.fit()`` call to this function: controller, placement group, worker processes,
process group, dataset split), ``startup_worker_s`` (this function to the model built and
resumed), ``startup_load_rows_s`` (the split read into memory), ``torch_threads``.

``run_worker`` also runs without Ray Train (``scaling.num_workers=0``): the launcher then passes a
local context object with the same small interface.

Each epoch is :func:`~jumpray.train.epoch.run_epoch`, the body the plain loop
(:func:`~jumpray.train.local.run_local`) runs too; the worker adds the coverage, flag-health and
label checks, the start-up timing, the snapshot and the checkpoint around it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from jumpray.checkpoint import (
    load_checkpoint,
    require_inside,
    restore_rng_state,
    rng_state,
    save_checkpoint,
)
from jumpray.config import RunConfig
from jumpray.data.augment import Augmenter, build_augmenter
from jumpray.errors import DataError, JumprayError, user_error
from jumpray.log import get_logger
from jumpray.train.distributed import (
    Coverage,
    all_gather_pairs,
    all_reduce_sum,
    digest,
    history_digest,
    same_on_all_ranks,
)
from jumpray.train.epoch import BatchHook, BatchSource, run_epoch
from jumpray.train.methods import Batch, Method, StepOutput, build_method
from jumpray.train.rows import DatasetBatches
from jumpray.train.spec import SPEC_KEY, FaultInjection, WorkerSpec

__all__ = [
    "train_fn_per_worker",
    "run_worker",
    "WorkerContext",
]

log = get_logger(__name__)


class WorkerContext(BatchSource, Protocol):
    """What :func:`run_worker` needs from its runtime (Ray Train, or the driver itself)."""

    rank: int
    world_size: int
    device: torch.device
    entered_at: float  # time.time() when the runtime handed over to jumpray

    def prepare_model(self, net: nn.Module) -> nn.Module: ...
    def preload(self) -> float: ...
    def checkpoint(self) -> Any: ...
    def report(self, metrics: dict[str, float], checkpoint_dir: str | None) -> None: ...


class RayTrainContext(DatasetBatches):
    """:class:`WorkerContext` inside a Ray Train worker.

    Args:
        cfg: the run config.
        in_memory: every dataset was materialized: keep this worker's split in a
            :class:`~jumpray.train.rows.RowCache` instead of streaming it every epoch.
        entered_at: ``time.time()`` when the train function started.
    """

    def __init__(self, cfg: RunConfig, *, in_memory: bool = False, entered_at: float = 0.0):
        import ray.train
        import ray.train.torch

        super().__init__(cfg, in_memory=in_memory)
        ctx = ray.train.get_context()
        self.rank = ctx.get_world_rank()
        self.world_size = ctx.get_world_size()
        self.local_world_size = ctx.get_local_world_size()
        self.device = ray.train.torch.get_device()
        self.entered_at = entered_at

    def prepare_model(self, net: nn.Module) -> nn.Module:
        import ray.train.torch

        # DDP only when world_size > 1; it also moves the net to this worker's device.
        return ray.train.torch.prepare_model(net)

    def source(self, name: str) -> Any:
        import ray.train

        try:
            return ray.train.get_dataset_shard(name)
        except KeyError:
            return None

    def checkpoint(self) -> Any:
        import ray.train

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is not None:
            # Ray Train names it from the run's records in storage; only the run's own is read.
            storage = ray.train.get_context().get_storage().experiment_fs_path
            require_inside(checkpoint.path, storage, what="the checkpoint to resume from")
        return checkpoint

    def report(self, metrics: dict[str, float], checkpoint_dir: str | None) -> None:
        import ray.train

        checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir) if checkpoint_dir else None
        ray.train.report(metrics, checkpoint=checkpoint)


def _quiet_ray_report_log() -> None:
    """Drop Ray Train's per-report INFO line (the whole metrics dict, once per epoch) to WARNING.

    Ray 2.60 logs it from ``ray/train/v2/_internal/execution/context.py`` under a logger named by
    that file's path; the driver prints its own progress line instead. A Ray without that module
    is left as it is.
    """
    import importlib
    import logging

    try:
        module = importlib.import_module("ray.train.v2._internal.execution.context")
    except ImportError:
        return
    logging.getLogger(module.__file__).setLevel(logging.WARNING)


def train_fn_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train's ``train_loop_per_worker``: see the module docstring.

    Args:
        loop_config: ``{SPEC_KEY: WorkerSpec}`` (Ray Train's ``train_loop_config`` is a dict).
    """
    from jumpray.ray_utils import node_cpus, torch_threads

    entered = time.time()
    _quiet_ray_report_log()
    spec: WorkerSpec = loop_config[SPEC_KEY]
    cfg = spec.config
    ctx = RayTrainContext(cfg, in_memory=spec.in_memory, entered_at=entered)
    threads = torch_threads(
        requested=cfg.train.num_threads,
        node_cpus=node_cpus(),
        processes_on_node=ctx.local_world_size,
        data_in_memory=spec.in_memory,
        deterministic=cfg.data.preserve_order,
        fallback=torch.get_num_threads(),
    )
    torch.set_num_threads(threads)
    try:
        run_worker(spec, ctx)
    except JumprayError as exc:
        # A data or config error fails the same way on every retry: tell the driver, which
        # aborts the run instead of letting Ray Train restart it max_failures times.
        if spec.progress_queue is not None:
            with contextlib.suppress(Exception):
                spec.progress_queue.put_nowait({"user_error": user_error(exc) or exc})
        raise


@dataclass
class _RunState:
    """What a worker carries across epochs besides the method."""

    labels: Tensor
    labels_complete: bool = False
    snapshots: deque = field(default_factory=deque)
    history: list[dict[str, float]] = field(default_factory=list)
    start_epoch: int = 0


def run_worker(spec: WorkerSpec, ctx: WorkerContext) -> None:
    """Train for ``train.epochs`` epochs, resuming from the context's checkpoint when present."""
    cfg = spec.config
    method = _build(spec, ctx)
    augmenter = build_augmenter(
        cfg.data, channels=spec.channels, image_hw=spec.image_hw, mean=spec.mean, std=spec.std
    )
    state = _RunState(labels=torch.full((spec.num_samples,), -1, dtype=torch.int64))
    state.snapshots = deque(maxlen=cfg.snapshots.keep)
    _resume(ctx, method, state, spec.snapshot_store)
    startup = _startup_metrics(spec, ctx)
    coverage = Coverage(spec.num_samples)
    distributed = ctx.world_size > 1
    # Stands in when this rank's split has no row at all (a tiny or single-block dataset).
    fallback = (
        _blank_batch(augmenter, ctx.device, channels=spec.channels, image_hw=spec.image_hw)
        if distributed
        else None
    )
    evaluate_on = [name for name, has in (("test", spec.has_test), ("val", spec.has_val)) if has]
    for epoch in range(state.start_epoch, cfg.train.epochs):
        seen: list[tuple[Tensor, Tensor]] = []
        metrics = run_epoch(
            method,
            ctx,
            cfg=cfg,
            epoch=epoch,
            augmenter=augmenter,
            device=ctx.device,
            rank=ctx.rank,
            distributed=distributed,
            evaluate_on=evaluate_on,
            on_batch=_batch_hook(spec.fault, ctx.rank, epoch, coverage, state, seen),
            dummy_template=fallback,
        )
        metrics |= coverage.summary()
        metrics |= _flag_health(method)
        metrics["attempt_start_epoch"] = float(state.start_epoch)
        _complete_labels(state, seen)
        metrics |= startup  # the attempt's first epoch only
        startup = {}
        state.history.append(metrics)
        _epoch_end(spec, ctx, method, state, epoch, metrics)


def _startup_metrics(spec: WorkerSpec, ctx: WorkerContext) -> dict[str, float]:
    """This attempt's start-up parts (module docstring); loads the rows when they are kept."""
    ready = time.time()
    load_s = ctx.preload()
    out = {
        "startup_worker_s": max(ready - ctx.entered_at, 0.0),
        "startup_load_rows_s": load_s,
        "torch_threads": float(torch.get_num_threads()),
    }
    if spec.submitted_at:
        out["startup_trainer_s"] = max(ctx.entered_at - float(spec.submitted_at), 0.0)
    return out


def _flag_health(method: Method) -> dict[str, float]:
    """Jump-teaching: 1.0 when every rank holds the same flag generations and visit counts."""
    flags = getattr(method, "flags", None)
    if flags is None:
        return {}
    state = flags.state_dict()
    out = {
        "flags_same_on_all_ranks": float(same_on_all_ranks(digest(state["slots"], state["visits"])))
    }
    history = getattr(method, "history", None)
    if history is not None:
        out["history_same_on_all_ranks"] = float(same_on_all_ranks(history_digest(history)))
    return out


def _build(spec: WorkerSpec, ctx: WorkerContext) -> Method:
    method = build_method(
        spec.config,
        num_classes=spec.num_classes,
        num_samples=spec.num_samples,
        in_channels=spec.channels,
        device=ctx.device,
        noise_rate=spec.noise_rate,
        wrap=ctx.prepare_model,
    )
    if ctx.world_size > 1:
        # A step is skipped only when no rank selected anything (every rank joins the all-reduce).
        method.global_count = all_reduce_sum
    return method


def _blank_batch(
    augmenter: Augmenter, device: torch.device, *, channels: int, image_hw: Sequence[int]
) -> Batch:
    """Two black images with label 0: the dummy-step template of a rank that got no rows."""
    h, w = image_hw
    blank = torch.zeros(2, int(channels), int(h), int(w), dtype=torch.uint8)
    # Its own generator: the rank's view stream is not advanced.
    weak, strong = augmenter.train(blank, torch.Generator().manual_seed(0))
    zeros = torch.zeros(2, dtype=torch.int64)
    return Batch(
        image=weak.to(device),
        given_label=zeros.to(device),
        idx=zeros,
        image_strong=strong.to(device),
        dummy=True,
    )


def _batch_hook(
    fault: FaultInjection | None,
    rank: int,
    epoch: int,
    coverage: Coverage,
    state: _RunState,
    seen: list[tuple[Tensor, Tensor]],
) -> BatchHook:
    count = [0]

    def on_batch(batch: Batch, out: StepOutput) -> None:
        idx, given = batch.idx.cpu(), batch.given_label.cpu()
        coverage.add(idx)
        if state.labels_complete:
            _check_labels(state.labels, idx, given)
        else:
            seen.append((idx, given))
        count[0] += 1
        if fault and rank == fault.rank and epoch == fault.epoch and count[0] == fault.batch:
            _maybe_kill(fault)

    return on_batch


def _maybe_kill(fault: FaultInjection) -> None:
    """Test-only: SIGKILL this worker process once (a marker file stops it firing again)."""
    marker = Path(fault.marker)
    if marker.exists():
        return
    try:
        import ray.train

        # Ray Train registers a reported checkpoint when its controller next polls the worker
        # (every ~2 s); wait for that, so the test kills after a known, registered checkpoint.
        ray.train.get_all_reported_checkpoints(timeout_s=30)
    except Exception as exc:  # not inside Ray Train (num_workers=0)
        log.debug("no reported-checkpoint barrier: %s", exc)
    marker.write_text(f"killed pid {os.getpid()}\n")
    log.warning("fault injection: killing worker pid %d", os.getpid())
    os.kill(os.getpid(), signal.SIGKILL)


def _check_labels(labels: Tensor, idx: Tensor, given: Tensor) -> None:
    known = labels[idx]
    bad = (known >= 0) & (known != given)
    if bool(bad.any()):
        i = int(idx[bad][0])
        raise DataError(
            f"sample idx {i} has given label {int(given[bad][0])} but {int(known[bad][0])} in the "
            "checkpoint being resumed",
            fix="resume with the same shards, or start a new run",
        )


def _complete_labels(state: _RunState, seen: list[tuple[Tensor, Tensor]]) -> None:
    """After the first epoch of a (re)start, every rank holds every sample's given label."""
    if state.labels_complete:
        return
    idx = torch.cat([i for i, _ in seen]) if seen else torch.empty(0, dtype=torch.int64)
    given = torch.cat([g for _, g in seen]) if seen else torch.empty(0, dtype=torch.int64)
    idx, given = all_gather_pairs(idx, given)
    _check_labels(state.labels, idx, given)
    state.labels[idx] = given
    state.labels_complete = True


def _weights(method: Method) -> dict[str, Tensor]:
    model = getattr(method.eval_model(), "module", method.eval_model())
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


def _epoch_end(
    spec: WorkerSpec,
    ctx: WorkerContext,
    method: Method,
    state: _RunState,
    epoch: int,
    metrics: dict[str, float],
) -> None:
    if ctx.rank != 0:
        ctx.report(metrics, None)
        return
    weights = _weights(method)
    state.snapshots.append((epoch, weights))
    if spec.snapshot_store is not None:
        import ray

        ray.get(spec.snapshot_store.put.remote(epoch, weights))
    with tempfile.TemporaryDirectory(prefix="jumpray-ckpt-") as tmp:
        save_checkpoint(
            tmp,
            _checkpoint_state(spec, method, state, epoch, weights),
            meta={
                "method": spec.config.method.name,
                "num_classes": spec.num_classes,
                "num_samples": spec.num_samples,
                "snapshot_epochs": [e for e, _ in state.snapshots],
            },
        )
        ctx.report(metrics, tmp)


def _checkpoint_state(
    spec: WorkerSpec, method: Method, state: _RunState, epoch: int, weights: dict[str, Tensor]
) -> dict[str, Any]:
    cfg = spec.config
    return {
        "epoch": epoch,
        "method_name": cfg.method.name,
        "method": method.state_dict(),
        "model": weights,
        "model_args": {
            "backbone": cfg.model.backbone,
            "num_classes": spec.num_classes,
            "num_bits": cfg.model.semantic_dim if cfg.method.name == "jumpteaching" else 0,
            "in_channels": spec.channels,
            "semantic_hidden": cfg.model.semantic_hidden,
            "dropout": cfg.model.dropout,
        },
        "config": cfg.model_dump(),
        "rng": rng_state(),
        "given_label": state.labels.clone(),
        "snapshots": list(state.snapshots),
        "snapshot_epochs": [e for e, _ in state.snapshots],
        "history": list(state.history),
        "data": {
            "num_samples": spec.num_samples,
            # The folder trained on: score.source=auto reads the history for these shards only.
            "shards": spec.shards,
            "channels": spec.channels,
            "image_hw": list(spec.image_hw),
            "mean": list(spec.mean),
            "std": list(spec.std),
        },
    }


def _resume(ctx: WorkerContext, method: Method, state: _RunState, store: Any) -> None:
    checkpoint = ctx.checkpoint()
    if checkpoint is None:
        return
    with checkpoint.as_directory() as folder:
        saved = load_checkpoint(folder)
    method.load_state_dict(saved["method"])
    restore_rng_state(saved["rng"])
    state.labels = saved["given_label"].clone()
    state.labels_complete = bool((state.labels >= 0).any())
    state.snapshots.extend(saved["snapshots"])
    state.history = list(saved["history"])
    state.start_epoch = int(saved["epoch"]) + 1
    if ctx.rank == 0 and store is not None:
        import ray

        # Idempotent: the store keeps one entry per epoch. A new driver's store is refilled here.
        for epoch, weights in saved["snapshots"]:
            ray.get(store.put.remote(int(epoch), weights))
    log.info("rank %d resumed after epoch %d", ctx.rank, saved["epoch"])

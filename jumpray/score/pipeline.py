"""Ray Data scoring: an actor pool of :class:`~jumpray.score.scorer.Scorer` over a shard folder.

The adapter between the pure scorer and Ray (its Ray notes are in docs/architecture.md):

- the weights of the R prior snapshots travel by object-store reference: from the training run's
  snapshot store actor (``TrainResult.snapshots``; the actor owns them) or ``ray.put`` from a
  checkpoint (:func:`snapshots_from_checkpoint`). :class:`ScoreActor` ``ray.get``s them once, in
  its constructor (Ray does not dereference refs passed in ``fn_constructor_kwargs``:
  docs/architecture.md, 'Ray notes: object refs in actor constructors');
- ``map_batches(ScoreActor, compute=ActorPoolStrategy(size=score.num_actors),
  num_cpus=score.cpus_per_actor, num_gpus=score.gpus_per_actor, batch_size=score.batch_size)``;
  the actors return the label columns only (the image is dropped inside the actor);
- the driver iterates the result block by block, appending each to a raw table beside
  ``labels.parquet`` while the decision (``score.decision``, :mod:`jumpray.score.rules`) observes
  its first pass; once the dataset is consumed, rows + quarantined = rows in is checked
  (:meth:`~jumpray.data.ShardSource.check_counts`);
- :func:`jumpray.score.table.decide_table` runs the decision's other passes over the raw table and
  writes the final ``labels.parquet`` (temporary name, renamed when complete), feeding the
  streaming :class:`~jumpray.score.summary.LabelStats`: memory stays flat in the dataset size
  (no collecting, no sort; the decision keeps O(C^2) numbers and its issues). Rows are in the
  order blocks finish, not idx order.

On a 2-core machine the actors must leave one CPU to Ray Data's read tasks, else the read never
runs and the job hangs (docs/architecture.md, 'Ray notes: CPU starvation'):
:func:`check_resources` refuses such settings with the fix.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import ray
import ray.data

from jumpray.checkpoint import load_checkpoint
from jumpray.config import RunConfig, ScoreConfig
from jumpray.core import SampleHistory
from jumpray.data.shards import ShardSource
from jumpray.data.writer import ProgressLog
from jumpray.errors import ConfigError, DataError
from jumpray.log import get_logger
from jumpray.score.decide import Decision
from jumpray.score.rules import build_rule
from jumpray.score.scorer import Scorer, ScorerSpec
from jumpray.score.sources import (
    HISTORY_FORMULAS,
    blend_scores,
    history_columns,
    resolve_source,
    training_scores,
)
from jumpray.score.summary import LabelStats
from jumpray.score.table import decide_table, labels_schema, to_table

__all__ = [
    "ScoreActor",
    "SnapshotSet",
    "ScoreRun",
    "build_spec",
    "build_rule",
    "snapshots_from_checkpoint",
    "snapshots_from_refs",
    "snapshots_from_served",
    "load_sample_history",
    "check_resources",
    "score_shards",
    "evaluate_accuracy",
]

log = get_logger(__name__)


class ScoreActor:
    """The Ray Data actor: fetches the snapshot weights once, then scores batches.

    Args:
        weight_refs: R object refs (or already fetched state dicts), oldest first.
        spec: the :class:`ScorerSpec`.
        device: ``auto``, ``cpu`` or ``cuda``.
        num_threads: torch threads inside the actor.
    """

    def __init__(
        self,
        weight_refs: Sequence[Any],
        spec: ScorerSpec,
        *,
        device: str = "auto",
        num_threads: int | None = None,
    ):
        weights = [ray.get(r) if isinstance(r, ray.ObjectRef) else r for r in weight_refs]
        self.scorer = Scorer(weights, spec, device=device, num_threads=num_threads)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.scorer(batch)


@dataclass
class SnapshotSet:
    """The prior snapshots that score, and what is needed to rebuild their network.

    Attributes:
        epochs: the snapshots' epochs, oldest first.
        refs: their weights in the object store, same order.
        model_args: :func:`jumpray.models.build_model` arguments.
        data: the training data's ``channels``, ``image_hw``, ``mean``, ``std``.
        config: the training run's resolved config (a dict).
        history: per-epoch training metrics.
        checkpoint: the checkpoint folder they were read from.
        has_sample_history: the checkpoint holds a per-sample training history.
    """

    epochs: list[int]
    refs: list[Any]
    model_args: dict[str, Any]
    data: dict[str, Any]
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)
    checkpoint: str | None = None
    has_sample_history: bool = False


def _has_sample_history(state: dict[str, Any]) -> bool:
    return (state.get("method") or {}).get("history") is not None


def snapshots_from_checkpoint(folder: str | Path, num_snapshots: int) -> SnapshotSet:
    """The last ``num_snapshots`` snapshots saved in a checkpoint, put in the object store.

    Raises:
        DataError: not a checkpoint, or it holds no snapshot.
    """
    state = load_checkpoint(folder)
    saved = list(state.get("snapshots") or [])
    if not saved:
        # An older or method-less checkpoint: its final model is the one snapshot there is.
        saved = [(int(state["epoch"]), state["model"])]
    chosen = saved[-num_snapshots:]
    if len(chosen) < num_snapshots:
        log.warning(
            "%s holds %d snapshot(s) (epochs %s); scoring with those instead of %d",
            folder,
            len(chosen),
            [e for e, _ in chosen],
            num_snapshots,
        )
    return SnapshotSet(
        epochs=[int(e) for e, _ in chosen],
        refs=[ray.put(w) for _, w in chosen],
        model_args=dict(state["model_args"]),
        data=dict(state["data"]),
        config=dict(state.get("config") or {}),
        history=list(state.get("history") or []),
        checkpoint=str(folder),
        has_sample_history=_has_sample_history(state),
    )


def snapshots_from_refs(
    snapshots: Sequence[tuple[int, Any]], checkpoint: str | Path, num_snapshots: int
) -> SnapshotSet:
    """The last ``num_snapshots`` of ``[(epoch, ref)]`` (a live snapshot store's), with the
    network description read from the run's checkpoint (its weights are not re-sent).
    """
    state = load_checkpoint(checkpoint)
    chosen = list(snapshots)[-num_snapshots:]
    if not chosen:
        raise DataError("the training run left no snapshot to score with")
    return SnapshotSet(
        epochs=[int(e) for e, _ in chosen],
        refs=[r for _, r in chosen],
        model_args=dict(state["model_args"]),
        data=dict(state["data"]),
        config=dict(state.get("config") or {}),
        history=list(state.get("history") or []),
        checkpoint=str(checkpoint),
        has_sample_history=_has_sample_history(state),
    )


def snapshots_from_served(model: Any, *, source: str | None = None) -> SnapshotSet:
    """One snapshot: the network of a logged MLflow model (:mod:`jumpray.models.serving`), put
    in the object store.

    Args:
        model: a :class:`~jumpray.models.serving.ProbabilityModel` (from
            :func:`jumpray.models.serving.load_probability_model`).
        source: the model URI, for the summary.

    Raises:
        DataError: ``model`` is not a jumpray probability model.
    """
    for name in ("net", "model_args", "data", "config"):
        if not hasattr(model, name):
            raise DataError(
                f"{source or 'the model'} is not a jumpray model (no {name!r}); log it with "
                "jumpray train or jumpray clean"
            )
    weights = {k: v.detach().cpu() for k, v in model.net.state_dict().items()}
    return SnapshotSet(
        epochs=[int(getattr(model, "epoch", -1))],
        refs=[ray.put(weights)],
        model_args=dict(model.model_args),
        data=dict(model.data),
        config=dict(model.config),
        checkpoint=None,
    )


def load_sample_history(snaps: SnapshotSet) -> SampleHistory:
    """The per-sample training history saved in the snapshots' checkpoint.

    Raises:
        ConfigError: the checkpoint has none (not Jump-teaching, or written before it existed).
    """
    state = load_checkpoint(snaps.checkpoint) if snaps.checkpoint else {}
    saved = (state.get("method") or {}).get("history")
    if saved is None:
        raise ConfigError(
            "score.source: the checkpoint holds no per-sample training history (only Jump-teaching "
            "runs of this version record one); use score.source=snapshots"
        )
    n, k = (int(d) for d in saved["top_labels"].shape)
    history = SampleHistory(n, int(saved["num_classes"]), top_k=k)
    history.load_state_dict(saved)
    return history


def build_spec(cfg: RunConfig, snaps: SnapshotSet) -> ScorerSpec:
    """The scorer's plain-data description from the run config and the snapshots' network."""
    data = snaps.data
    h, w = data["image_hw"]
    sel = cfg.selection
    decision = Decision(cfg.score.formula, cfg.score.combine, cfg.score.threshold)
    decision.check(has_semantic=int(snaps.model_args.get("num_bits", 0)) > 0)
    return ScorerSpec(
        model_args=snaps.model_args,
        image_size=int(cfg.data.image_size or min(int(h), int(w))),
        channels=int(data["channels"]),
        mean=tuple(float(m) for m in data["mean"]),
        std=tuple(float(s) for s in data["std"]),
        temperature=sel.temperature,
        rule=sel.rule,
        tau=sel.tau,
        max_mean_bit_loss=sel.max_mean_bit_loss,
        code_clamp=sel.code_clamp,
        decision=decision,
        top_k=cfg.score.top_k,
    )


def check_resources(score: ScoreConfig) -> None:
    """Refuse an actor pool that would leave Ray Data's read tasks no CPU (a certain hang).

    Raises:
        ConfigError: with the settings that fit.
    """
    total = float(ray.cluster_resources().get("CPU", 0.0))
    need = score.num_actors * score.cpus_per_actor
    if total and total - need < 1.0:
        raise ConfigError(
            f"score.num_actors={score.num_actors} x score.cpus_per_actor={score.cpus_per_actor} "
            f"= {need:g} of the cluster's {total:g} CPUs leaves less than 1 CPU for reading, and "
            "Ray Data would wait forever; lower score.num_actors or score.cpus_per_actor "
            f"(for example score.num_actors={max(1, int((total - 1) / score.cpus_per_actor))})"
        )
    if score.gpus_per_actor > 0:
        gpus = float(ray.cluster_resources().get("GPU", 0.0))
        if gpus < score.gpus_per_actor:
            raise ConfigError(
                f"score.gpus_per_actor={score.gpus_per_actor} but the cluster has {gpus:g} GPUs; "
                "set score.gpus_per_actor=0 to score on CPU"
            )


def _scored_dataset(source: ShardSource, snaps: SnapshotSet, spec: ScorerSpec, score: ScoreConfig):
    from ray.data.dataset import MaterializedDataset

    from jumpray.ray_utils import node_cpus, torch_threads

    check_resources(score)
    use_gpu = score.gpus_per_actor > 0
    kwargs: dict[str, Any] = {}
    if use_gpu:
        kwargs["num_gpus"] = score.gpus_per_actor
    # Rows already in the object store need no read task: the actors may use the node's cores.
    threads = torch_threads(
        requested=None,
        node_cpus=node_cpus(),
        processes_on_node=score.num_actors,
        data_in_memory=isinstance(source.dataset, MaterializedDataset),
        fallback=max(1, int(score.cpus_per_actor)),
    )
    return source.dataset.map_batches(
        ScoreActor,
        fn_constructor_kwargs={
            "weight_refs": list(snaps.refs),
            "spec": spec,
            "device": "cuda" if use_gpu else "cpu",
            "num_threads": threads,
        },
        compute=ray.data.ActorPoolStrategy(size=score.num_actors),
        num_cpus=score.cpus_per_actor,
        batch_size=score.batch_size,
        batch_format="numpy",
        **kwargs,
    )


@dataclass
class ScoreRun:
    """What :func:`score_shards` did.

    Attributes:
        labels_path: the labels.parquet written.
        num_rows: rows scored (= rows in labels.parquet).
        num_quarantined: rows the reader could not use.
        wall_s: seconds from the first block requested to the file renamed.
        samples_per_s: num_rows / wall_s.
        first_block_s: seconds until the first scored block arrived (actor start-up, weight
            fetch, first read): the fixed cost inside ``wall_s``.
        decide_s: seconds of the decision passes and the final write (inside ``wall_s``).
        decision: the rule's name, parameters and estimates (for summary.json).
    """

    labels_path: Path
    num_rows: int
    num_quarantined: int
    wall_s: float
    samples_per_s: float
    first_block_s: float = 0.0
    decide_s: float = 0.0
    decision: dict[str, Any] = field(default_factory=dict)


def _blocks(ds) -> Iterator[dict[str, np.ndarray]]:
    yield from ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=2)


def _rows(source: ShardSource, snaps: SnapshotSet, cfg: RunConfig, k: int):
    """The scored row blocks for ``score.source`` (:mod:`jumpray.score.sources`)."""
    score = cfg.score
    if (
        score.source == "training"
        and score.decision == "threshold"
        and score.formula not in HISTORY_FORMULAS
    ):
        raise ConfigError(
            f"score.formula={score.formula} needs a scoring pass; with score.source=training "
            f"use one of {', '.join(HISTORY_FORMULAS)}"
        )
    if score.source == "training":
        history = load_sample_history(snaps)
        for batch in _blocks(source.dataset.drop_columns(["image"])):
            hist = history_columns(history, batch["idx"], k=k)
            yield dict(batch) | training_scores(batch, hist, formula=score.formula)
        return
    history = load_sample_history(snaps) if score.source == "both" else None
    for batch in _blocks(_scored_dataset(source, snaps, build_spec(cfg, snaps), score)):
        if history is None:
            yield dict(batch) | {"train_clean_rate": np.full(len(batch["idx"]), np.nan)}
        else:
            hist = history_columns(history, batch["idx"], k=k)
            yield blend_scores(batch, hist, formula=score.formula)


def score_shards(
    source: ShardSource,
    snaps: SnapshotSet,
    cfg: RunConfig,
    *,
    labels_path: str | Path,
    stats: LabelStats | None = None,
) -> ScoreRun:
    """Score every usable sample of ``source`` and stream the rows to ``labels_path``.

    Args:
        source: the shard folder (``jumpray.data.read_shards``).
        snaps: the snapshots that score.
        cfg: the run config (``score.*``, ``selection.*``, ``data.image_size``).
        labels_path: the Parquet file to write (atomically: temporary name, then rename).
        stats: a :class:`LabelStats` fed every block (for summary.json and the report).

    Returns:
        A :class:`ScoreRun`.

    Raises:
        ConfigError: resources or decision settings that cannot work.
        DataError: a bad sample under ``data.on_error=raise``, or a broken count invariant.
    """
    num_classes = int(snaps.model_args["num_classes"])
    chosen = resolve_source(
        cfg.score.source,
        has_history=snaps.has_sample_history,
        trained_on=snaps.data.get("shards"),
        scored=source.info.folder,
    )
    cfg = cfg.model_copy(update={"score": cfg.score.model_copy(update={"source": chosen})})
    rule = build_rule(cfg.score, num_classes)
    path = Path(labels_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = path.with_name(f".{path.stem}.raw-{os.getpid()}.parquet")
    has_clean = source.info.has_clean_labels
    k = min(cfg.score.top_k, num_classes)
    raw_schema = labels_schema(has_clean_labels=has_clean, top_k=k, decided=False)
    rows, first = 0, None
    progress = ProgressLog("samples scored", source.info.rows_in)
    start = time.perf_counter()
    log.info(
        "scoring %s (source %s, snapshots of epochs %s): %d actor(s) x %g CPU%s, batch %d, "
        "decision %s",
        source.info.folder,
        cfg.score.source,
        snaps.epochs,
        cfg.score.num_actors,
        cfg.score.cpus_per_actor,
        f" + {cfg.score.gpus_per_actor:g} GPU" if cfg.score.gpus_per_actor else "",
        cfg.score.batch_size,
        rule.name,
    )
    try:
        with pq.ParquetWriter(raw, raw_schema) as writer:
            for batch in _rows(source, snaps, cfg, k):
                n = len(batch["idx"])
                if not n:
                    continue
                if first is None:
                    first = time.perf_counter() - start
                writer.write_table(to_table(batch, raw_schema))
                rule.observe(0, batch)
                rows += n
                progress.update(n)
        num_quarantined = source.check_counts(rows)
        rule.end_pass(0)
        t_decide = time.perf_counter()
        decide_table(
            raw,
            path,
            rule,
            schema=labels_schema(has_clean_labels=has_clean, top_k=k),
            stats=stats,
        )
        decide_s = time.perf_counter() - t_decide
    finally:
        raw.unlink(missing_ok=True)
    wall = time.perf_counter() - start
    log.info(
        "scored %d samples in %.1f s (%.0f/s; decision %s %.1f s) -> %s",
        rows,
        wall,
        rows / max(wall, 1e-9),
        rule.name,
        decide_s,
        path,
    )
    decision = {"name": rule.name, "source": cfg.score.source, **rule.params(), **rule.result()}
    return ScoreRun(
        path, rows, num_quarantined, wall, rows / max(wall, 1e-9), first or 0.0, decide_s, decision
    )


def evaluate_accuracy(source: ShardSource, snaps: SnapshotSet, cfg: RunConfig) -> float:
    """Accuracy of the newest snapshot's classifier on (clean) test shards, by the actor pool.

    Test shards' ``given_label`` is taken as the truth (docs/contract.md: test shards are clean).
    """
    last = SnapshotSet(
        epochs=snaps.epochs[-1:],
        refs=snaps.refs[-1:],
        model_args=snaps.model_args,
        data=snaps.data,
    )
    # The decision does not matter here; "prob" needs no semantic head.
    spec = build_spec(
        cfg.model_copy(update={"score": cfg.score.model_copy(update={"formula": "prob"})}), last
    )
    correct = total = 0
    for batch in _blocks(_scored_dataset(source, last, spec, cfg.score)):
        correct += int((batch["predicted_label"] == batch["given_label"]).sum())
        total += len(batch["given_label"])
    return correct / total if total else 0.0

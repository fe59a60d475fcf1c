"""One training epoch, the same in the plain loop and in the Ray Train worker. No Ray here.

:func:`run_epoch` begins the epoch (the method reseeds its own draws), trains over the ``train``
batches with this epoch's augmentation draws, all-reduces and finalizes the counts, ends the epoch
(the flag commit, all-gathered under data parallelism) and evaluates on the named held-out
datasets. Its data comes from a :class:`BatchSource`: the plain loop's rows in memory
(:class:`~jumpray.train.local.ArrayBatches`) or a worker's split of the Ray Datasets
(:class:`~jumpray.train.worker.WorkerContext`). Seeds: :mod:`jumpray.train.seeds`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

import torch

from jumpray.config import RunConfig
from jumpray.data.augment import Augmenter
from jumpray.train.distributed import all_gather_pairs, all_reduce_counts, any_rank
from jumpray.train.loop import evaluate, finalize_counts, train_epoch
from jumpray.train.methods import Batch, Method, StepOutput
from jumpray.train.seeds import VIEW_STREAM, epoch_generator, shuffle_seed

__all__ = ["run_epoch", "eval_metrics", "BatchSource", "BatchHook"]

BatchHook = Callable[[Batch, StepOutput], None]


class BatchSource(Protocol):
    """Batches of a named dataset (``train``, ``test``, ``val``) for one pass."""

    def batches(self, name: str, *, batch_size: int, seed: int | None) -> Iterable[Any] | None:
        """One pass over ``name`` (None when there is no such dataset).

        ``seed`` is the epoch's shuffle seed (:func:`~jumpray.train.seeds.shuffle_seed`); None
        asks for the stored order (evaluation).
        """
        ...


def run_epoch(
    method: Method,
    data: BatchSource,
    *,
    cfg: RunConfig,
    epoch: int,
    augmenter: Augmenter,
    device: torch.device,
    rank: int = 0,
    distributed: bool = False,
    evaluate_on: Sequence[str] = (),
    on_batch: BatchHook | None = None,
    dummy_template: Batch | None = None,
) -> dict[str, float]:
    """Train ``method`` for epoch ``epoch`` and evaluate it (see the module docstring).

    Args:
        method: a method from :func:`~jumpray.train.methods.build_method`.
        data: where the ``train`` batches and the evaluation batches come from.
        cfg: the run config (``seed``, ``train.batch_size``, ``train.eval_batch_size``).
        epoch: 0-based.
        augmenter: makes the training views (this epoch's draws) and the test view.
        device: where the batches go.
        rank: this process's rank (0 in the plain loop): its own seed streams.
        distributed: ranks train together: step in lockstep (dummy steps when a split runs out)
            and all-gather the flag records.
        evaluate_on: the datasets to evaluate on after training (``test``, ``val``).
        on_batch: called with each real batch and its step's output, after the update.
        dummy_template: the batch a rank with no batch at all steps with (``distributed``).

    Returns:
        :func:`~jumpray.train.loop.finalize_counts`'s metrics over all ranks, the method's
        ``end_epoch`` metrics, ``num_dummy_steps``, ``{name}_accuracy`` and
        ``{name}_num_samples`` (and ``{name}_semantic_accuracy``) per evaluated dataset,
        ``epoch`` and ``epoch_time_s``.
    """
    start = time.perf_counter()
    method.begin_epoch(epoch, rank=rank)
    view_gen = epoch_generator(cfg.seed, epoch=epoch, rank=rank, stream=VIEW_STREAM)
    batches = data.batches(
        "train",
        batch_size=cfg.train.batch_size,
        seed=shuffle_seed(cfg.seed, epoch=epoch, rank=rank),
    )
    counts = train_epoch(
        method,
        batches if batches is not None else [],
        epoch=epoch,
        device=device,
        views=lambda x: augmenter.train(x, view_gen),
        sync=any_rank if distributed else None,
        on_batch=on_batch,
        dummy_template=dummy_template if distributed else None,
    )
    metrics = finalize_counts(all_reduce_counts(counts, maximum=("train_time_s",)))
    metrics |= method.end_epoch(epoch, gather=all_gather_pairs if distributed else None)
    metrics["num_dummy_steps"] = all_reduce_counts({"n": counts["num_dummy_steps"]})["n"]
    for name in evaluate_on:
        metrics |= eval_metrics(method, data, name, cfg=cfg, augmenter=augmenter, device=device)
    metrics["epoch"] = float(epoch)
    metrics["epoch_time_s"] = time.perf_counter() - start
    return metrics


def eval_metrics(
    method: Method,
    data: BatchSource,
    name: str,
    *,
    cfg: RunConfig,
    augmenter: Augmenter,
    device: torch.device,
) -> dict[str, float]:
    """Accuracy on the ``name`` dataset's given labels, over all ranks.

    ``test`` holds clean labels; ``val`` is a noisy held-out split (sweeps without clean labels).
    """
    batches = data.batches(name, batch_size=cfg.train.eval_batch_size, seed=None)
    # The unwrapped network: evaluation runs no collective, so unequal test splits are fine.
    model = getattr(method.eval_model(), "module", method.eval_model())
    ev = evaluate(
        model,
        batches if batches is not None else [],
        device=device,
        test_view=augmenter.test,
        codebook=getattr(method, "codebook", None),
    )
    keys = ["num_correct", "num_samples"]
    if "semantic_accuracy" in ev:
        ev["num_correct_semantic"] = ev["semantic_accuracy"] * ev["num_samples"]
        keys.append("num_correct_semantic")
    total = all_reduce_counts({k: ev[k] for k in keys})
    n = max(total["num_samples"], 1.0)
    out = {
        f"{name}_accuracy": total["num_correct"] / n,
        f"{name}_num_samples": total["num_samples"],
    }
    if "num_correct_semantic" in total:
        out[f"{name}_semantic_accuracy"] = round(total["num_correct_semantic"]) / n
    return out

"""Single-process training on in-memory arrays: the method without Ray.

Used by ``jumpray local``, by the benchmark (every method on the same tensors, in its own
process) and by the real-data tests. Each epoch is :func:`~jumpray.train.epoch.run_epoch`, the
body the Ray Train worker runs over its split of the Ray Datasets: the same seeds (rank 0), views,
normalisation and metrics. Only the shuffled sample order is the plain loop's own
(:func:`~jumpray.train.seeds.plain_order_generator`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from jumpray.config import RunConfig
from jumpray.data.augment import build_augmenter
from jumpray.log import get_logger
from jumpray.train.epoch import BatchHook, run_epoch
from jumpray.train.lines import format_epoch_line
from jumpray.train.methods import Method, build_method
from jumpray.train.seeds import plain_order_generator

__all__ = [
    "ArraySet",
    "ArrayBatches",
    "LocalResult",
    "run_local",
    "iter_batches",
    "summarize_history",
]

log = get_logger(__name__)


@dataclass
class ArraySet:
    """Samples held in memory.

    Attributes:
        image: (N, C, H, W) uint8.
        given_label: (N,) int64.
        idx: (N,) int64 global ids (0..N-1 for a fresh dataset).
        clean_label: (N,) int64, -1 where unknown; None when no clean labels exist.
    """

    image: Tensor
    given_label: Tensor
    idx: Tensor
    clean_label: Tensor | None = None

    def __len__(self) -> int:
        return int(self.given_label.numel())

    def select(self, rows: Tensor) -> ArraySet:
        """The samples at positions ``rows`` ((M,) int64), in that order."""
        clean = self.clean_label[rows] if self.clean_label is not None else None
        return ArraySet(self.image[rows], self.given_label[rows], self.idx[rows], clean)

    def sorted_by_idx(self) -> ArraySet:
        """The samples ordered by ``idx``: a permutation drawn over them then depends on the seed
        alone, not on the order the rows arrived in."""
        return self.select(torch.argsort(self.idx))


@dataclass
class LocalResult:
    """What a local run produced: per-epoch metrics, the trained method, and timing."""

    history: list[dict[str, float]]
    method: Method
    wall_s: float
    final: dict[str, float] = field(default_factory=dict)


def iter_batches(
    data: ArraySet, *, batch_size: int, generator: torch.Generator | None = None
) -> Iterator[tuple]:
    """Yield ``(image, given_label, idx, clean_label)`` batches, shuffled when a generator is given."""
    n = len(data)
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for start in range(0, n, batch_size):
        part = data.select(order[start : start + batch_size])
        yield (part.image, part.given_label, part.idx, part.clean_label)


class ArrayBatches:
    """A :class:`~jumpray.train.epoch.BatchSource` over named in-memory datasets.

    Args:
        rows: ``name -> samples`` (None = no such dataset).
        order: shuffled passes (a ``seed`` is given) draw their order from this generator;
            None = the stored row order.
    """

    def __init__(self, rows: Mapping[str, ArraySet | None], *, order: torch.Generator | None):
        self.rows, self.order = rows, order

    def batches(self, name: str, *, batch_size: int, seed: int | None) -> Iterator[tuple] | None:
        rows = self.rows.get(name)
        if rows is None:
            return None
        generator = self.order if seed is not None else None
        return iter_batches(rows, batch_size=batch_size, generator=generator)


def run_local(
    cfg: RunConfig,
    train: ArraySet,
    test: ArraySet | None = None,
    *,
    num_classes: int,
    noise_rate: float | None = None,
    device: torch.device | str = "cpu",
    on_epoch: Callable[[int, dict[str, float], Method], None] | None = None,
    on_batch: BatchHook | None = None,
    mean: list[float] | None = None,
    std: list[float] | None = None,
    shuffle: bool = True,
) -> LocalResult:
    """Train ``cfg.method.name`` on in-memory data for ``cfg.train.epochs`` epochs.

    Args:
        cfg: the run configuration.
        train: training samples (uint8 images).
        test: clean test samples for test accuracy each epoch, or None.
        num_classes: C.
        noise_rate: the data's noise rate, if known (Co-teaching / JoCoR forget rate).
        device: "cpu" or "cuda".
        on_epoch: called after every epoch with (epoch, metrics, method).
        on_batch: called after every step with (batch, the step's output).
        mean, std: normalisation; defaults to ``cfg.data.mean/std`` or 0.5.
        shuffle: a new sample order every epoch (from
            :func:`~jumpray.train.seeds.plain_order_generator`); False = ``train``'s row order (the order a single Ray Train worker sees with
            ``data.shuffle_buffer: 0`` and ``preserve_order``, for equality tests).

    Returns:
        A :class:`LocalResult`; ``history[e]`` holds epoch e's metrics.
    """
    device = torch.device(device)
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    channels = int(train.image.shape[1])
    augmenter = build_augmenter(
        cfg.data, channels=channels, image_hw=tuple(train.image.shape[-2:]), mean=mean, std=std
    )
    method = build_method(
        cfg,
        num_classes=num_classes,
        num_samples=int(train.idx.max()) + 1,
        in_channels=channels,
        device=device,
        noise_rate=noise_rate,
    )
    order = plain_order_generator(cfg.seed) if shuffle else None
    data = ArrayBatches({"train": train, "test": test}, order=order)
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    for epoch in range(cfg.train.epochs):
        metrics = run_epoch(
            method,
            data,
            cfg=cfg,
            epoch=epoch,
            augmenter=augmenter,
            device=device,
            evaluate_on=("test",) if test is not None else (),
            on_batch=on_batch,
        )
        history.append(metrics)
        eta = metrics["epoch_time_s"] * (cfg.train.epochs - epoch - 1)
        log.info(
            "%s: %s", cfg.method.name, format_epoch_line(epoch, cfg.train.epochs, metrics, eta)
        )
        if on_epoch is not None:
            on_epoch(epoch, metrics, method)
    wall = time.perf_counter() - start
    return LocalResult(
        history=history, method=method, wall_s=wall, final=dict(history[-1]) if history else {}
    )


def summarize_history(history: list[dict[str, float]]) -> dict[str, Any]:
    """Final-epoch metrics plus the mean epoch time after the first (warm) epoch."""
    if not history:
        return {}
    times = [h["epoch_time_s"] for h in history[1:]] or [history[0]["epoch_time_s"]]
    return dict(history[-1]) | {"mean_epoch_time_s": sum(times) / len(times)}

"""Single-process training on in-memory arrays: the method without Ray.

Used by ``jumpray local``, by the benchmark (every method on the same tensors, in its own
process) and by the real-data tests. The Ray Train worker runs the same :func:`train_epoch` and
:func:`evaluate` over Ray Data batches instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from jumpray.config import RunConfig
from jumpray.data.augment import make_augmenter
from jumpray.log import get_logger
from jumpray.train.loop import evaluate, finalize_counts, train_epoch
from jumpray.train.methods import Method, build_method, epoch_generator

__all__ = ["ArraySet", "LocalResult", "run_local", "iter_batches", "format_epoch_line"]

log = get_logger(__name__)

# The generator stream of the augmentation draws (see epoch_generator); shared with the worker.
VIEW_STREAM = 1


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
        sel = order[start : start + batch_size]
        clean = data.clean_label[sel] if data.clean_label is not None else None
        yield (data.image[sel], data.given_label[sel], data.idx[sel], clean)


def format_epoch_line(epoch: int, epochs: int, m: dict[str, float], eta_s: float) -> str:
    """One progress line a person can follow: the key metrics and an ETA."""
    parts = [
        f"epoch {epoch + 1}/{epochs}",
        f"loss {m['loss']:.3f}",
        f"sel {m['selected_fraction']:.2f}",
    ]
    if "precision" in m:
        parts += [f"prec {m['precision']:.3f}", f"rec {m['recall']:.3f}"]
    if "test_accuracy" in m:
        parts.append(f"test acc {m['test_accuracy']:.4f}")
    parts += [
        f"{m['samples_per_s']:.0f} samples/s",
        f"{m['epoch_time_s']:.1f}s",
        f"ETA {eta_s:.0f}s",
    ]
    return " | ".join(parts)


def run_local(
    cfg: RunConfig,
    train: ArraySet,
    test: ArraySet | None = None,
    *,
    num_classes: int,
    noise_rate: float | None = None,
    device: torch.device | str = "cpu",
    on_epoch: Callable[[int, dict[str, float], Method], None] | None = None,
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
        mean, std: normalisation; defaults to ``cfg.data.mean/std`` or 0.5.
        shuffle: a new sample order every epoch; False = ``train``'s row order (the order a
            single Ray Train worker sees with ``preserve_order``, for equality tests).

    Returns:
        A :class:`LocalResult`; ``history[e]`` holds epoch e's metrics.
    """
    device = torch.device(device)
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    channels, size = int(train.image.shape[1]), int(train.image.shape[-1])
    augmenter = make_augmenter(
        image_size=cfg.data.image_size or size,
        channels=channels,
        mean=mean or cfg.data.mean or [0.5] * channels,
        std=std or cfg.data.std or [0.5] * channels,
        recipe=cfg.data.augment,
        strong_magnitude=cfg.data.strong_magnitude,
    )
    order_gen = torch.Generator().manual_seed(cfg.seed + 2) if shuffle else None
    method = build_method(
        cfg,
        num_classes=num_classes,
        num_samples=int(train.idx.max()) + 1,
        in_channels=channels,
        device=device,
        noise_rate=noise_rate,
    )
    codebook = getattr(method, "codebook", None)
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    for epoch in range(cfg.train.epochs):
        t0 = time.perf_counter()
        # Per-epoch seeds, exactly as the Ray Train worker draws them (rank 0).
        view_gen = epoch_generator(cfg.seed, epoch=epoch, stream=VIEW_STREAM)
        method.begin_epoch(epoch)
        counts = train_epoch(
            method,
            iter_batches(train, batch_size=cfg.train.batch_size, generator=order_gen),
            epoch=epoch,
            device=device,
            views=lambda x, g=view_gen: augmenter.train(x, g),
        )
        metrics = finalize_counts(counts) | method.end_epoch(epoch)
        if test is not None:
            ev = evaluate(
                method.eval_model(),
                iter_batches(test, batch_size=cfg.train.eval_batch_size),
                device=device,
                test_view=augmenter.test,
                codebook=codebook,
            )
            metrics["test_accuracy"] = ev["accuracy"]
            if "semantic_accuracy" in ev:
                metrics["test_semantic_accuracy"] = ev["semantic_accuracy"]
        metrics["epoch"] = epoch
        metrics["epoch_time_s"] = time.perf_counter() - t0
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

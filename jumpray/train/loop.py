"""The explicit training loop: any iterable of batches in, metric dicts out. No Ray here.

A batch is a tuple ``(image, given_label, idx[, clean_label])`` or a mapping with keys ``image``,
``given_label``, ``idx`` and optionally ``image_strong`` and ``clean_label``. ``image`` is either
uint8 (then the ``views`` function makes the weak/strong float views on the device) or already a
normalised float view (for example made by Ray Data).

Epoch metrics are built from *summable counts* (samples, selected, selected-and-clean, ...), so a
distributed caller can all-reduce the counts and call :func:`finalize_counts` once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from jumpray.train.methods import Batch, Method, StepOutput

__all__ = [
    "train_epoch",
    "evaluate",
    "finalize_counts",
    "to_batch",
    "make_dummy",
    "ViewFn",
    "TestViewFn",
    "SyncFn",
    "COUNT_KEYS",
]

ViewFn = Callable[[Tensor], tuple[Tensor, Tensor | None]]
TestViewFn = Callable[[Tensor], Tensor]
SyncFn = Callable[[bool], bool]

COUNT_KEYS = (
    "num_samples",
    "num_selected",
    "num_selected_clean",
    "num_clean",
    "num_known",
    "loss_sum",
)


def to_batch(
    raw: Any, device: torch.device, *, views: ViewFn | None = None, want_strong: bool = True
) -> Batch:
    """Turn a tuple or mapping batch into a :class:`Batch` on ``device``, making views if needed."""
    if isinstance(raw, Mapping):
        image, given, idx = raw["image"], raw["given_label"], raw["idx"]
        strong, clean = raw.get("image_strong"), raw.get("clean_label")
    else:
        image, given, idx = raw[0], raw[1], raw[2]
        strong, clean = None, (raw[3] if len(raw) > 3 else None)
    image = torch.as_tensor(image).to(device, non_blocking=True)
    if image.dtype == torch.uint8:
        if views is None:
            raise ValueError(
                "batch images are uint8 but no views function was given to make float views"
            )
        image, strong = views(image)
        strong = strong if want_strong else None
    elif strong is not None:
        strong = torch.as_tensor(strong).to(device, non_blocking=True) if want_strong else None
    return Batch(
        image=image.float(),
        given_label=torch.as_tensor(given).long().to(device, non_blocking=True),
        idx=torch.as_tensor(idx).long(),
        image_strong=strong.float() if strong is not None else None,
        clean_label=torch.as_tensor(clean).long() if clean is not None else None,
    )


def train_epoch(
    method: Method,
    batches: Iterable[Any],
    *,
    epoch: int,
    device: torch.device | str = "cpu",
    views: ViewFn | None = None,
    max_batches: int | None = None,
    sync: SyncFn | None = None,
    on_batch: Callable[[Batch, StepOutput], None] | None = None,
    dummy_template: Batch | None = None,
) -> dict[str, float]:
    """Run one epoch of ``method`` over ``batches``; the method's state is updated in place.

    Under data parallelism the ranks' shards may differ in length. With ``sync`` (an all-reduce
    "does any rank still have a batch"), a rank whose batches ran out keeps stepping with a dummy
    batch (its last real batch, loss times 0, nothing recorded or counted) until every rank is
    done, so every rank joins every collective of every step (DDP gradient all-reduce, the
    methods' own counts) and nobody hangs.

    Args:
        method: a method from :func:`jumpray.train.methods.build_method`.
        batches: tuples or mappings as described in the module docstring.
        epoch: 0-based epoch number (decides warm-up and the forget-rate schedule).
        device: where the batches go.
        views: makes (weak, strong) float views from uint8 images on the device.
        max_batches: stop early after this many batches (for smoke runs).
        sync: ``has_batch -> any rank has one``; None in a single process.
        on_batch: called with each real batch and its step's output, after the update
            (coverage, checks, recording what each step selected).
        dummy_template: the batch a rank that had no batch at all this epoch steps with.

    Returns:
        Summable counts (``COUNT_KEYS``) plus ``num_dummy_steps`` and ``train_time_s``. Call
        :func:`finalize_counts` for loss, selected fraction, selection precision / recall / F1
        and samples/s. Selection counts compare the samples whose gradient counted against
        ``given_label == clean_label`` on the samples whose clean label is known.

    Raises:
        RuntimeError: this rank must take a dummy step but has never seen a batch and got no
            ``dummy_template``.
    """
    device = torch.device(device)
    method.train()
    counts = dict.fromkeys(COUNT_KEYS, 0.0)
    counts["num_dummy_steps"] = 0.0
    start = time.perf_counter()
    source = iter(batches)
    template = dummy_template
    num_real = 0
    while True:
        raw = None
        if max_batches is None or num_real < max_batches:
            raw = next(source, None)
        has_batch = raw is not None
        if not (sync(has_batch) if sync is not None else has_batch):
            break
        if has_batch:
            batch = to_batch(raw, device, views=views, want_strong=method.needs_strong_view)
            out = method.train_step(batch, epoch=epoch)
            _accumulate(counts, batch, out.selected.detach().cpu(), out.loss)
            num_real += 1
            template = batch
            if on_batch is not None:
                on_batch(batch, out)
            continue
        if template is None:
            raise RuntimeError(
                "this rank has no batch to stand in for while other ranks still train; "
                "pass dummy_template"
            )
        method.train_step(make_dummy(template), epoch=epoch)
        counts["num_dummy_steps"] += 1
    counts["train_time_s"] = time.perf_counter() - start
    return counts


def make_dummy(template: Batch, size: int = 2) -> Batch:
    """A dummy batch: the first ``size`` rows of ``template``, marked ``dummy`` (see Batch)."""

    def head(t: Tensor | None) -> Tensor | None:
        return None if t is None else t[:size]

    return Batch(
        image=template.image[:size],
        given_label=template.given_label[:size],
        idx=template.idx[:size],
        image_strong=head(template.image_strong),
        clean_label=head(template.clean_label),
        dummy=True,
    )


def _accumulate(counts: dict[str, float], batch: Batch, selected: Tensor, loss: float) -> None:
    n = int(batch.given_label.numel())
    counts["num_samples"] += n
    counts["num_selected"] += int(selected.sum())
    counts["loss_sum"] += loss * n
    if batch.clean_label is not None:
        known = batch.clean_label >= 0
        clean = (batch.clean_label == batch.given_label.cpu()) & known
        counts["num_known"] += int(known.sum())
        counts["num_clean"] += int(clean.sum())
        counts["num_selected_clean"] += int((clean & selected).sum())


def finalize_counts(counts: Mapping[str, float]) -> dict[str, float]:
    """Turn (possibly all-reduced) epoch counts into metrics.

    Returns:
        ``loss``, ``selected_fraction``, ``samples_per_s``, ``num_samples`` and, when clean labels
        were known, ``precision`` (selected samples whose label is right), ``recall`` (right-label
        samples that were selected), ``f1`` and ``data_clean_fraction``.
    """
    n = max(counts["num_samples"], 1.0)
    out = {
        "loss": counts["loss_sum"] / n,
        "num_samples": counts["num_samples"],
        "selected_fraction": counts["num_selected"] / n,
        "samples_per_s": counts["num_samples"] / max(counts.get("train_time_s", 0.0), 1e-9),
        "train_time_s": counts.get("train_time_s", 0.0),
    }
    if counts["num_known"] > 0:
        sel = counts["num_selected"]
        tp = counts["num_selected_clean"]
        precision = tp / sel if sel else 0.0
        recall = tp / counts["num_clean"] if counts["num_clean"] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out |= {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "data_clean_fraction": counts["num_clean"] / counts["num_known"],
        }
    return out


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[Any],
    *,
    device: torch.device | str = "cpu",
    test_view: TestViewFn | None = None,
    codebook: Tensor | None = None,
) -> dict[str, float]:
    """Test accuracy of the classifier head (and of the semantic head when ``codebook`` is given).

    Batches are tuples or mappings; labels are the ``given_label`` entry (test sets are clean).
    The semantic accuracy is the nearest codeword of sign(h) (docs/method.md, 'Evaluation').

    Returns:
        ``num_correct``, ``num_samples`` (summable), ``accuracy`` and, with a codebook,
        ``semantic_accuracy``.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    correct = correct_sem = total = 0
    for raw in batches:
        if isinstance(raw, Mapping):
            image, label = raw["image"], raw["given_label"]
        else:
            image, label = raw[0], raw[1]
        x = torch.as_tensor(image).to(device)
        if x.dtype == torch.uint8:
            if test_view is None:
                raise ValueError("test images are uint8 but no test_view function was given")
            x = test_view(x)
        y = torch.as_tensor(label).long().to(device)
        logits, codes = model(x.float())
        correct += int((logits.argmax(1) == y).sum())
        if codebook is not None and codes is not None:
            sem = (torch.sign(codes.float()) @ codebook.T.to(codes.device)).argmax(1)
            correct_sem += int((sem == y).sum())
        total += int(y.numel())
    model.train(was_training)
    out = {
        "num_correct": float(correct),
        "num_samples": float(total),
        "accuracy": correct / max(total, 1),
    }
    if codebook is not None:
        out["semantic_accuracy"] = correct_sem / max(total, 1)
    return out

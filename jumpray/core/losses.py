"""The two training losses of Jump-teaching (docs/method.md, 'Training losses').

The semantic head outputs h in (-1, 1)^K; the per-bit loss against the class codeword c in {±1}^K
is BCE((h+1)/2, (c+1)/2) = -log((1 + c*h)/2), after clamping h to [-1+clamp, 1-clamp] so the loss
stays finite (at most -log(clamp/2), 9.90 for clamp 1e-4). The classifier's cross-entropy uses
logits divided by a temperature T.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "bit_losses",
    "semantic_loss",
    "scaled_cross_entropy",
    "jump_loss",
    "warmup_loss",
]


def bit_losses(codes: Tensor, target_codes: Tensor, *, clamp: float = 1e-4) -> Tensor:
    """Per-bit BCE between the semantic output and the target codeword.

    See docs/method.md, 'Bit losses'.

    Computed in the closed form ``-log1p((c*h - 1) / 2)``, which equals the BCE for ±1 targets,
    keeps its digits near h = c (the loss there is tiny, e.g. 5e-4 at c*h = 0.999) and, unlike
    ``F.binary_cross_entropy``, is allowed under autocast. Always computed in float32.

    Args:
        codes: (B, K) semantic-head outputs h in (-1, 1), any float dtype.
        target_codes: (B, K) ±1 codewords of the given labels (``codebook[given_label]``).
        clamp: h is clamped to [-1 + clamp, 1 - clamp] first.

    Returns:
        (B, K) float32 per-bit losses, differentiable w.r.t. ``codes``.

    Raises:
        ValueError: the shapes differ or clamp is not in (0, 1).
    """
    if codes.shape != target_codes.shape:
        raise ValueError(
            f"codes {tuple(codes.shape)} and target_codes {tuple(target_codes.shape)} must match"
        )
    if not 0.0 < clamp < 1.0:
        raise ValueError(f"clamp must be in (0, 1), got {clamp}")
    h = codes.float().clamp(-1.0 + clamp, 1.0 - clamp)
    return -torch.log1p((target_codes.to(h.dtype) * h - 1.0) * 0.5)


def semantic_loss(bit_loss: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean bit loss over the selected rows and all bits.

    Written as a masked sum over a clamped count so that it needs no host sync and, when the mask
    selects nothing, returns 0.0 that still belongs to the autograd graph (so every DDP rank can
    call backward).

    Args:
        bit_loss: (B, K) per-bit losses.
        mask: (B,) bool rows to average over; None = all rows.

    Returns:
        Scalar float32.
    """
    if mask is None:
        return bit_loss.mean()
    per_row = bit_loss.mean(dim=1)
    kept = torch.where(mask, per_row, torch.zeros_like(per_row))
    return kept.sum() / mask.sum().clamp(min=1)


def scaled_cross_entropy(
    logits: Tensor,
    given_label: Tensor,
    *,
    temperature: float,
    reduction: Literal["mean", "none"] = "mean",
) -> Tensor:
    """Cross-entropy of ``logits / T`` against the given labels (the official code's T is 2).

    Args:
        logits: (B, C) raw classifier outputs.
        given_label: (B,) int64 labels, possibly wrong.
        temperature: T > 0.
        reduction: "mean" (scalar) or "none" ((B,) per-sample losses).

    Returns:
        Scalar or (B,) float32.

    Raises:
        ValueError: unknown reduction or T <= 0.
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return F.cross_entropy(logits.float() / temperature, given_label, reduction=reduction)


def jump_loss(
    logits: Tensor,
    codes: Tensor,
    given_label: Tensor,
    codebook: Tensor,
    selected: Tensor,
    *,
    temperature: float,
    clamp: float = 1e-4,
    bit_loss: Tensor | None = None,
) -> Tensor:
    """Selection-phase loss (docs/method.md, 'Training losses').

    ``(CE(logits[S] / T) + BCE_mean(h[S])) * |S| / B``, i.e. the sum over the selected samples S of
    (CE_i + mean_k bit_loss_ik), divided by the batch size B. Under DDP gradient averaging this is
    the global "sum over selected / global batch". Computed as a masked sum, so with |S| = 0 it
    is a zero that still has a grad graph: every rank can call backward.

    Args:
        logits: (B, C) raw classifier outputs.
        codes: (B, K) semantic outputs in (-1, 1).
        given_label: (B,) int64.
        codebook: (C, K) ±1 codewords.
        selected: (B,) bool, the gate (flags written at an earlier visit).
        temperature: T.
        clamp: the semantic output clamp.
        bit_loss: optional precomputed (B, K) ``bit_losses(codes, codebook[given_label])``, to
            reuse the tensor the clean rule also reads; ``codes``/``codebook`` are then unused.

    Returns:
        Scalar float32.
    """
    if bit_loss is None:
        bit_loss = bit_losses(codes, codebook[given_label], clamp=clamp)
    per_sample = scaled_cross_entropy(
        logits, given_label, temperature=temperature, reduction="none"
    ) + bit_loss.mean(dim=1)
    # where, not multiply: an unselected sample's loss never leaks in (0 * inf would be nan).
    kept = torch.where(selected, per_sample, torch.zeros_like(per_sample))
    return kept.sum() / max(1, per_sample.shape[0])


def warmup_loss(
    logits: Tensor,
    bit_loss: Tensor,
    given_label: Tensor,
    *,
    temperature: float,
) -> Tensor:
    """Warm-up loss on every sample: CE(logits / T) + mean bit loss.

    See docs/method.md, 'Training losses'.

    Args:
        logits: (B, C) raw classifier outputs.
        bit_loss: (B, K) per-bit losses from :func:`bit_losses`.
        given_label: (B,) int64.
        temperature: T.

    Returns:
        Scalar float32.
    """
    return scaled_cross_entropy(logits, given_label, temperature=temperature) + bit_loss.mean()

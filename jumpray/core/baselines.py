"""The pure maths of the two-network baselines: Co-teaching and JoCoR.

- Co-teaching (Han et al., "Co-teaching: Robust Training of Deep Neural Networks with Extremely
  Noisy Labels", NeurIPS 2018): each network keeps its R(T) fraction of small-loss samples and the
  *other* network learns from them, with R(T) = 1 - tau * min(T^c / T_k, 1).
- JoCoR (Wei et al., "Combating Noisy Labels by Agreement: A Joint Training Method with
  Co-Regularization", CVPR 2020): one joint per-sample loss
  (1 - lambda) * (CE_1 + CE_2) + lambda * (KL(p1 || p2) + KL(p2 || p1)), averaged over its
  small-loss samples, trains both networks.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "forget_rate_schedule",
    "small_loss_mask",
    "coteaching_masks",
    "jocor_per_sample_loss",
    "jocor_loss",
]


def forget_rate_schedule(
    epoch: int, *, forget_rate: float, num_gradual: int, exponent: float = 1.0
) -> float:
    """Fraction of each batch to drop at an epoch: ``tau * min(epoch^c / T_k, 1)``.

    This is 1 - R(T) of Co-teaching. ``epoch`` counts from 0, so epoch 0 keeps every sample and
    the rate reaches ``forget_rate`` at epoch ``num_gradual`` (the official code's linspace
    reaches it one epoch earlier).

    Args:
        epoch: 0-based epoch T.
        forget_rate: tau, the final fraction dropped (usually the noise rate).
        num_gradual: T_k, epochs of the ramp; 0 = drop tau from the start.
        exponent: c, the ramp shape (1 = linear).

    Returns:
        The forget rate in [0, forget_rate].
    """
    if not 0.0 <= forget_rate < 1.0:
        raise ValueError(f"forget_rate must be in [0, 1), got {forget_rate}")
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    if num_gradual <= 0:
        return float(forget_rate)
    return float(forget_rate * min(epoch**exponent / num_gradual, 1.0))


def small_loss_mask(per_sample_loss: Tensor, forget_rate: float) -> Tensor:
    """Keep the ``ceil((1 - forget_rate) * B)`` samples with the smallest loss (at least 1).

    Ceil (not the official code's floor) so that a small batch never drops more than the
    forget rate. Ties go to the lower position (stable sort).

    Args:
        per_sample_loss: (B,) losses (detached or not; the mask carries no gradient).
        forget_rate: fraction to drop, in [0, 1).

    Returns:
        (B,) bool, True = kept.
    """
    if not 0.0 <= forget_rate < 1.0:
        raise ValueError(f"forget_rate must be in [0, 1), got {forget_rate}")
    b = per_sample_loss.shape[0]
    mask = torch.zeros(b, dtype=torch.bool, device=per_sample_loss.device)
    if b == 0:
        return mask
    # The 1e-9 keeps 0.7 * 10 = 7.000000000000001 from rounding up to 8.
    num_keep = max(1, min(b, math.ceil((1.0 - forget_rate) * b - 1e-9)))
    order = torch.argsort(per_sample_loss.detach(), stable=True)
    mask[order[:num_keep]] = True
    return mask


def coteaching_masks(loss_1: Tensor, loss_2: Tensor, forget_rate: float) -> tuple[Tensor, Tensor]:
    """Cross update: network 1 learns from network 2's small-loss picks and vice versa.

    Args:
        loss_1: (B,) per-sample loss of network 1.
        loss_2: (B,) per-sample loss of network 2.
        forget_rate: fraction each network drops.

    Returns:
        ``(mask_for_net1, mask_for_net2)``, each (B,) bool: ``mask_for_net1`` is the small-loss
        set of network 2, ``mask_for_net2`` that of network 1.
    """
    return small_loss_mask(loss_2, forget_rate), small_loss_mask(loss_1, forget_rate)


def jocor_per_sample_loss(
    logits_1: Tensor, logits_2: Tensor, given_label: Tensor, co_lambda: float
) -> Tensor:
    """JoCoR joint loss per sample: (1-λ)(CE_1 + CE_2) + λ(KL(p1||p2) + KL(p2||p1)).

    Both KL directions keep their gradients, as in JoCoR (each network is pulled toward the other).

    Args:
        logits_1: (B, C) raw outputs of network 1.
        logits_2: (B, C) raw outputs of network 2.
        given_label: (B,) int64.
        co_lambda: λ in [0, 1], the weight of the co-regularization term.

    Returns:
        (B,) float32.
    """
    logits_1, logits_2 = logits_1.float(), logits_2.float()
    ce = F.cross_entropy(logits_1, given_label, reduction="none") + F.cross_entropy(
        logits_2, given_label, reduction="none"
    )
    logp_1 = F.log_softmax(logits_1, dim=1)
    logp_2 = F.log_softmax(logits_2, dim=1)
    # KL(p1 || p2) + KL(p2 || p1) = sum_c (p1 - p2) * (log p1 - log p2).
    sym_kl = ((logp_1.exp() - logp_2.exp()) * (logp_1 - logp_2)).sum(dim=1)
    return (1.0 - co_lambda) * ce + co_lambda * sym_kl


def jocor_loss(
    logits_1: Tensor,
    logits_2: Tensor,
    given_label: Tensor,
    *,
    co_lambda: float,
    forget_rate: float,
) -> tuple[Tensor, Tensor]:
    """JoCoR's update loss: the mean joint loss over its small-loss samples.

    Args:
        logits_1: (B, C) raw outputs of network 1.
        logits_2: (B, C) raw outputs of network 2.
        given_label: (B,) int64.
        co_lambda: λ.
        forget_rate: fraction of the batch dropped (from :func:`forget_rate_schedule`).

    Returns:
        ``(loss, mask)``: scalar float32 and (B,) bool of the samples that were kept.
    """
    per_sample = jocor_per_sample_loss(logits_1, logits_2, given_label, co_lambda)
    mask = small_loss_mask(per_sample, forget_rate)
    return per_sample[mask].mean(), mask

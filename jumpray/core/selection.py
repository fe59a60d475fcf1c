"""The clean rule and the selection-phase input blend (docs/method.md, 'Clean rule').

A sample counts as clean when the classifier agrees with its given label, OR when its K per-bit
losses have (unbiased) variance below tau. Because each bit loss depends only on c_k * h_k, the
variance is ~0 exactly when h is parallel to the label's codeword, whatever the sign and scale:
an all-zero head (mean ln 2 = 0.693) and an antipodal output (mean ~7.6) pass the reference rule
too (docs/method.md, 'Clean rule'). The "guarded" rule also asks the mean bit loss to be below a
bound, which rejects those two while the true code (mean ~0) and 0.5 * code (mean
log(4/3) = 0.288) still pass.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "bit_loss_stats",
    "SELECTION_RULES",
    "clean_rule",
    "draw_blend_lambda",
    "blend_views",
    "class_floor_fill",
]

# A rule maps (agree (B,) bool, mean (B,), var (B,)) to (B,) bool.
RuleFn = Callable[..., Tensor]


def bit_loss_stats(bit_loss: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and unbiased variance of each row's K bit losses.

    Args:
        bit_loss: (B, K) per-bit losses, K >= 2.

    Returns:
        ``(mean, var)``, each (B,) float32; var uses the K - 1 denominator (as ``torch.var``).
    """
    if bit_loss.dim() != 2 or bit_loss.shape[1] < 2:
        raise ValueError(f"bit_loss must be (B, K) with K >= 2, got {tuple(bit_loss.shape)}")
    bl = bit_loss.float()
    return bl.mean(dim=1), bl.var(dim=1, unbiased=True)


def _reference_rule(
    agree: Tensor, mean: Tensor, var: Tensor, *, tau: float, max_mean_bit_loss: float
) -> Tensor:
    """Official rule: agree OR var < tau. ``max_mean_bit_loss`` unused (docs/method.md)."""
    del mean, max_mean_bit_loss
    return agree | (var < tau)


def _guarded_rule(
    agree: Tensor, mean: Tensor, var: Tensor, *, tau: float, max_mean_bit_loss: float
) -> Tensor:
    """agree OR (var < tau AND mean < max_mean_bit_loss): rejects the zero and antipodal outputs."""
    return agree | ((var < tau) & (mean < max_mean_bit_loss))


SELECTION_RULES: dict[str, RuleFn] = {
    "reference": _reference_rule,
    "guarded": _guarded_rule,
}


def clean_rule(
    logits: Tensor,
    given_label: Tensor,
    bit_loss: Tensor,
    *,
    rule: str,
    tau: float,
    temperature: float = 2.0,
    max_mean_bit_loss: float = 0.5,
) -> Tensor:
    """Decide which samples of a batch are clean, from the training forward pass (no_grad).

    Args:
        logits: (B, C) raw classifier outputs.
        given_label: (B,) int64.
        bit_loss: (B, K) per-bit losses of the same forward pass.
        rule: a name in :data:`SELECTION_RULES` ("reference" or "guarded").
        tau: variance threshold (1e-3 in the reference).
        temperature: T; the argmax is taken over logits / T as in the reference (T > 0 does not
            change it).
        max_mean_bit_loss: the guarded rule's bound on the mean bit loss.

    Returns:
        (B,) bool, True = clean.

    Raises:
        ValueError: unknown rule name (the message lists the valid ones).
    """
    try:
        fn = SELECTION_RULES[rule]
    except KeyError:
        raise ValueError(
            f"unknown selection rule {rule!r}; valid rules: {', '.join(sorted(SELECTION_RULES))}"
        ) from None
    with torch.no_grad():
        agree = (logits.float() / temperature).argmax(dim=1) == given_label
        mean, var = bit_loss_stats(bit_loss)
        return fn(agree, mean, var, tau=tau, max_mean_bit_loss=max_mean_bit_loss)


def draw_blend_lambda(generator: torch.Generator, alpha: float) -> float:
    """Draw the per-batch blend weight: lam ~ Beta(alpha, alpha), lam = max(lam, 1 - lam).

    torch has no Beta sampler that takes a Generator, so a 63-bit seed is drawn from ``generator``
    and feeds numpy's Beta sampler: the result is a pure function of the generator's state, and
    the generator advances, so a checkpointed generator state replays the same sequence.

    Args:
        generator: the torch generator that owns this stream of draws.
        alpha: Beta parameter (> 0); 5.0 in the reference.

    Returns:
        lam in [0.5, 1].
    """
    if alpha <= 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    seed = int(torch.randint(0, 2**63 - 1, (1,), generator=generator, dtype=torch.int64))
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    return max(lam, 1.0 - lam)


def blend_views(weak: Tensor, strong: Tensor, lam: float) -> Tensor:
    """Blend two views of the same images: ``lam * weak + (1 - lam) * strong``.

    See docs/method.md, 'Input blend'.

    Args:
        weak: (B, ...) weak-augmentation view.
        strong: same shape, strong-augmentation view of the same images.
        lam: blend weight in [0, 1].

    Returns:
        Tensor of the same shape and dtype.
    """
    if weak.shape != strong.shape:
        raise ValueError(f"weak {tuple(weak.shape)} and strong {tuple(strong.shape)} must match")
    # lerp(strong, weak, lam) = strong + lam * (weak - strong), one fused kernel.
    return torch.lerp(strong, weak, lam)


def class_floor_fill(
    flags: Tensor, given_label: Tensor, score: Tensor, *, num_classes: int, floor: float
) -> Tensor:
    """Keep every given class at least ``floor`` times the overall clean-flag fraction.

    The reference rule only flags what the classifier already predicts (or what the semantic head
    already encodes). A class the early model confuses (Fashion-MNIST's shirt, coat and T-shirt)
    then loses its flags, is never trained again, and collapses: measured, 0 % of its clean
    samples flagged two epochs after warm-up and test accuracy falling from 0.67 to 0.59. This
    guard adds, per starved class, its samples with the highest ``score`` (p(given label) of the
    same forward pass that wrote the flags) until the class reaches the floor. It never removes a
    flag, and it works on flags already written at the earlier visit, so the jump is unchanged.

    Args:
        flags: (M,) bool clean flags from the rule.
        given_label: (M,) int64 in [0, num_classes).
        score: (M,) float, higher = more likely the given label is right.
        num_classes: C.
        floor: 0 disables the guard (the reference behaviour); 1 asks every class for the
            overall fraction.

    Returns:
        (M,) bool, a superset of ``flags``.
    """
    if floor < 0:
        raise ValueError(f"floor must be >= 0, got {floor}")
    if not (flags.shape == given_label.shape == score.shape) or flags.dim() != 1:
        raise ValueError(
            "flags, given_label and score must all be (M,), got "
            f"{tuple(flags.shape)}, {tuple(given_label.shape)}, {tuple(score.shape)}"
        )
    out = flags.clone()
    if floor == 0 or flags.numel() == 0:
        return out
    overall = float(flags.float().mean())
    for c in range(num_classes):
        members = (given_label == c).nonzero().squeeze(1)
        want = int(floor * overall * members.numel())
        missing = want - int(flags[members].sum())
        if missing <= 0:
            continue
        candidates = members[~flags[members]]
        best = torch.argsort(score[candidates].float(), descending=True, stable=True)[:missing]
        out[candidates[best]] = True
    return out

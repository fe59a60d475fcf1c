"""Hadamard codebook of the semantic head (docs/method.md, 'Semantic codes').

Class c gets a fixed ±1 codeword of K bits: row c of the K x K Sylvester-Hadamard matrix H when
C <= K, or a row of [H; -H] when K < C <= 2K (then classes j and j + K are antipodal). Distinct
rows of H differ in exactly K/2 bits, antipodal pairs in all K bits.
"""

from __future__ import annotations

import torch
from torch import Tensor

from jumpray.errors import ConfigError

__all__ = ["hadamard", "make_codebook", "min_num_bits", "decode_codes"]


def _is_power_of_two(k: int) -> bool:
    return k >= 1 and (k & (k - 1)) == 0


def _next_power_of_two(n: int) -> int:
    """The smallest power of two >= n (n >= 1)."""
    return 1 << max(0, (n - 1).bit_length())


def hadamard(k: int) -> Tensor:
    """Build the Sylvester-Hadamard matrix of order k.

    H_1 = [1], H_2m = [[H_m, H_m], [H_m, -H_m]]. Rows are mutually orthogonal.

    Args:
        k: the order, a power of two (>= 1).

    Returns:
        (k, k) float32 tensor of ±1.

    Raises:
        ValueError: k is not a positive power of two.
    """
    if not isinstance(k, int) or not _is_power_of_two(k):
        raise ValueError(f"hadamard order must be a positive power of two, got {k!r}")
    h = torch.ones(1, 1, dtype=torch.float32)
    while h.shape[0] < k:
        h = torch.cat([torch.cat([h, h], dim=1), torch.cat([h, -h], dim=1)], dim=0)
    return h


def min_num_bits(num_classes: int) -> int:
    """The smallest K (a power of two, >= 2) that can encode ``num_classes`` (C <= 2K).

    With this K and C > K some classes share an axis with opposite signs (antipodal codes, which
    the reference variance rule cannot tell apart: docs/method.md, 'Clean rule'); the next power
    of two >= C avoids that.

    Args:
        num_classes: C >= 1.

    Returns:
        K, a power of two with C <= 2K and K >= 2 (the bit-loss variance needs two bits).
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return max(2, _next_power_of_two((num_classes + 1) // 2))


def make_codebook(num_classes: int, num_bits: int) -> Tensor:
    """Assign each class its ±1 codeword (docs/method.md, 'Semantic codes').

    Args:
        num_classes: C.
        num_bits: K, a power of two >= 2 with C <= 2K.

    Returns:
        (C, K) float32 tensor of ±1: rows 0..C-1 of H if C <= K, else rows of [H; -H].

    Raises:
        ConfigError: K is not a power of two, K < 2, or C > 2K. The message names the valid
            ``model.semantic_dim`` values: the smallest K with C <= 2K and the smallest with C <= K.
    """
    if num_classes < 1:
        raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
    smallest = min_num_bits(num_classes)
    no_antipodes = max(2, _next_power_of_two(num_classes))
    valid = f"model.semantic_dim={smallest}" + (
        f" or {no_antipodes}" if no_antipodes != smallest else ""
    )
    if num_bits < 2 or not _is_power_of_two(num_bits):
        raise ConfigError(
            f"model.semantic_dim={num_bits} is not a power of two >= 2: use {valid} "
            f"for {num_classes} classes"
        )
    if num_classes > 2 * num_bits:
        raise ConfigError(
            f"model.semantic_dim={num_bits} cannot encode {num_classes} classes "
            f"(needs C <= 2K): use {valid}"
        )
    h = hadamard(num_bits)
    if num_classes > num_bits:
        h = torch.cat([h, -h], dim=0)
    return h[:num_classes].contiguous()


def decode_codes(codes: Tensor, codebook: Tensor) -> Tensor:
    """Nearest codeword in Hamming distance: ``argmax_c sign(h) . code_c``.

    The semantic head's prediction (docs/method.md, 'Evaluation').

    Args:
        codes: (B, K) semantic-head outputs in (-1, 1).
        codebook: (C, K) ±1 codewords.

    Returns:
        (B,) int64 class predicted by the semantic head.
    """
    return (torch.sign(codes.float()) @ codebook.float().T).argmax(dim=1)

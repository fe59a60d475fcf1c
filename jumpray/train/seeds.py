"""The seed streams of a training run: one named stream per kind of random draw, one function.

Every random draw of training comes from a CPU generator seeded from (``seed``, stream, rank,
epoch) alone by :func:`epoch_generator`. Seeding every epoch afresh, instead of carrying one
generator through the run, makes a run resumed from an epoch-end checkpoint draw exactly what the
uninterrupted run would have drawn, and gives each rank its own draws. The plain loop is rank 0.

Streams:

- :data:`VIEW_STREAM`: the weak/strong augmentation draws of the training batches;
- :data:`SHUFFLE_STREAM`: a worker's sample order of an epoch (:func:`shuffle_seed`);
- :data:`BLEND_STREAM`: Jump-teaching's blend coefficient draws (``selection.blend``).

Two draws are seeded once per run instead: network initialisation (``torch.manual_seed(seed)``
when the method is built) and the plain loop's sample order (:func:`plain_order_generator`: one
generator carried through the epochs, seeded ``seed +`` :data:`PLAIN_ORDER_OFFSET`). The plain
loop keeps its own order because the published Fashion-MNIST comparison of the methods
(``tests/slow/test_methods_fashion_mnist.py``) was measured with it; with ``shuffle=False`` it
trains in the stored order, as a single worker with ``data.shuffle_buffer: 0`` does.
"""

from __future__ import annotations

import torch

__all__ = [
    "VIEW_STREAM",
    "SHUFFLE_STREAM",
    "BLEND_STREAM",
    "PLAIN_ORDER_OFFSET",
    "epoch_generator",
    "shuffle_seed",
    "plain_order_generator",
]

VIEW_STREAM = 1
SHUFFLE_STREAM = 3
BLEND_STREAM = 7919
PLAIN_ORDER_OFFSET = 2


def epoch_generator(seed: int, *, epoch: int, rank: int = 0, stream: int = 0) -> torch.Generator:
    """A CPU generator seeded from (seed, stream, rank, epoch) alone (see the module docstring)."""
    mixed = (seed * 1_000_003 + stream * 100_003 + rank * 10_007 + epoch) % (2**63 - 1)
    return torch.Generator().manual_seed(mixed)


def shuffle_seed(seed: int, *, epoch: int, rank: int = 0) -> int:
    """The 32-bit seed of an epoch's sample order (rows in memory, or Ray Data's local shuffle)."""
    return int(
        epoch_generator(seed, epoch=epoch, rank=rank, stream=SHUFFLE_STREAM).initial_seed() % 2**32
    )


def plain_order_generator(seed: int) -> torch.Generator:
    """The plain loop's sample-order generator, drawn from once per epoch (module docstring)."""
    return torch.Generator().manual_seed(seed + PLAIN_ORDER_OFFSET)

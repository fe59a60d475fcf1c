"""Collectives the data-parallel training loop needs, on ``torch.distributed`` only (docs/architecture.md).

- :func:`all_gather_pairs`: every rank's ``(idx, value)`` records, padded to a common length,
  gathered so every rank holds the same concatenation (flag updates, label tables);
- :func:`all_reduce_sum` / :func:`all_reduce_counts` / :func:`any_rank`: integer and count sums,
  and the per-step "does any rank still have a batch" vote that keeps DDP aligned when the shards
  have unequal lengths (DDP: every rank must join every gradient all-reduce);
- :class:`Coverage`: per-epoch visit counts by ``idx``, all-reduced, to prove that every sample was
  trained on exactly once per epoch across ranks.

Every function is also correct in a single process (no process group): it returns its input.
No Ray here: the Ray Train worker only passes these functions to the loop and the methods.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = [
    "is_distributed",
    "rank",
    "world_size",
    "comm_device",
    "all_gather_pairs",
    "all_reduce_sum",
    "all_reduce_counts",
    "any_rank",
    "Coverage",
    "same_on_all_ranks",
    "digest",
    "history_digest",
]

_PAD = -1


def is_distributed() -> bool:
    """True when a default process group is up."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's global rank (0 without a process group)."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """The number of ranks (1 without a process group)."""
    return dist.get_world_size() if is_distributed() else 1


def comm_device() -> torch.device:
    """Where collective buffers must live: CUDA for NCCL, CPU for gloo."""
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_gather_pairs(idx: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
    """Gather every rank's ``(idx, value)`` records; every rank gets the same result.

    Ranks may hold different numbers of records (unequal shards): each pads to the longest with
    idx = -1, and the padding is dropped after the gather. The result is ordered by rank, then by
    each rank's record order, so applying it gives identical state on every rank. Floating values
    travel as the bits of their float64 value (exact).

    Args:
        idx: (M_r,) int64 global sample ids on this rank (any device).
        values: (M_r,) or (M_r, D) bool, integer or floating values, one row per id.

    Returns:
        ``(idx, values)``: (sum_r M_r,) int64 and values of ``values``' dtype and trailing shape,
        on CPU.

    Raises:
        ValueError: ``idx`` and ``values`` differ in length, or an id is negative.
    """
    if idx.dim() != 1 or values.dim() not in (1, 2) or values.shape[0] != idx.shape[0]:
        raise ValueError(
            f"idx {tuple(idx.shape)} must be 1-D and values {tuple(values.shape)} (M,) or (M, D) "
            "with the same M"
        )
    idx = idx.detach().to("cpu", torch.int64)
    if idx.numel() and int(idx.min()) < 0:
        raise ValueError("sample ids must be >= 0 (-1 is the padding value)")
    dtype, flat = values.dtype, values.dim() == 1
    # (M, D) rows; D is read from the shape, not inferred, so a rank with no rows (a split
    # that got no samples) still sends a well-formed empty block.
    vals = values.detach().to("cpu").reshape(idx.numel(), 1 if flat else values.shape[1])
    vals = (
        vals.to(torch.float64).view(torch.int64)
        if dtype.is_floating_point
        else vals.to(torch.int64)
    )
    if is_distributed() and world_size() > 1:
        idx, vals = _gather_rows(idx, vals)
    if dtype.is_floating_point:
        vals = vals.view(torch.float64)
    vals = vals.to(dtype)
    return idx, vals.reshape(-1) if flat else vals


def _gather_rows(idx: Tensor, vals: Tensor) -> tuple[Tensor, Tensor]:
    """(M_r,) int64 ids and (M_r, D) int64 rows of every rank, padding dropped."""
    device = comm_device()
    size = torch.tensor([idx.numel()], dtype=torch.int64, device=device)
    sizes = [torch.zeros_like(size) for _ in range(world_size())]
    dist.all_gather(sizes, size)
    longest = max(int(s.item()) for s in sizes)
    # One (1 + D, longest) int64 buffer per rank: row 0 = idx, rows 1.. = the values.
    width = vals.shape[1]
    buf = torch.full((1 + width, longest), _PAD, dtype=torch.int64, device=device)
    buf[0, : idx.numel()] = idx.to(device)
    buf[1:, : idx.numel()] = vals.T.to(device)
    gathered = [torch.empty_like(buf) for _ in range(world_size())]
    dist.all_gather(gathered, buf)
    out = torch.cat(gathered, dim=1).cpu()
    keep = out[0] != _PAD
    return out[0, keep], out[1:, keep].T.contiguous()


def all_reduce_sum(value: int) -> int:
    """Sum an integer over ranks (e.g. selected samples, so a step is skipped only everywhere)."""
    if not is_distributed():
        return int(value)
    t = torch.tensor([int(value)], dtype=torch.int64, device=comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return int(t.item())


def any_rank(flag: bool) -> bool:
    """True when ``flag`` is true on at least one rank (one all-reduce MAX)."""
    if not is_distributed():
        return bool(flag)
    t = torch.tensor([1 if flag else 0], dtype=torch.int64, device=comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def all_reduce_counts(
    counts: Mapping[str, float], *, maximum: tuple[str, ...] = ()
) -> dict[str, float]:
    """Sum a dict of counts over ranks (keys must be the same on every rank).

    Args:
        counts: summable numbers, e.g. ``train_epoch``'s counts.
        maximum: keys reduced with MAX instead of SUM (wall times: the epoch lasts as long as the
            slowest rank).

    Returns:
        A new dict with the reduced values, as floats (float64 during the reduction).
    """
    if not is_distributed():
        return {k: float(v) for k, v in counts.items()}
    keys = sorted(counts)
    summed = [k for k in keys if k not in maximum]
    maxed = [k for k in keys if k in maximum]
    out: dict[str, float] = {}
    for names, op in ((summed, dist.ReduceOp.SUM), (maxed, dist.ReduceOp.MAX)):
        if not names:
            continue
        t = torch.tensor(
            [float(counts[k]) for k in names], dtype=torch.float64, device=comm_device()
        )
        dist.all_reduce(t, op=op)
        out |= dict(zip(names, t.cpu().tolist(), strict=True))
    return out


def digest(*tensors: Tensor) -> int:
    """An order-sensitive integer fingerprint of integer/bool tensors (equal state, equal digest).

    Each element is weighted by a position-dependent odd multiplier below 2**31, so the int64 sum
    cannot overflow for up to about 2**30 elements with values below 2**2.
    """
    total = 0
    for t in tensors:
        flat = t.detach().to("cpu", torch.int64).flatten()
        pos = torch.arange(flat.numel(), dtype=torch.int64)
        weight = (pos * 2654435761 + 97) % (2**31 - 1) | 1
        total += int((flat * weight).sum())
    return total


def history_digest(history: Any) -> int:
    """A fingerprint of a :class:`~jumpray.core.SampleHistory` (equal tables, equal value)."""
    state = history.state_dict()
    h = hashlib.blake2b(digest_size=7)
    for name in ("top_labels", "top_sums", "given_sum", "weight", "clean_count", "flag_visits"):
        h.update(state[name].contiguous().numpy().tobytes())
    return int.from_bytes(h.digest(), "little")


def same_on_all_ranks(value: int) -> bool:
    """True when ``value`` (e.g. a :func:`digest` of the flag table) is equal on every rank."""
    if not is_distributed():
        return True
    t = torch.tensor([int(value), -int(value)], dtype=torch.int64, device=comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t[0]) == -int(t[1])


class Coverage:
    """Counts how often each sample id was trained on in one epoch, across all ranks.

    Args:
        num_samples: N; ids are 0..N-1.

    Example:
        >>> cov = Coverage(4)
        >>> cov.add(torch.tensor([0, 1, 3]))
        >>> cov.summary()   # single process
        {'num_unique_seen': 3.0, 'num_seen_multiple': 0.0, 'num_unseen': 1.0}
    """

    def __init__(self, num_samples: int):
        self.num_samples = int(num_samples)
        self.counts = torch.zeros(self.num_samples, dtype=torch.int32)

    def add(self, idx: Tensor) -> None:
        """Count one visit for each id in ``idx`` ((B,) int64, any device)."""
        self.counts.index_add_(
            0, idx.detach().to("cpu", torch.int64), torch.ones(idx.numel(), dtype=torch.int32)
        )

    def summary(self) -> dict[str, float]:
        """All-reduce the counts and summarize; resets for the next epoch.

        Returns:
            ``num_unique_seen`` (ids seen at least once), ``num_seen_multiple`` (ids seen twice or
            more, must be 0) and ``num_unseen`` (ids never seen; 0 unless samples were quarantined).
        """
        counts = self.counts.to(comm_device(), copy=True)
        if is_distributed():
            dist.all_reduce(counts, op=dist.ReduceOp.SUM)
        counts = counts.cpu()
        self.counts.zero_()
        return {
            "num_unique_seen": float((counts > 0).sum()),
            "num_seen_multiple": float((counts > 1).sum()),
            "num_unseen": float((counts == 0).sum()),
        }

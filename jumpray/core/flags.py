"""Per-sample clean flags with J generations: the "jump" (docs/method.md, 'Jump').

Every sample i has a visit counter v_i (visits so far). At visit v the gate is the flag written
at visit v - J, kept in ring-buffer slot v % J; before that slot was ever written the gate is
``initial``. The flag computed from the forward pass of visit v is only *recorded*; records
become visible through :meth:`JumpFlags.commit`, which writes slot v % J and increments v_i.

The training loop records during an epoch and commits at the epoch end (under DDP, after
all-gathering every rank's records, so every rank applies identical updates). The gate therefore
never comes from the current forward pass: it was computed by the model state that processed the
sample J visits earlier. J = 1 is the official code's previous-visit behaviour.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["JumpFlags"]


class JumpFlags:
    """Clean flags keyed by global sample id, J generations deep.

    Args:
        num_samples: N, ids are 0..N-1.
        interval: J >= 1, the jump in visits.
        initial: the gate of a sample before any flag for that slot was written (the official
            code starts all False, so the first selection epoch without warm-up updates nothing).
        device: where the flag table lives (CPU is the natural choice: N bools are tiny).

    Example:
        >>> flags = JumpFlags(4, interval=1)
        >>> idx = torch.tensor([2, 0])
        >>> flags.gate(idx)                       # visit 0: nothing written yet
        tensor([False, False])
        >>> flags.record(idx, torch.tensor([True, False]))
        >>> flags.commit_pending()                # epoch end
        >>> flags.gate(idx)                       # visit 1 sees visit 0's flags
        tensor([ True, False])
    """

    def __init__(
        self,
        num_samples: int,
        interval: int = 1,
        *,
        initial: bool = False,
        device: str | torch.device = "cpu",
    ):
        if num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        if interval < 1:
            raise ValueError(f"interval (J) must be >= 1, got {interval}")
        self._num_samples = int(num_samples)
        self._interval = int(interval)
        self._initial = bool(initial)
        self._device = torch.device(device)
        # (J, N) ring buffer: slot s holds the flag written at the last visit v with v % J == s.
        self._slots = torch.full(
            (self._interval, self._num_samples),
            self._initial,
            dtype=torch.bool,
            device=self._device,
        )
        self._visits = torch.zeros(self._num_samples, dtype=torch.int64, device=self._device)
        self._pending: list[tuple[Tensor, Tensor]] = []

    @property
    def num_samples(self) -> int:
        """N."""
        return self._num_samples

    @property
    def interval(self) -> int:
        """J."""
        return self._interval

    @property
    def initial(self) -> bool:
        """The gate before the first write."""
        return self._initial

    def _check_idx(self, idx: Tensor) -> Tensor:
        if idx.dtype in (torch.bool,) or idx.dtype.is_floating_point or idx.dtype.is_complex:
            raise TypeError(f"idx must be an integer tensor, got {idx.dtype}")
        if idx.dim() != 1:
            raise ValueError(f"idx must be 1-D (B,), got shape {tuple(idx.shape)}")
        idx = idx.to(device=self._device, dtype=torch.int64)
        if idx.numel():
            bad = (idx < 0) | (idx >= self._num_samples)
            if bool(bad.any()):
                first = int(idx[bad][0])
                raise IndexError(
                    f"sample idx {first} out of range [0, {self._num_samples}) "
                    f"({int(bad.sum())} bad ids in this call)"
                )
        return idx

    def _check_flags(self, idx: Tensor, flags: Tensor) -> Tensor:
        if flags.shape != idx.shape:
            raise ValueError(f"flags {tuple(flags.shape)} must match idx {tuple(idx.shape)}")
        return flags.to(device=self._device).bool()

    def gate(self, idx: Tensor) -> Tensor:
        """The flags that gate these samples at their current visit.

        Args:
            idx: (B,) int64 global sample ids.

        Returns:
            (B,) bool on ``idx``'s device: the flag written at visit v_i - J, or ``initial``.
        """
        out_device = idx.device
        idx = self._check_idx(idx)
        slot = self._visits[idx] % self._interval
        return self._slots[slot, idx].to(out_device)

    def record(self, idx: Tensor, flags: Tensor) -> None:
        """Buffer the flags computed at the current visit (not visible until committed).

        Args:
            idx: (B,) int64 global sample ids.
            flags: (B,) bool new clean flags.
        """
        idx = self._check_idx(idx)
        flags = self._check_flags(idx, flags)
        self._pending.append((idx.clone(), flags.clone()))

    def pending(self) -> tuple[Tensor, Tensor]:
        """This process's records since the last commit, in record order.

        Returns:
            ``(idx, flags)``: (M,) int64 and (M,) bool, on the table's device.
        """
        if not self._pending:
            return (
                torch.empty(0, dtype=torch.int64, device=self._device),
                torch.empty(0, dtype=torch.bool, device=self._device),
            )
        idx = torch.cat([i for i, _ in self._pending])
        flags = torch.cat([f for _, f in self._pending])
        return idx, flags

    def commit(self, idx: Tensor, flags: Tensor) -> None:
        """Apply flag updates (typically every rank's gathered records) and end those visits.

        For each distinct id: write its flag into slot v_i % J, then v_i += 1. An id that appears
        several times (e.g. a sample a padded DDP split showed twice) counts as one visit and the
        last occurrence wins. Also clears this process's pending buffer.

        Args:
            idx: (M,) int64 global sample ids.
            flags: (M,) bool.

        Raises:
            IndexError: an id outside [0, N), naming it. Nothing is applied then.
        """
        idx = self._check_idx(idx)
        flags = self._check_flags(idx, flags)
        if idx.numel():
            uniq, inverse = torch.unique(idx, return_inverse=True)
            order = torch.arange(idx.numel(), device=self._device)
            last = torch.full((uniq.numel(),), -1, dtype=torch.int64, device=self._device)
            last.scatter_reduce_(0, inverse, order, reduce="amax", include_self=True)
            slot = self._visits[uniq] % self._interval
            self._slots[slot, uniq] = flags[last]
            self._visits[uniq] += 1
        self._pending.clear()

    def commit_pending(self) -> None:
        """Single process: commit this process's own records."""
        self.commit(*self.pending())

    def current(self) -> Tensor:
        """The flags each sample will be gated by at its next visit.

        Returns:
            (N,) bool.
        """
        slot = self._visits % self._interval
        return self._slots[slot, torch.arange(self._num_samples, device=self._device)]

    def visits(self) -> Tensor:
        """Committed visits per sample, (N,) int64 (a copy)."""
        return self._visits.clone()

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue identically: all generations and visit counters.

        Pending records are not saved: checkpoint at an epoch end, after the commit.
        """
        return {
            "num_samples": self._num_samples,
            "interval": self._interval,
            "initial": self._initial,
            "slots": self._slots.detach().cpu().clone(),
            "visits": self._visits.detach().cpu().clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; clears pending records.

        Raises:
            ValueError: the saved N or J differs from this table's (a resumed run must use the
                same data and ``jump.interval``).
        """
        n, j = int(state["num_samples"]), int(state["interval"])
        if (n, j) != (self._num_samples, self._interval):
            raise ValueError(
                f"flag state is for num_samples={n}, interval={j}; this table has "
                f"num_samples={self._num_samples}, interval={self._interval} "
                "(resume with the same shards and jump.interval)"
            )
        slots, visits = state["slots"], state["visits"]
        if tuple(slots.shape) != (j, n) or tuple(visits.shape) != (n,):
            raise ValueError(
                f"corrupt flag state: slots {tuple(slots.shape)}, visits {tuple(visits.shape)}"
            )
        self._initial = bool(state.get("initial", self._initial))
        self._slots = slots.to(device=self._device, dtype=torch.bool).clone()
        self._visits = visits.to(device=self._device, dtype=torch.int64).clone()
        self._pending.clear()

    def __repr__(self) -> str:
        return (
            f"JumpFlags(num_samples={self._num_samples}, interval={self._interval}, "
            f"initial={self._initial}, clean_now={int(self.current().sum())})"
        )

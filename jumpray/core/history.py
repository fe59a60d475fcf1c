"""Per-sample training history, from the training forward that already runs (no extra inference).

Keyed by the global ``idx``, like :class:`~jumpray.core.flags.JumpFlags`, and updated the same way:
each rank *records* during an epoch; at the epoch end every rank's records are all-gathered and
every rank *commits* the same updates in the same order, so every rank holds the same history.

For each sample:

- **clean-flag rate**: in how many selection epochs (after the warm-up) its committed clean flag
  was set, out of how many selection epochs it was seen (:meth:`SampleHistory.count_flags`);
- **running probabilities**: from epoch ``from_epoch`` on, the mean (``ema = 0``) or the
  bias-corrected exponential moving average (``0 < ema < 1``: s <- ema * s + (1 - ema) * p,
  divided by 1 - ema^v after v visits) of the training forward's softmax(logits / T): p(given)
  exactly, and the k = min(top_k, C) classes with the largest running sums. For C <= k this is
  the whole vector, exact. For C > k each visit contributes its own top k, and only the k largest
  running sums are kept, so a class that drops out of a sample's top k loses its past mass
  (memory stays N x k).

The training forward sees augmented (and, with ``selection.blend``, blended) views with dropout on,
and a model that trains on the sample only while it is selected: these are not the out-of-sample
probabilities confident learning assumes, and :mod:`jumpray.score` lets the measurement decide
(``score.source``). Pure torch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = ["SampleHistory", "merge_top_k"]

_CHUNK = 1 << 18  # rows merged at a time (bounds the temporaries)


def merge_top_k(
    labels_a: Tensor, values_a: Tensor, labels_b: Tensor, values_b: Tensor, k: int
) -> tuple[Tensor, Tensor]:
    """Add two sparse rows of (label, value) pairs per sample and keep the k largest sums.

    Args:
        labels_a, values_a: (M, ka) int64 labels (-1 = empty slot) and float values.
        labels_b, values_b: (M, kb) the same; a label appears at most once per row of each.
        k: slots kept.

    Returns:
        ``(labels, values)``: (M, k), largest sum first, ties to the lower label; -1 and 0 in slots
        left empty.
    """
    labels = torch.cat([labels_a, labels_b], dim=1).long()
    values = torch.cat([values_a, values_b], dim=1).to(values_a.dtype)
    values = torch.where(labels < 0, torch.full_like(values, -torch.inf), values)
    labels, order = labels.sort(dim=1, stable=True)
    values = values.gather(1, order)
    # A label present in both rows sits twice, side by side: fold the second into the first.
    dup = (labels[:, 1:] == labels[:, :-1]) & (labels[:, 1:] >= 0)
    folded = values.clone()
    folded[:, :-1] += torch.where(dup, values[:, 1:], torch.zeros_like(values[:, 1:]))
    folded[:, 1:] = torch.where(dup, torch.full_like(folded[:, 1:], -torch.inf), folded[:, 1:])
    # A stable sort of -value keeps the ascending label order among equal sums.
    best = torch.argsort(-folded, dim=1, stable=True)[:, :k]
    out_labels, out_values = labels.gather(1, best), folded.gather(1, best)
    empty = torch.isinf(out_values)
    return out_labels.masked_fill(empty, -1), out_values.masked_fill(empty, 0.0)


class SampleHistory:
    """Clean-flag counts and running probabilities per sample (module docstring).

    Args:
        num_samples: N; ids are 0..N-1.
        num_classes: C.
        top_k: classes kept per sample (min(top_k, C)).
        from_epoch: the first epoch whose probabilities count.
        ema: 0 = plain mean over the counted epochs; in (0, 1) = exponential moving average.

    Example:
        >>> h = SampleHistory(3, 2)
        >>> h.record(torch.tensor([0, 2]), torch.tensor([1, 0]),
        ...          torch.tensor([[0.2, 0.8], [0.6, 0.4]]), epoch=0)
        >>> h.commit(*h.pending())
        >>> h.lookup(torch.tensor([0]))["prob_given"]
        tensor([0.8000])
    """

    def __init__(
        self,
        num_samples: int,
        num_classes: int,
        *,
        top_k: int = 10,
        from_epoch: int = 0,
        ema: float = 0.0,
    ):
        if not 0.0 <= ema < 1.0:
            raise ValueError(f"ema must be in [0, 1), got {ema}")
        n, self.num_classes = int(num_samples), int(num_classes)
        self.k = min(int(top_k), self.num_classes)
        self.from_epoch, self.ema = int(from_epoch), float(ema)
        self.top_labels = torch.full((n, self.k), -1, dtype=torch.int32)
        self.top_sums = torch.zeros((n, self.k), dtype=torch.float32)
        self.given_sum = torch.zeros(n, dtype=torch.float32)
        self.weight = torch.zeros(n, dtype=torch.float32)  # normaliser of the sums
        self.clean_count = torch.zeros(n, dtype=torch.int32)
        self.flag_visits = torch.zeros(n, dtype=torch.int32)
        self._pending: list[tuple[Tensor, Tensor]] = []

    @property
    def num_samples(self) -> int:
        """N."""
        return int(self.weight.numel())

    @property
    def row_width(self) -> int:
        """Columns of a pending record: p(given), k labels, k probabilities."""
        return 1 + 2 * self.k

    def record(self, idx: Tensor, given_label: Tensor, probs: Tensor, *, epoch: int) -> None:
        """Buffer one batch's probabilities (no-op before ``from_epoch``).

        Args:
            idx: (B,) int64 sample ids.
            given_label: (B,) int64.
            probs: (B, C) softmax probabilities of the training forward (any device).
            epoch: the current epoch.
        """
        if epoch < self.from_epoch or idx.numel() == 0:
            return
        p = probs.detach().float()
        top, labels = torch.topk(p, self.k, dim=1, sorted=True)
        given = p.gather(1, given_label.to(p.device).long()[:, None])
        rows = torch.cat([given, labels.float(), top], dim=1).cpu()
        self._pending.append((idx.detach().cpu().long(), rows))

    def pending(self) -> tuple[Tensor, Tensor]:
        """This process's records since the last commit: (M,) int64 idx, (M, 1 + 2k) float32."""
        if not self._pending:
            return torch.zeros(0, dtype=torch.int64), torch.zeros(0, self.row_width)
        return torch.cat([i for i, _ in self._pending]), torch.cat([r for _, r in self._pending])

    def commit(self, idx: Tensor, rows: Tensor) -> None:
        """Fold gathered records into the running sums (every rank, same order); clears pending.

        Args:
            idx: (M,) int64 ids; each sample appears at most once per commit (one visit per epoch).
            rows: (M, 1 + 2k) records from :meth:`pending`.
        """
        self._pending = []
        decay = self.ema if self.ema > 0 else 1.0
        gain = 1.0 - self.ema if self.ema > 0 else 1.0
        idx, rows = idx.long(), rows.float()
        for start in range(0, idx.numel(), _CHUNK):
            ids, r = idx[start : start + _CHUNK], rows[start : start + _CHUNK]
            new_labels = r[:, 1 : 1 + self.k].round().long()
            labels, sums = merge_top_k(
                self.top_labels[ids].long(),
                self.top_sums[ids] * decay,
                new_labels,
                r[:, 1 + self.k :] * gain,
                self.k,
            )
            self.top_labels[ids] = labels.int()
            self.top_sums[ids] = sums
            self.given_sum[ids] = self.given_sum[ids] * decay + r[:, 0] * gain
            self.weight[ids] = self.weight[ids] * decay + gain

    def count_flags(self, idx: Tensor, flags: Tensor) -> None:
        """Count one selection epoch's committed flags: (M,) ids and (M,) bool (gathered)."""
        idx = idx.long().cpu()
        self.flag_visits.index_add_(0, idx, torch.ones(idx.numel(), dtype=torch.int32))
        self.clean_count.index_add_(0, idx, flags.cpu().to(torch.int32))

    def lookup(self, idx: Tensor) -> dict[str, Tensor]:
        """The history of some samples.

        Returns:
            ``prob_given`` (B,) float32 (NaN without a counted visit), ``top_labels`` (B, k) int64
            (-1 = empty), ``top_probs`` (B, k) float32, ``clean_rate`` (B,) float32 (NaN before
            any selection epoch), ``visits`` (B,) float32 (the normaliser: counted visits for the
            mean).
        """
        idx = idx.long()
        w = self.weight[idx]
        safe = torch.where(w > 0, w, torch.ones_like(w))
        nan = torch.full_like(w, torch.nan)
        fv = self.flag_visits[idx].float()
        return {
            "prob_given": torch.where(w > 0, self.given_sum[idx] / safe, nan),
            "top_labels": self.top_labels[idx].long(),
            "top_probs": self.top_sums[idx] / safe[:, None],
            "clean_rate": torch.where(
                fv > 0, self.clean_count[idx].float() / torch.clamp(fv, min=1.0), nan
            ),
            "visits": w,
        }

    def state_dict(self) -> dict[str, Any]:
        """The tables and settings (pending records are not saved: checkpoint after a commit)."""
        return {
            "num_classes": self.num_classes,
            "k": self.k,
            "from_epoch": self.from_epoch,
            "ema": self.ema,
            **{
                name: getattr(self, name).clone()
                for name in (
                    "top_labels",
                    "top_sums",
                    "given_sum",
                    "weight",
                    "clean_count",
                    "flag_visits",
                )
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`.

        Raises:
            ValueError: a history of another N, C or k (resume with the same data and
                ``score.top_k``).
        """
        shape = tuple(state["top_labels"].shape)
        if shape != tuple(self.top_labels.shape) or int(state["num_classes"]) != self.num_classes:
            raise ValueError(
                f"history state is for {shape} (N, k) and C = {state['num_classes']}; this run "
                f"has {tuple(self.top_labels.shape)} and C = {self.num_classes} (resume with the "
                "same shards and score.top_k)"
            )
        self.from_epoch, self.ema = int(state["from_epoch"]), float(state["ema"])
        for name in ("top_labels", "top_sums", "given_sum", "weight", "clean_count", "flag_visits"):
            setattr(self, name, state[name].clone())
        self._pending = []

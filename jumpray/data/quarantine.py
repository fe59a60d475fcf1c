"""The quarantine table: every sample that could not be used, with the reason (docs/architecture.md).

Under ``data.on_error=skip`` each dropped sample becomes one row ``(key, shard, idx, reason)``;
under ``raise`` the first one becomes a :class:`~jumpray.errors.DataError` instead. Both go through
:meth:`QuarantineLog.add`, so the two policies can never disagree about what is bad.

Keys the reader invents for samples it knows of but could not see (a truncated or missing tar
whose ``index.json`` entry promised more samples) have the form ``<lost-N>`` (N = 0, 1, ... within
that shard); their idx is -1.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq

from jumpray.errors import DataError

__all__ = [
    "QUARANTINE_SCHEMA",
    "OnError",
    "QuarantineLog",
    "lost_key",
    "empty_quarantine",
    "summarize_reasons",
    "check_quarantine_fraction",
]

OnError = Literal["raise", "skip"]
ON_ERROR_CHOICES = ("raise", "skip")

QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("key", pa.string()),
        pa.field("shard", pa.string()),
        pa.field("idx", pa.int64()),
        pa.field("reason", pa.string()),
    ]
)


def lost_key(number: int) -> str:
    """The key recorded for the ``number``-th sample a shard lost (see the module docstring)."""
    return f"<lost-{number}>"


def summarize_reasons(reasons: Sequence[str], top: int = 3) -> str:
    """The most common reasons, ``"500 x truncated tar; 2 x no cls member"`` (numbers inside a
    reason, such as a label or an image size, are folded so alike reasons count together)."""
    counts = Counter(re.sub(r"\d+", "N", r) for r in reasons)
    return "; ".join(f"{n} x {reason}" for reason, n in counts.most_common(top))


def check_quarantine_fraction(
    reasons: Sequence[str], rows_in: int, max_fraction: float, *, what: str
) -> None:
    """Fail when more than ``max_fraction`` of ``rows_in`` samples were quarantined.

    A folder-wide problem (a wrong ``--root``, a tar cut in half, images that are not images)
    would otherwise pass as "N samples quarantined" with exit 0; past a few percent a loss is no
    longer noise in the data but a mistake the user must see.

    Args:
        reasons: one reason per quarantined sample.
        rows_in: the samples there were (used + quarantined).
        max_fraction: ``data.max_quarantine_fraction``.
        what: where, for the message (``"fm1k: of the 1000 samples"``).

    Raises:
        DataError: with the counts and the most common reasons.
    """
    n = len(reasons)
    if rows_in <= 0 or n <= max_fraction * rows_in:
        return
    raise DataError(
        f"{what}, {n} ({n / rows_in:.1%}) are unusable (quarantined), more than "
        f"data.max_quarantine_fraction={max_fraction:g} allows; most common reasons: "
        f"{summarize_reasons(reasons)}",
        fix="repair the data or the paths given, or raise data.max_quarantine_fraction (up to "
        "1) to accept the loss",
    )


def empty_quarantine() -> pa.Table:
    """A quarantine table with no rows."""
    return QUARANTINE_SCHEMA.empty_table()


class QuarantineLog:
    """Collects bad samples under one ``on_error`` policy.

    Args:
        on_error: ``raise`` raises on the first :meth:`add`; ``skip`` records the row.
        fix: the advice attached to a raised DataError.
    """

    def __init__(self, on_error: OnError = "raise", *, fix: str | None = None):
        if on_error not in ON_ERROR_CHOICES:
            raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, got {on_error!r}")
        self.on_error = on_error
        self.fix = fix or "repair or remove the sample, or set data.on_error=skip to quarantine it"
        self.rows: list[tuple[str, str, int, str]] = []

    def add(self, *, key: str, shard: str, reason: str, idx: int = -1) -> None:
        """Record one bad sample, or raise under ``raise``.

        Raises:
            DataError: naming the shard, key and reason, when the policy is ``raise``.
        """
        if self.on_error == "raise":
            raise DataError(reason, shard=shard, key=key, fix=self.fix)
        self.rows.append((key, shard, int(idx), reason))

    def extend(self, rows: Iterable[tuple[str, str, int, str]]) -> None:
        """Add already-policed rows (from another process) without re-checking the policy."""
        self.rows.extend(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def to_table(self) -> pa.Table:
        """The rows as a pyarrow Table with :data:`QUARANTINE_SCHEMA`."""
        if not self.rows:
            return empty_quarantine()
        keys, shards, idx, reasons = zip(*self.rows, strict=True)
        return pa.table(
            [list(keys), list(shards), list(idx), list(reasons)], schema=QUARANTINE_SCHEMA
        )

    def write(self, path: str | Path) -> Path:
        """Write the table as Parquet (an empty table is written too: "none" is an answer)."""
        pq.write_table(self.to_table(), path)
        return Path(path)

"""The quarantine table: every sample that could not be used, with the reason (DESIGN §5).

Under ``data.on_error=skip`` each dropped sample becomes one row ``(key, shard, idx, reason)``;
under ``raise`` the first one becomes a :class:`~jumpray.errors.DataError` instead. Both go through
:meth:`QuarantineLog.add`, so the two policies can never disagree about what is bad.

Keys the reader invents for samples it knows of but could not see (a truncated or missing tar
whose ``index.json`` entry promised more samples) have the form ``<lost-N>`` (N = 0, 1, ... within
that shard); their idx is -1.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq

from jumpray.errors import DataError

__all__ = ["QUARANTINE_SCHEMA", "OnError", "QuarantineLog", "lost_key", "empty_quarantine"]

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

"""``labels.parquet``: its schema, and the decision passes over it (pyarrow only, no Ray).

The scoring pipeline writes every scored row once, aside, to a hidden *raw* table in the output
folder while a :class:`~jumpray.score.rules.LabelRule` observes pass 0. :func:`decide_table` then
reads the raw table back in record batches for the rule's remaining passes, and a last pass writes
the final table with the decided columns (:data:`~jumpray.score.rules.DECISION_COLUMNS`) to a
temporary name, feeds the summary statistics, and renames it to ``labels.parquet``: a reader never
sees a half-decided table, and memory stays bounded by the batch size and the rule's state.

Columns (docs/contract.md, 'Files written by score and clean'): ``key``, ``shard``, ``idx``,
``given_label``, ``clean_label`` (when the shards carry it; null where unknown),
``predicted_label``, ``label_score``, ``is_label_issue``, ``rank`` (1 = most suspicious issue;
null = not an issue), ``class_threshold`` (the decision's threshold for the sample's given label),
``prob_given``, ``pred_prob``, ``margin``, ``bit_loss_mean``, ``bit_loss_var``, ``semantic_prob``,
``votes`` (-1 without a scoring pass), ``train_clean_rate`` (the training history's clean-flag rate;
NaN without one, :mod:`jumpray.score.sources`), ``top_labels`` / ``top_probs`` (fixed-size lists of
k = min(``score.top_k``, C): the most probable classes, most probable first).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from jumpray.files import atomic_path
from jumpray.score.rules import LabelRule

__all__ = ["labels_schema", "to_table", "iter_table", "decide_table", "RULE_COLUMNS"]

# What a rule reads in its passes.
RULE_COLUMNS = ("idx", "given_label", "prob_given", "top_labels", "top_probs", "label_score")
_READ_ROWS = 65_536


def labels_schema(*, has_clean_labels: bool, top_k: int, decided: bool = True) -> pa.Schema:
    """The label table's schema; ``decided=False`` is the raw table (no ``rank`` and
    ``class_threshold`` yet)."""
    fields = [
        pa.field("key", pa.string()),
        pa.field("shard", pa.string()),
        pa.field("idx", pa.int64()),
        pa.field("given_label", pa.int64()),
        pa.field("predicted_label", pa.int64()),
        pa.field("label_score", pa.float64()),
        pa.field("is_label_issue", pa.bool_()),
    ]
    if has_clean_labels:
        fields.insert(4, pa.field("clean_label", pa.int64()))
    if decided:
        fields += [pa.field("rank", pa.int64()), pa.field("class_threshold", pa.float64())]
    fields += [
        pa.field(name, pa.float64())
        for name in ("prob_given", "pred_prob", "margin", "bit_loss_mean", "bit_loss_var")
    ]
    fields += [
        pa.field("semantic_prob", pa.float64()),
        pa.field("votes", pa.int64()),
        pa.field("train_clean_rate", pa.float64()),
        pa.field("top_labels", pa.list_(pa.int64(), int(top_k))),
        pa.field("top_probs", pa.list_(pa.float32(), int(top_k))),
    ]
    return pa.schema(fields)


def _column(values: np.ndarray, f: pa.Field) -> pa.Array:
    if f.name == "clean_label":
        return pa.array(values, type=f.type, mask=values < 0)
    if f.name == "rank":
        return pa.array(values, type=f.type, mask=values <= 0)
    if pa.types.is_string(f.type):
        return pa.array(values.tolist(), type=f.type)
    if pa.types.is_fixed_size_list(f.type):
        flat = pa.array(values.reshape(-1), type=f.type.value_type)
        return pa.FixedSizeListArray.from_arrays(flat, f.type.list_size)
    return pa.array(values, type=f.type)


def to_table(batch: Mapping[str, np.ndarray], schema: pa.Schema) -> pa.Table:
    """One batch of numpy columns as a table of ``schema`` (nulls for unknown clean labels and
    for the rank of non-issues)."""
    return pa.Table.from_arrays(
        [_column(np.asarray(batch[f.name]), f) for f in schema], schema=schema
    )


def _numpy(col: pa.Array) -> np.ndarray:
    if pa.types.is_fixed_size_list(col.type):
        return col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), col.type.list_size)
    if col.null_count and pa.types.is_integer(col.type):
        return col.fill_null(-1).to_numpy(zero_copy_only=False)
    return col.to_numpy(zero_copy_only=False)


def iter_table(
    path: str | Path, *, columns: Sequence[str] | None = None, batch_rows: int = _READ_ROWS
) -> Iterator[dict[str, np.ndarray]]:
    """Read a label table in record batches of numpy columns (null integers read as -1).

    Args:
        path: a Parquet file written with :func:`labels_schema`.
        columns: the columns to read (those present); None = all.
        batch_rows: rows per batch.
    """
    reader = pq.ParquetFile(path)
    names = reader.schema_arrow.names
    wanted = [c for c in columns if c in names] if columns is not None else None
    for rb in reader.iter_batches(batch_size=batch_rows, columns=wanted):
        yield {name: _numpy(rb.column(name)) for name in rb.schema.names}


def decide_table(
    raw_path: str | Path,
    path: str | Path,
    rule: LabelRule,
    *,
    schema: pa.Schema,
    stats: Any = None,
    first_pass: int = 1,
) -> int:
    """Run the rule's passes from ``first_pass`` over the raw table, then write the final table.

    Args:
        raw_path: the raw table (every row, written once).
        path: ``labels.parquet`` (written to a temporary name, renamed when complete).
        rule: the decision; passes before ``first_pass`` were fed while the raw table was written.
        schema: the final schema (:func:`labels_schema` with ``decided=True``).
        stats: a :class:`~jumpray.score.summary.LabelStats` fed every final row, or None.
        first_pass: the first pass still to run over the raw table.

    Returns:
        The number of rows written.
    """
    for p in range(first_pass, rule.num_passes):
        for batch in iter_table(raw_path, columns=RULE_COLUMNS):
            rule.observe(p, batch)
        rule.end_pass(p)
    path = Path(path)
    rows = 0
    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        for batch in iter_table(raw_path):
            batch |= rule.decide(batch)
            writer.write_table(to_table(batch, schema))
            if stats is not None:
                stats.update(batch)
            rows += len(batch["idx"])
    return rows

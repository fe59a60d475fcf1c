"""The data layer: shards in and out, streamed by Ray Data, safe (docs/contract.md, docs/architecture.md).

Public names are re-exported lazily: ``import jumpray.data`` imports neither Ray, webdataset nor
PIL; each name loads its module on first use.

- converting sources to shards (:mod:`jumpray.data.convert`): :func:`write_arrays`,
  :func:`write_fashion_mnist`, :func:`write_from_list`, :func:`write_from_folder`, all through
  :class:`ShardWriter`
- reading shards: :func:`read_shards` (Ray Data) -> :class:`ShardSource`, :func:`scan_folder`
  (no Ray), :func:`iter_plain` (the webdataset package, one process, for comparison)
- chosen samples by (shard, key): :func:`copy_samples` (into a new folder),
  :func:`read_sample_images` (previews)
- per batch: :func:`decode_image`, :func:`make_augmenter` / :class:`Augmenter`
- contract: :mod:`jumpray.data.schema` (its :func:`parse_sample` is the one sample parser of
  every reader), the quarantine table :mod:`jumpray.data.quarantine`
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "ShardWriter": "writer",
    "ProgressLog": "writer",
    "write_arrays": "convert",
    "write_fashion_mnist": "convert",
    "write_from_list": "convert",
    "write_from_folder": "convert",
    "read_list_file": "convert",
    "apply_noise": "convert",
    "read_shards": "shards",
    "scan_folder": "scan",
    "read_shard_rows": "scan",
    "ShardSource": "shards",
    "ShardInfo": "shards",
    "FolderScan": "scan",
    "iter_plain": "plain_reader",
    "decode_image": "decode",
    "resolve_normalization": "decode",
    "make_augmenter": "augment",
    "Augmenter": "augment",
    "augment_batch": "augment",
    "ShardIndex": "schema",
    "read_index": "schema",
    "ParsedSample": "schema",
    "parse_sample": "schema",
    "copy_samples": "subset",
    "read_sample_images": "subset",
    "QuarantineLog": "quarantine",
    "QUARANTINE_SCHEMA": "quarantine",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'jumpray.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"jumpray.data.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

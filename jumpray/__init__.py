"""jumpray: find and learn through wrong labels in web-crawled image data with Jump-teaching on Ray.

Importing ``jumpray`` is cheap: it pulls in neither torch, Ray, MLflow nor webdataset. The
public functions (docs/api.md) load :mod:`jumpray.api` on first use:

- :func:`clean`, :func:`train_model`, :func:`score_shards`, :func:`tune_sweep`: the commands
  ``jumpray clean`` / ``train`` / ``score`` / ``tune`` (``jumpray.train``, ``jumpray.score`` and
  ``jumpray.tune`` are packages, so those three are also ``jumpray.api.train`` / ``score`` /
  ``tune``);
- :func:`find_label_issues`, :func:`rank_label_issues`: the clean job's decision on arrays;
- :func:`read_shards`, :func:`write_shards`: shard folders for your own Ray Data pipelines.

The layers and their import direction are in docs/architecture.md ("Layers") and enforced by
``tests/unit/test_architecture.py``.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "clean",
    "train_model",
    "score_shards",
    "tune_sweep",
    "find_label_issues",
    "rank_label_issues",
    "read_shards",
    "write_shards",
    "CleanResult",
    "ScoreResult",
    "TrainResult",
    "TuneResult",
]
# Loaded from jumpray.api on first use.
_API = frozenset(__all__[1:])


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'jumpray' has no attribute {name!r}")
    value = getattr(importlib.import_module("jumpray.api"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

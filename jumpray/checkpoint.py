"""Save and load the full training state as one versioned file in a folder (torch only).

A checkpoint folder holds ``state.pt`` with: the method state (networks, optimizers, schedulers,
AMP scaler, all flag generations, the blend generator), the epoch just finished, RNG states, the
resolved config, the given labels and the list of snapshot epochs; and ``meta.json`` (human
readable: format, epoch, method, num_classes). Files are written under a temporary name and
renamed, so a crash never leaves a half checkpoint (docs/architecture.md, 'Data safety').
"""

from __future__ import annotations

import os
import pickle
import posixpath
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jumpray.errors import DataError, UsageError
from jumpray.files import atomic_path, write_json

__all__ = [
    "FORMAT",
    "save_checkpoint",
    "load_checkpoint",
    "rng_state",
    "restore_rng_state",
    "STATE_FILE",
    "require_inside",
]

FORMAT = "jumpray-checkpoint/1"
STATE_FILE = "state.pt"


def _canonical(path: str | Path) -> str:
    """A path in one comparable form: a local path resolved (links and ``..`` followed), a URI
    or a filesystem path of an object store (``s3://bucket/key``, ``bucket/key``) normalised
    without its scheme (Ray Train names a stored checkpoint without it)."""
    text = os.fspath(path)
    if "://" in text:
        return posixpath.normpath(text.split("://", 1)[1])
    if os.path.isabs(text):
        return os.path.realpath(text)
    return posixpath.normpath(text)


def require_inside(path: str | Path, root: str | Path, *, what: str) -> None:
    """Refuse to read ``path`` unless it lies inside the configured storage ``root``.

    Restoring a sweep unpickles Tune's state, and resuming a run loads whatever checkpoint the
    run's records name: both must come from the storage the run was configured with, not from a
    link, a ``..`` or an edited record that points elsewhere.

    Args:
        path: what is about to be read (a local path, a URI, or an object-store path).
        root: the configured storage (``--out``, ``scaling.storage_path``, ...).
        what: how the error names ``path`` (``"--resume: Tune's state"``).

    Raises:
        UsageError: ``path`` is outside ``root``; the message names both.
    """
    inner, outer = _canonical(path), _canonical(root)
    if inner != outer and not inner.startswith(outer.rstrip("/") + "/"):
        raise UsageError(
            f"{what} {path} is outside the configured storage {root} (it resolves to {inner}); "
            "jumpray only reads run state from there. Remove the link or the edited record, or "
            "start a new run"
        )


def rng_state() -> dict[str, Any]:
    """The Python, NumPy and torch (CPU and CUDA) RNG states, as tensors and plain values only.

    NumPy's state tuple carries an ndarray, which a ``weights_only`` load refuses; it is stored
    as a dict with the key as an int64 tensor instead.
    """
    kind, key, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {
            "kind": str(kind),
            "key": torch.from_numpy(np.asarray(key, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state(
        (
            n["kind"],
            n["key"].numpy().astype(np.uint32),
            n["pos"],
            n["has_gauss"],
            n["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    folder: str | Path, state: dict[str, Any], *, meta: dict[str, Any] | None = None
) -> Path:
    """Write ``state`` (any torch-serialisable dict) atomically to ``folder/state.pt``.

    Args:
        folder: created if missing.
        state: must include ``epoch``; ``format`` is added.
        meta: small JSON-able facts written to ``meta.json`` beside it.

    Returns:
        The folder.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / STATE_FILE) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)
    info = {"format": FORMAT, "epoch": state.get("epoch")} | (meta or {})
    write_json(folder / "meta.json", info)
    return folder


def load_checkpoint(
    folder: str | Path, *, map_location: str | torch.device = "cpu"
) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        DataError: the folder has no ``state.pt`` or it is not a jumpray checkpoint.
    """
    path = Path(folder) / STATE_FILE
    if not path.is_file():
        raise DataError(
            f"no {STATE_FILE} in {folder}",
            fix="pass the checkpoint/ folder written by `jumpray train` or `jumpray clean`",
        )
    # weights_only: tensors, dicts, lists, tuples, strings and numbers only. A checkpoint is a
    # file users pass around; loading one must never run code from it.
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise DataError(
            f"{path} holds objects other than tensors and plain values ({exc.__class__.__name__}: "
            f"{str(exc).splitlines()[0]}); it was not loaded",
            fix="re-create it with this version of jumpray (older versions pickled numpy arrays)",
        ) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise DataError(
            f"{path} is not a {FORMAT} file", fix="re-create it with this version of jumpray"
        )
    return state

"""Atomic writes: the one way jumpray puts a file or a folder in place.

Every output a user or a later step reads (summaries, tables, checkpoints, plots, shard folders)
is written under a temporary name beside its final path and renamed into place, so a reader, a
crash or a Ctrl-C never leaves half a file under the real name. ``os.replace`` is atomic within
one filesystem, which the temporary name beside the target guarantees.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_path",
    "write_text",
    "write_json",
    "write_parquet",
    "replace_tree",
    "copy_tree",
    "temp_name",
]


def temp_name(path: str | Path, tag: str = "tmp") -> Path:
    """A hidden name beside ``path`` that is unique to this process: ``.NAME.TAG-PID``."""
    path = Path(path)
    return path.with_name(f".{path.name}.{tag}-{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is renamed to ``path``, on error removed.

    Example::

        with atomic_path(out / "model.pt") as tmp:
            torch.save(state, tmp)
    """
    path = Path(path)
    tmp = temp_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp)
            else:
                tmp.unlink()
        raise


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_json(path: str | Path, data: Any, *, indent: int = 2) -> Path:
    """Write ``data`` as JSON (non-JSON values by ``str``) to ``path`` atomically."""
    return write_text(path, json.dumps(data, indent=indent, default=str) + "\n")


def write_parquet(path: str | Path, table: Any) -> int:
    """Write a pyarrow Table to ``path`` atomically; returns its row count."""
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return int(table.num_rows)


def replace_tree(src: str | Path, dst: str | Path) -> None:
    """Rename ``src`` to ``dst``; an existing ``dst`` folder is moved aside first, then removed.

    A reader sees either the old folder or the new one, never a mix: the only gap is the instant
    between the two renames, when ``dst`` does not exist.
    """
    src, dst = Path(src), Path(dst)
    if dst.is_dir() and not dst.is_symlink():
        old = temp_name(dst, "old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)


def copy_tree(src: str | Path, dst: str | Path) -> None:
    """Copy the folder ``src`` to ``dst`` via a temporary name, then swap it into place."""
    dst = Path(dst)
    tmp = temp_name(dst)
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        shutil.copytree(src, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_tree(tmp, dst)

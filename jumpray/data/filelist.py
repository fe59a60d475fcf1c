"""The entries of list files and class folders, streamed in source order and never held.

An entry is ``(relpath, label, line)``: the path relative to the root, the label the source gives
and the list-file line it came from (0 for a folder). Each source is a small picklable callable
that reads its file or folder again on every call, so a converter can take several passes (labels
first, images second, or one range per parallel task) while only the current line is in memory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from jumpray.errors import DataError

__all__ = [
    "Entry",
    "iter_list_file",
    "ListEntries",
    "FolderEntries",
    "MemoryEntries",
    "walk_sorted",
]

Entry = tuple[str, int, int]


def iter_list_file(path: str | Path, *, with_labels: bool = True) -> Iterator[Entry]:
    """Parse a ``relpath label`` list (or, ``with_labels=False``, a ``relpath`` key list) lazily.

    Blank lines and lines starting with ``#`` are skipped. The path is everything before the last
    whitespace-separated field, so paths may contain spaces.

    Yields:
        (relpath, label, line number) in file order (label -1 for a key list).

    Raises:
        DataError: the file is missing, or a line is malformed (the message names file and line).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"list file {path} not found")
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, start=1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            if not with_labels:
                yield text, -1, number
                continue
            parts = text.rsplit(None, 1)
            if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
                raise DataError(
                    f"{path}, line {number}: expected 'relative/path.jpg LABEL' with an integer "
                    f"label, got {text[:120]!r}",
                    fix="fix or remove that line",
                )
            yield parts[0], int(parts[1]), number


@dataclass(frozen=True)
class ListEntries:
    """The lines of a ``relpath label`` list with label <= ``max_label`` (all when None)."""

    path: Path
    max_label: int | None = None

    def __call__(self) -> Iterator[Entry]:
        for relpath, label, line in iter_list_file(self.path):
            if self.max_label is None or label <= self.max_label:
                yield relpath, label, line


def walk_sorted(folder: Path) -> Iterator[str]:
    """Posix paths relative to ``folder`` of the files below it, in sorted path order.

    The order is that of ``sorted(folder.rglob("*"))`` (paths compare part by part, so a depth-first
    walk with each folder's names sorted gives it), with one folder's listing in memory at a time.
    Like ``rglob``, it does not descend into symlinked folders and skips unreadable ones.
    """
    try:
        with os.scandir(folder) as it:
            names = sorted((e.name, e.is_dir(follow_symlinks=False), e.is_file()) for e in it)
    except OSError:
        return
    for name, is_dir, is_file in names:
        if is_dir:
            yield from (f"{name}/{rel}" for rel in walk_sorted(folder / name))
        elif is_file:
            yield name


@dataclass(frozen=True)
class FolderEntries:
    """The images of a class-folder tree: class ``classes[i]`` has label i; paths in sorted order.

    Attributes:
        folder: the tree's root.
        classes: the class sub-folder names, in label order.
        suffixes: lower-case file extensions that count as images; other files are ignored.
    """

    folder: Path
    classes: tuple[str, ...]
    suffixes: tuple[str, ...]

    def __call__(self) -> Iterator[Entry]:
        for label, name in enumerate(self.classes):
            for rel in walk_sorted(self.folder / name):
                if os.path.splitext(rel)[1].lower() in self.suffixes:
                    yield f"{name}/{rel}", label, 0

    def count_ignored(self) -> int:
        """Files below the class folders without an image extension."""
        return sum(
            os.path.splitext(rel)[1].lower() not in self.suffixes
            for name in self.classes
            for rel in walk_sorted(self.folder / name)
        )


@dataclass(frozen=True)
class MemoryEntries:
    """Entries already in memory (a key list's order, resolved through a lookup table)."""

    entries: tuple[Entry, ...]

    def __call__(self) -> Iterator[Entry]:
        return iter(self.entries)

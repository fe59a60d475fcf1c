"""Minimal, defensive tar reading and writing for WebDataset shards (no Ray, no PIL).

Why not :mod:`tarfile`: it ends iteration silently when an archive is cut short (a truncated
shard looks complete), and it offers no cheap way to skip a member's bytes by suffix. This reader
parses the 512-byte headers itself (ustar, GNU long names, pax ``path``/``size``), checks each
header's checksum, reads the data only of members whose suffix is asked for and seeks over the rest
(so a ``.pyd`` or ``.pickle`` member is never even loaded), and reports where and why an archive
ended early. Samples are runs of consecutive members with the same key (WebDataset grouping).
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Container, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from jumpray.data.schema import split_member_name
from jumpray.storage import Location, file_size, open_input

__all__ = ["RawSample", "TarSampleReader", "TarSampleWriter"]

_BLOCK = 512
_ZERO_BLOCK = bytes(_BLOCK)
_REGULAR = (b"0", b"\0", b"7")


@dataclass
class RawSample:
    """One sample as found in a tar.

    Attributes:
        ordinal: position of the sample in its tar (0, 1, ...; counts every sample).
        key: the WebDataset key.
        members: suffix -> bytes for the suffixes asked for; suffix -> None for members present but
            not read.
        complete: False when the archive ended inside this sample (its members may be cut).
    """

    ordinal: int
    key: str
    members: dict[str, bytes | None] = field(default_factory=dict)
    complete: bool = True


def _octal(raw: bytes) -> int:
    if raw and raw[0] & 0x80:  # GNU base-256 for sizes above 8 GiB
        return int.from_bytes(raw[1:], "big")
    text = raw.split(b"\0", 1)[0].strip()
    return int(text, 8) if text else 0


def _parse_pax(data: bytes) -> dict[str, str]:
    out, pos = {}, 0
    while pos < len(data):
        space = data.index(b" ", pos)
        length = int(data[pos:space])
        key, _, value = data[space + 1 : pos + length - 1].partition(b"=")
        out[key.decode("utf-8", "replace")] = value.decode("utf-8", "replace")
        pos += length
    return out


class TarSampleReader:
    """Iterate the samples of one tar, reading only the members whose suffix is wanted.

    After iteration, :attr:`error` is None for a well-formed archive, or a sentence saying where it
    is truncated or corrupt; :attr:`num_samples` counts the samples seen.

    Args:
        path: the tar file (a local path or an object-store URI: read as a stream).
        read_suffixes: suffixes whose bytes are returned; others are skipped unread. The
            attribute may be replaced while iterating (the scan stops reading images once it
            has sampled enough headers); the change applies from the next member read, which
            may already belong to the sample after the one just yielded.
    """

    def __init__(self, path: Location, *, read_suffixes: Container[str]):
        self.path = path
        self.read_suffixes = read_suffixes
        self.error: str | None = None
        self.num_samples = 0

    def _members(self, f: BinaryIO, size: int) -> Iterator[tuple[str, bytes | None]]:
        """Yield (member name, data or None) for regular files; set :attr:`error` on a bad end."""
        offset, long_name, pax = 0, None, {}
        while True:
            header = f.read(_BLOCK)
            if len(header) < _BLOCK:
                self.error = (
                    f"truncated tar: it ends at byte {size} without the end-of-archive marker"
                )
                if offset == 0 and size == 0:
                    self.error = "empty file (0 bytes), not a tar"
                return
            if header == _ZERO_BLOCK:
                return
            try:
                checksum_ok = _octal(header[148:156]) == sum(header[:148]) + 256 + sum(header[156:])
                member_size = _octal(header[124:136])
            except ValueError:
                checksum_ok = False
            if not checksum_ok:
                self.error = f"corrupt tar header at byte {offset} (bad checksum or size field)"
                return
            kind = header[156:157]
            if kind in _REGULAR and "size" in pax:
                member_size = int(pax["size"])
            data_start = offset + _BLOCK
            padded = (member_size + _BLOCK - 1) // _BLOCK * _BLOCK
            if data_start + member_size > size:
                self.error = (
                    f"truncated tar: a member at byte {offset} needs {member_size} bytes, "
                    f"the file ends at byte {size}"
                )
                yield long_name or pax.get("path") or _header_name(header), None
                return
            offset = data_start + padded
            if kind in (b"L", b"x"):  # GNU long name / pax record: applies to the next member
                data = f.read(padded)[:member_size]
                if kind == b"L":
                    long_name = data.rstrip(b"\0").decode("utf-8", "replace")
                else:
                    pax = _parse_pax(data)
                continue
            name = long_name or pax.get("path") or _header_name(header)
            long_name, pax = None, {}
            if kind in _REGULAR:
                if split_member_name(name)[1] in self.read_suffixes:
                    yield name, f.read(padded)[:member_size]
                    continue
                yield name, None
            _skip(f, padded)

    def __iter__(self) -> Iterator[RawSample]:
        size = file_size(self.path)
        with open_input(self.path) as f:
            current: RawSample | None = None
            for name, data in self._members(f, size):
                key, suffix = split_member_name(name)
                if current is None or key != current.key:
                    if current is not None:
                        yield current
                    current = RawSample(ordinal=self.num_samples, key=key)
                    self.num_samples += 1
                if suffix and suffix not in current.members:
                    current.members[suffix] = data
            if current is not None:
                # The archive ended inside (or right after) the last sample: it may be cut.
                current.complete = self.error is None
                yield current


def _skip(f: BinaryIO, n: int) -> None:
    """Move ``n`` bytes ahead: a seek on a file, reads dropped on an object-store stream."""
    if f.seekable():
        f.seek(n, os.SEEK_CUR)
        return
    while n > 0:
        chunk = f.read(min(n, 1 << 20))
        if not chunk:
            return  # the next header read reports the truncation
        n -= len(chunk)


def _header_name(header: bytes) -> str:
    name = header[0:100].split(b"\0", 1)[0]
    if header[257:263] == b"ustar\x00":  # POSIX ustar: a 155-byte prefix holds the directories
        prefix = header[345:500].split(b"\0", 1)[0]
        if prefix:
            name = prefix + b"/" + name
    return name.decode("utf-8", "replace")


class TarSampleWriter:
    """Append samples to one tar (ustar headers, fixed metadata so output is reproducible).

    Args:
        path: the tar to create.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        # Closed in close(), not a context manager: the tar stays open across write() calls.
        self._tar = tarfile.open(self.path, "w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115
        self.num_samples = 0
        self.num_bytes = 0

    def write(self, key: str, members: dict[str, bytes]) -> int:
        """Write one sample's members (suffix -> bytes) in the given order; returns bytes added."""
        added = 0
        for suffix, data in members.items():
            info = tarfile.TarInfo(f"{key}.{suffix}")
            info.size, info.mode, info.mtime = len(data), 0o444, 0
            self._tar.addfile(info, io.BytesIO(data))
            added += _BLOCK + (len(data) + _BLOCK - 1) // _BLOCK * _BLOCK
        self.num_samples += 1
        self.num_bytes += added
        return added

    def close(self) -> None:
        """Write the end-of-archive marker and close the file."""
        self._tar.close()

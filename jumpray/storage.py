"""Where a folder lives: a local path or an object-storage URI (``s3://bucket/prefix``, ``gs://``...).

Every folder jumpray reads or writes (``--shards``, ``--test-shards``, ``--out``, the clean shards,
``scaling.storage_path``) may be a URI that ``pyarrow.fs.FileSystem.from_uri`` resolves. This
module is the one place that tells the two apart and talks to the store:

- reading streams (sequential reads through an 8 MiB buffer, never a full download), and a
  transient error is retried a bounded number of times (:data:`ATTEMPTS`) from where the stream
  broke, then fails with a :class:`StorageError` naming the object;
- writing is done locally and *published*: :func:`push_tree` uploads a finished folder with its
  head file (``index.json``, ``summary.json``) last, so a reader never takes a half-written
  output for a finished one (the same rule :mod:`jumpray.files` keeps on disk);
- the endpoint and credentials come only from the standard environment (``AWS_ENDPOINT_URL``,
  ``AWS_ACCESS_KEY_ID``, ... docs/architecture.md, 'Object storage'); a URI is shown with any
  ``user:secret@`` part removed (:func:`redact`).

Local paths keep using the plain filesystem (no pyarrow on the hot path of local reads).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit, urlunsplit

from jumpray.errors import StorageError

__all__ = [
    "ATTEMPTS",
    "StorageError",
    "Location",
    "is_uri",
    "redact",
    "location",
    "join",
    "name_of",
    "parent_of",
    "same_location",
    "filesystem",
    "exists",
    "is_dir",
    "list_files",
    "file_size",
    "open_input",
    "read_bytes",
    "push_file",
    "push_tree",
    "pull_file",
    "pull_tree",
    "delete",
    "mirror_dir",
    "fetch_folder",
]

# Attempts per object operation (the first try included); pyarrow's S3 client retries each HTTP
# request 3 times on its own underneath.
ATTEMPTS = 4
_BACKOFF_S = (0.5, 2.0, 5.0)
_READ_BUFFER = 8 << 20

Location = str | Path


def is_uri(path: Location | None) -> bool:
    """True for ``scheme://...`` (object storage), False for a local path (or None)."""
    return isinstance(path, str) and "://" in path and not path.startswith("file://")


def redact(path: Location) -> str:
    """``path`` as it may be shown or logged: a URI without its ``user:secret@`` part."""
    text = str(path)
    if not is_uri(text):
        return text
    parts = urlsplit(text)
    if "@" not in parts.netloc:
        return text
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def location(text: str) -> Location:
    """A command-line folder argument: a URI kept as text, a local path as a :class:`Path`.

    (``Path("s3://b/p")`` would fold the ``//`` and turn the URI into a local path.)
    """
    return text.rstrip("/") if is_uri(text) else Path(text)


def join(folder: Location, *names: str) -> Location:
    """``folder/name/...`` for a URI or a path."""
    if is_uri(folder):
        return "/".join([str(folder).rstrip("/"), *names])
    return Path(folder).joinpath(*names)


def name_of(path: Location) -> str:
    """The last component (a tar's file name)."""
    return str(path).rstrip("/").rsplit("/", 1)[-1] if is_uri(path) else Path(path).name


def parent_of(path: Location) -> Location:
    """The folder holding ``path``."""
    return str(path).rstrip("/").rsplit("/", 1)[0] if is_uri(path) else Path(path).parent


@functools.lru_cache(maxsize=16)
def _filesystem_for(base: str) -> Any:
    import pyarrow.fs as pafs

    fs, _ = pafs.FileSystem.from_uri(base)
    return fs


def same_location(a: Location, b: Location) -> bool:
    """True when ``a`` and ``b`` name the same folder (URIs by text, paths resolved)."""
    if is_uri(a) or is_uri(b):
        return redact(str(a)).rstrip("/") == redact(str(b)).rstrip("/")
    return Path(a).resolve() == Path(b).resolve()


def filesystem(uri: str) -> tuple[Any, str]:
    """``(pyarrow FileSystem, path inside it)`` for a URI; one client per bucket and process.

    ``FileSystem.from_uri`` reads ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3`` (an explicit
    ``S3FileSystem()`` would ignore them; docs/architecture.md, 'Object storage').

    Raises:
        StorageError: the URI is not one pyarrow knows, naming it.
    """
    parts = urlsplit(uri)
    if "@" in parts.netloc:  # keys in a URI end up in shell history, logs and job specs
        raise StorageError(
            f"{redact(uri)}: credentials in a URI are refused",
            fix="drop the user:secret@ part and set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY "
            "(or the store's own variables) in the environment",
        )
    base = urlunsplit((parts.scheme, parts.netloc, "", parts.query, ""))
    try:
        fs = _filesystem_for(base)
    except (OSError, ValueError, TypeError) as exc:
        raise StorageError(
            f"cannot open {redact(uri)}: {exc}",
            fix="use s3://bucket/prefix (set AWS_ENDPOINT_URL for an S3-compatible store) or "
            "another URI pyarrow.fs resolves, or a local path",
        ) from None
    host = parts.netloc.rsplit("@", 1)[-1]
    return fs, f"{host}{parts.path}".rstrip("/")


def _retry(what: str, path: Location, call: Callable[[], Any]) -> Any:
    """``call()``, retried on OSError :data:`ATTEMPTS` times in all with back-off."""
    for attempt in range(ATTEMPTS):
        try:
            return call()
        except FileNotFoundError:
            raise
        except OSError as exc:
            if attempt == ATTEMPTS - 1:
                raise StorageError(
                    f"{what} {redact(path)} failed {ATTEMPTS} times: {exc}",
                    fix="check the endpoint (AWS_ENDPOINT_URL), the credentials and the "
                    "network, then re-run the command (finished work is kept)",
                ) from None
            time.sleep(_BACKOFF_S[min(attempt, len(_BACKOFF_S) - 1)])
    raise AssertionError("unreachable")


def _info(path: Location) -> Any:
    fs, inner = filesystem(str(path))
    return _retry("looking up", path, lambda: fs.get_file_info(inner))


def exists(path: Location) -> bool:
    """True when a file or folder is there."""
    if not is_uri(path):
        return Path(path).exists()
    import pyarrow.fs as pafs

    return _info(path).type != pafs.FileType.NotFound


def is_dir(path: Location) -> bool:
    """True for a folder (an object-store prefix with at least one object under it)."""
    if not is_uri(path):
        return Path(path).is_dir()
    import pyarrow.fs as pafs

    if _info(path).type == pafs.FileType.Directory:
        return True
    return bool(_listing(path, recursive=False))


def _listing(folder: Location, *, recursive: bool) -> list[Any]:
    import pyarrow.fs as pafs

    fs, inner = filesystem(str(folder))
    selector = pafs.FileSelector(inner, allow_not_found=True, recursive=recursive)
    return _retry("listing", folder, lambda: fs.get_file_info(selector))


def list_files(folder: Location, suffix: str = "", *, recursive: bool = False) -> list[str]:
    """Names (relative to ``folder``, sorted) of the regular files ending with ``suffix``."""
    if not is_uri(folder):
        root = Path(folder)
        found = root.rglob(f"*{suffix}") if recursive else root.glob(f"*{suffix}")
        return sorted(str(p.relative_to(root)) for p in found if p.is_file())
    import pyarrow.fs as pafs

    _, inner = filesystem(str(folder))
    names = [
        info.path[len(inner) + 1 :]
        for info in _listing(folder, recursive=recursive)
        if info.type == pafs.FileType.File and info.path.endswith(suffix)
    ]
    return sorted(names)


def file_size(path: Location) -> int:
    """The size in bytes."""
    if not is_uri(path):
        return os.path.getsize(path)
    info = _info(path)
    if info.size is None:
        raise StorageError(f"{redact(path)} does not exist", fix="check the path")
    return int(info.size)


class _RetryingStream(io.RawIOBase):
    """A sequential read stream that reopens and skips ahead when the store drops it mid-read."""

    def __init__(self, path: str):
        self._path = path
        self._pos = 0
        self._stream = self._open()

    def _open(self) -> Any:
        fs, inner = filesystem(self._path)
        return _retry(
            "opening",
            self._path,
            lambda: fs.open_input_stream(inner, compression=None, buffer_size=_READ_BUFFER),
        )

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        for attempt in range(ATTEMPTS):
            try:
                data = self._stream.read(len(buffer))
                break
            except OSError as exc:
                if attempt == ATTEMPTS - 1:
                    raise StorageError(
                        f"reading {redact(self._path)} failed {ATTEMPTS} times at byte "
                        f"{self._pos}: {exc}",
                        fix="check the endpoint and the network, then re-run the command",
                    ) from None
                time.sleep(_BACKOFF_S[min(attempt, len(_BACKOFF_S) - 1)])
                self._reopen_at(self._pos)
        n = len(data)
        buffer[:n] = data
        self._pos += n
        return n

    def _reopen_at(self, pos: int) -> None:
        """A fresh stream positioned at ``pos`` (the bytes before it are read and dropped)."""
        with contextlib.suppress(OSError):
            self._stream.close()
        self._stream = self._open()
        left = pos
        while left:
            chunk = self._stream.read(min(left, _READ_BUFFER))
            if not chunk:
                raise OSError(f"the object is shorter than {pos} bytes now")
            left -= len(chunk)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._stream.close()
        super().close()


def open_input(path: Location) -> BinaryIO:
    """A buffered binary stream over the file (sequential reads; not seekable for a URI)."""
    if not is_uri(path):
        return open(path, "rb", buffering=1 << 20)  # noqa: SIM115 - the caller closes it
    return io.BufferedReader(_RetryingStream(str(path)), buffer_size=1 << 20)  # type: ignore[return-value]


def read_bytes(path: Location) -> bytes:
    """The whole (small) file."""
    with open_input(path) as f:
        return f.read()


def _upload(local: Path, uri: str) -> None:
    fs, inner = filesystem(uri)

    def put() -> None:
        with local.open("rb") as src, fs.open_output_stream(inner) as dst:
            while chunk := src.read(_READ_BUFFER):
                dst.write(chunk)

    _retry("writing", uri, put)


def push_tree(
    local: Path, uri: str, *, head: str | None = None, skip: Sequence[str] = ()
) -> list[str]:
    """Upload every file under ``local`` to ``uri``; ``head`` (a top-level name) goes last.

    Args:
        local: the finished folder.
        uri: where it is published.
        head: the file a reader checks for completeness (``index.json``, ``summary.json``),
            uploaded only after everything else is there.
        skip: top-level names not uploaded (work state that lives elsewhere).

    Returns:
        The names uploaded (relative), in upload order.
    """
    names = [
        str(p.relative_to(local))
        for p in sorted(local.rglob("*"))
        if p.is_file() and p.relative_to(local).parts[0] not in skip
    ]
    ordered = [n for n in names if n != head] + [n for n in names if n == head]
    for name in ordered:
        _upload(local / name, f"{uri.rstrip('/')}/{name}")
    return ordered


def push_file(local: Path, uri: str) -> None:
    """Upload one file (an object store writes an object whole: readers never see half)."""
    _upload(local, uri)


def pull_file(uri: str, local: Path) -> None:
    """Download one object to ``local`` (parents created; written under a temporary name)."""
    from jumpray.files import atomic_path

    local.parent.mkdir(parents=True, exist_ok=True)
    with open_input(uri) as src, atomic_path(local) as tmp, tmp.open("wb") as dst:
        while chunk := src.read(_READ_BUFFER):
            dst.write(chunk)


def pull_tree(uri: str, local: Path, *, skip: Sequence[str] = ()) -> list[str]:
    """Download every object under ``uri`` into ``local`` (created); returns the names."""
    names = [n for n in list_files(uri, recursive=True) if n.split("/", 1)[0] not in skip]
    for name in names:
        pull_file(f"{uri.rstrip('/')}/{name}", local / name)
    return names


def delete(path: Location) -> None:
    """Remove a file or a whole folder (missing is fine)."""
    if not is_uri(path):
        p = Path(path)
        if p.is_dir() and not p.is_symlink():
            import shutil

            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
        return
    import pyarrow.fs as pafs

    fs, inner = filesystem(str(path))
    info = _info(path)
    if info.type == pafs.FileType.File:
        _retry("deleting", path, lambda: fs.delete_file(inner))
    elif info.type == pafs.FileType.Directory or _listing(path, recursive=False):
        _retry("deleting", path, lambda: fs.delete_dir(inner))


def mirror_dir(uri: str) -> Path:
    """The local folder that stands in for ``uri`` while a command builds its outputs.

    ``JUMPRAY_WORK_DIR`` (default ``~/.cache/jumpray/work``) / a name made of the URI's last
    component and a hash of the whole (redacted) URI, so two URIs never share one.
    """
    root = Path(os.environ.get("JUMPRAY_WORK_DIR", Path.home() / ".cache" / "jumpray" / "work"))
    clean = redact(uri)
    digest = hashlib.sha256(clean.encode()).hexdigest()[:12]
    return root / f"{name_of(clean) or 'out'}-{digest}"


def fetch_folder(uri: str) -> Path:
    """A fresh local copy of the folder at ``uri`` (a checkpoint to load), in its
    :func:`mirror_dir`.

    Raises:
        StorageError: nothing is stored under ``uri``.
    """
    import shutil

    local = mirror_dir(uri)
    shutil.rmtree(local, ignore_errors=True)
    if not pull_tree(uri, local):
        raise StorageError(f"{redact(uri)} holds no files", fix="check the URI")
    return local

"""Fashion-MNIST, the demo dataset: find the idx files, download them if asked, parse them.

Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017) is 60,000 training and 10,000 test 28x28 grey
images in 10 classes, stored in the MNIST idx format (docs/contract.md, 'Command list').
The files are looked for, in order, in ``$JUMPRAY_FASHION_MNIST_DIR``, Debian's
``dataset-fashion-mnist`` folder and the cache folder; then, if allowed, downloaded from
Zalando's mirror into the cache with a checksum check. NumPy and the standard library only.

Checksums: the mirror's .gz files have the MD5s that Zalando publishes (also in the Debian
package's README). Debian re-compressed the files, so its .gz bytes differ (train images:
cf8536b0...) while the decompressed idx payload is what the loaders read. A file therefore passes
if either its .gz MD5 is Zalando's or the MD5 of its decompressed bytes is the one measured on
Debian's files (``dataset-fashion-mnist 0.0~git20200523.55506a9-1``).
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import os
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from jumpray.errors import DataError
from jumpray.log import get_logger

__all__ = [
    "DEBIAN_DIR",
    "FASHION_MNIST_CLASSES",
    "FILES",
    "MIRROR_URL",
    "download_fashion_mnist",
    "find_fashion_mnist",
    "load_fashion_mnist",
    "read_idx",
]

_log = get_logger(__name__)

FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
MIRROR_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
"""Zalando's mirror (the project README's links; the S3 website endpoint serves http only,
which is why the checksum check matters). ``$JUMPRAY_FASHION_MNIST_MIRROR`` overrides it."""

FILES: dict[str, tuple[str, str]] = {
    "train-images": ("train-images-idx3-ubyte", "train"),
    "train-labels": ("train-labels-idx1-ubyte", "train"),
    "test-images": ("t10k-images-idx3-ubyte", "test"),
    "test-labels": ("t10k-labels-idx1-ubyte", "test"),
}
"""Role -> (file stem without ``.gz``, split)."""

# stem -> (MD5 of Zalando's .gz, MD5 of the decompressed idx bytes measured on Debian's files).
_CHECKSUMS: dict[str, tuple[str, str]] = {
    "train-images-idx3-ubyte": (
        "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "f4a8712d7a061bf5bd6d2ca38dc4d50a",
    ),
    "train-labels-idx1-ubyte": (
        "25c81989df183df01b3e8a0aad5dffbe",
        "9018921c3c673c538a1fc5bad174d6f9",
    ),
    "t10k-images-idx3-ubyte": (
        "bef4ecab320f06d8554ea6380940ec79",
        "8181f5470baa50b63fa0f6fddb340f0a",
    ),
    "t10k-labels-idx1-ubyte": (
        "bb300cfdad3c16e7a12a480ee83cd310",
        "15d484375f8d13e6eb1aabb0c3f46965",
    ),
}

_SPLIT_SIZES = {"train": 60_000, "test": 10_000}

# idx type byte -> big-endian numpy dtype (the MNIST format description by LeCun et al.).
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


# --------------------------------------------------------------------------------------------
# Finding the files.


def _default_cache_root() -> Path:
    return Path(os.environ.get("JUMPRAY_DATA_DIR") or Path.home() / ".cache" / "jumpray")


def _resolve(folder: Path, stem: str) -> Path | None:
    """The file for ``stem`` in ``folder``, gzip first, else uncompressed; None if neither."""
    for name in (stem + ".gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def _missing(folder: Path) -> list[str]:
    return [stem + ".gz" for stem, _ in FILES.values() if _resolve(folder, stem) is None]


def find_fashion_mnist(*, download: bool = True, cache_dir: Path | None = None) -> Path | None:
    """Return a folder holding the four Fashion-MNIST idx files (``.gz`` or uncompressed).

    Looks in (1) ``$JUMPRAY_FASHION_MNIST_DIR``, (2) :data:`DEBIAN_DIR`, (3) the cache folder
    ``<cache root>/fashion-mnist``, then (4) downloads into the cache folder if ``download``.

    Args:
        download: allow step (4).
        cache_dir: the cache root; None means ``$JUMPRAY_DATA_DIR`` or ``~/.cache/jumpray``.

    Returns:
        The folder, or None when ``download`` is False and no folder has all four files.

    Raises:
        DataError: ``$JUMPRAY_FASHION_MNIST_DIR`` is set but lacks files, or the download failed.
    """
    env_dir = os.environ.get("JUMPRAY_FASHION_MNIST_DIR")
    if env_dir:
        missing = _missing(Path(env_dir))
        if missing:
            raise DataError(
                f"JUMPRAY_FASHION_MNIST_DIR={env_dir} lacks {', '.join(missing)}",
                fix="put the four idx files there (gzip or not), or unset the variable",
            )
        return Path(env_dir)
    cache = Path(cache_dir or _default_cache_root()) / "fashion-mnist"
    for folder in (DEBIAN_DIR, cache):
        if not _missing(folder):
            return folder
    if not download:
        return None
    download_fashion_mnist(cache)
    return cache


# --------------------------------------------------------------------------------------------
# Downloading.


def _md5_of_file(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _md5_of_gunzipped(path: Path) -> str | None:
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with gzip.open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except (OSError, EOFError, zlib.error):
        return None
    return digest.hexdigest()


def _checksum_ok(path: Path, stem: str) -> bool:
    gz_md5, raw_md5 = _CHECKSUMS[stem]
    return _md5_of_file(path) == gz_md5 or _md5_of_gunzipped(path) == raw_md5


def _fetch(url: str, dest: Path) -> None:
    """Copy ``url`` (http(s) or file://) to ``dest``, streaming."""
    with urllib.request.urlopen(url, timeout=60) as response, open(dest, "wb") as out:
        for block in iter(lambda: response.read(1 << 20), b""):
            out.write(block)


def download_fashion_mnist(dest: Path, *, base_url: str | None = None) -> Path:
    """Download the four ``.gz`` files into ``dest``, checking each one's MD5.

    Each file is written to a temporary name and renamed only once its checksum passes, so a
    failure never leaves a partial or wrong file under the final name. Files already present
    and valid are kept.

    Args:
        dest: target folder (created if needed).
        base_url: mirror URL ending in ``/``; None = ``$JUMPRAY_FASHION_MNIST_MIRROR`` or
            :data:`MIRROR_URL`. ``file://`` URLs work (air-gapped mirrors, tests).

    Returns:
        ``dest``.

    Raises:
        DataError: a file could not be fetched or its checksum is wrong.
    """
    base_url = base_url or os.environ.get("JUMPRAY_FASHION_MNIST_MIRROR") or MIRROR_URL
    if not base_url.endswith("/"):
        base_url += "/"
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    by_hand = (
        f"download the four files by hand from {MIRROR_URL} (e.g. {MIRROR_URL}"
        f"train-images-idx3-ubyte.gz) into {dest}, or install Debian's dataset-fashion-mnist, "
        "or set JUMPRAY_FASHION_MNIST_DIR to a folder holding them"
    )
    for stem, _split in FILES.values():
        final = dest / (stem + ".gz")
        if final.is_file() and _checksum_ok(final, stem):
            continue
        tmp = dest / f".{stem}.gz.part-{os.getpid()}"
        url = base_url + stem + ".gz"
        _log.info("downloading %s -> %s", url, final)
        try:
            _fetch(url, tmp)
            if not _checksum_ok(tmp, stem):
                raise DataError(
                    f"checksum mismatch for {url} (expected MD5 {_CHECKSUMS[stem][0]})",
                    shard=str(final),
                    fix=by_hand,
                )
            os.replace(tmp, final)
        except OSError as exc:  # urllib's URLError and HTTPError are OSErrors
            raise DataError(
                f"could not download {url}: {exc}", shard=str(final), fix=by_hand
            ) from exc
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
    return dest


# --------------------------------------------------------------------------------------------
# Parsing.


def read_idx(path: Path | str) -> np.ndarray:
    """Parse one idx file (gzip-compressed if its name ends in ``.gz``).

    Layout: two zero bytes, a type byte (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), a byte with the number of dimensions n, n big-endian uint32
    sizes, then the values in C order, big-endian.

    Returns:
        An array of the stored shape, in native byte order (uint8 for Fashion-MNIST).

    Raises:
        DataError: naming the file, when it cannot be read, is not idx, or its size disagrees
            with its header (e.g. truncated).
    """
    path = Path(path)
    try:
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
        raise DataError(
            f"cannot read idx file: {exc}", shard=str(path), fix="re-download the file"
        ) from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise DataError(
            f"not an idx file (magic bytes {data[:4].hex() or 'missing'})",
            shard=str(path),
            fix="point the loader at the *-idx?-ubyte(.gz) files",
        )
    dtype, ndim = _IDX_DTYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"truncated idx header ({len(data)} bytes)", shard=str(path))
    shape = tuple(int(s) for s in np.frombuffer(data, ">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise DataError(
            f"idx size mismatch: header {shape} of {dtype.name} needs {expected} bytes, "
            f"file has {len(data)} (truncated or corrupt)",
            shard=str(path),
            fix="re-download the file",
        )
    values = np.frombuffer(data, dtype, offset=header).reshape(shape)
    return values.astype(dtype.newbyteorder("="))


@functools.lru_cache(maxsize=4)
def _load_split(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Parse and validate one split once per process; the arrays are made read-only."""
    images_path = _resolve(root, FILES[f"{split}-images"][0])
    labels_path = _resolve(root, FILES[f"{split}-labels"][0])
    if images_path is None or labels_path is None:
        raise DataError(
            f"Fashion-MNIST {split} files missing in {root}",
            fix="pass --root a folder holding them (or install the Debian package dataset-fashion-mnist)",
        )
    images, labels = read_idx(images_path), read_idx(labels_path)
    n = _SPLIT_SIZES[split]
    if images.shape != (n, 28, 28) or images.dtype != np.uint8:
        raise DataError(
            f"expected ({n}, 28, 28) uint8 images, got {images.shape} {images.dtype}",
            shard=str(images_path),
        )
    num_classes = len(FASHION_MNIST_CLASSES)
    if labels.shape != (n,) or labels.min() < 0 or labels.max() >= num_classes:
        raise DataError(
            f"expected ({n},) labels in 0..9, got shape {labels.shape}, "
            f"range {labels.min()}..{labels.max()}",
            shard=str(labels_path),
        )
    labels = labels.astype(np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def load_fashion_mnist(
    split: str = "train", *, root: Path | None = None, limit: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Load one split of Fashion-MNIST.

    Args:
        split: ``"train"`` (60,000 samples) or ``"test"`` (10,000).
        root: folder with the idx files; None = :func:`find_fashion_mnist` (may download).
        limit: keep only the first ``limit`` samples in file order; None = all.

    Returns:
        ``(images, labels)``: (N, 28, 28) uint8 and (N,) int64 in 0..9, fresh writable copies
        (the parsed split is cached in-process, so repeated calls skip the parsing).

    Raises:
        ValueError: unknown split or negative limit.
        DataError: files missing, unreadable or of the wrong shape.
    """
    if split not in _SPLIT_SIZES:
        raise ValueError(f"unknown split {split!r}; valid splits: {', '.join(_SPLIT_SIZES)}")
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    if root is None:
        root = find_fashion_mnist()
        assert root is not None  # download=True either returns a folder or raises
    images, labels = _load_split(Path(root).resolve(), split)
    stop = None if limit is None else limit
    return images[:stop].copy(), labels[:stop].copy()

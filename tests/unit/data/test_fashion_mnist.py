"""Fashion-MNIST reader: real files on this machine, idx parsing, lookup order, offline download."""

from __future__ import annotations

import gzip
import hashlib
import struct
from pathlib import Path

import numpy as np
import pytest

from jumpray.data import fashion_mnist as fm
from jumpray.errors import DataError

STEMS = [stem for stem, _ in fm.FILES.values()]


def _idx_bytes(values: np.ndarray, type_byte: int) -> bytes:
    header = struct.pack(">BBBB", 0, 0, type_byte, values.ndim)
    header += b"".join(struct.pack(">I", s) for s in values.shape)
    return header + values.astype(values.dtype.newbyteorder(">")).tobytes()


def _write_fake_set(folder: Path, *, gz: bool = True) -> None:
    """Four tiny (2 images, 2 labels) idx files with the real names."""
    folder.mkdir(parents=True, exist_ok=True)
    images = _idx_bytes(np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28), 0x08)
    labels = _idx_bytes(np.array([3, 9], dtype=np.uint8), 0x08)
    for stem in STEMS:
        payload = images if "images" in stem else labels
        if gz:
            (folder / (stem + ".gz")).write_bytes(gzip.compress(payload, mtime=0))
        else:
            (folder / stem).write_bytes(payload)


def _md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


@pytest.fixture
def isolated(monkeypatch, tmp_path):
    """No env override, an empty 'Debian' folder, and a private cache root."""
    monkeypatch.delenv("JUMPRAY_FASHION_MNIST_DIR", raising=False)
    monkeypatch.delenv("JUMPRAY_FASHION_MNIST_MIRROR", raising=False)
    monkeypatch.setattr(fm, "DEBIAN_DIR", tmp_path / "no-debian")
    return tmp_path / "cache"


# ---------------------------------------------------------------------------- real files


def test_train_split(fashion_mnist_dir):
    images, labels = fm.load_fashion_mnist("train", root=fashion_mnist_dir)
    assert images.shape == (60_000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (60_000,) and labels.dtype == np.int64
    assert np.bincount(labels).tolist() == [6000] * 10
    assert labels[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]  # file order, first is a boot


def test_test_split_and_limit(fashion_mnist_dir):
    images, labels = fm.load_fashion_mnist("test", root=fashion_mnist_dir)
    assert images.shape == (10_000, 28, 28)
    assert np.bincount(labels).tolist() == [1000] * 10
    assert labels[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]
    few_images, few_labels = fm.load_fashion_mnist("test", root=fashion_mnist_dir, limit=25)
    assert few_images.shape == (25, 28, 28)
    assert np.array_equal(few_images, images[:25]) and np.array_equal(few_labels, labels[:25])
    empty, _ = fm.load_fashion_mnist("test", root=fashion_mnist_dir, limit=0)
    assert empty.shape == (0, 28, 28)


def test_matches_an_independent_parse(fashion_mnist_dir):
    raw = gzip.decompress((fashion_mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes())
    _, labels = fm.load_fashion_mnist("test", root=fashion_mnist_dir)
    assert np.array_equal(labels, np.frombuffer(raw, np.uint8, offset=8))


def test_parsed_once_and_callers_get_private_copies(fashion_mnist_dir):
    fm.load_fashion_mnist("test", root=fashion_mnist_dir)
    hits = fm._load_split.cache_info().hits
    images, _ = fm.load_fashion_mnist("test", root=fashion_mnist_dir)
    assert fm._load_split.cache_info().hits == hits + 1
    images[0] = 0  # a caller's edit must not reach the cache
    again, _ = fm.load_fashion_mnist("test", root=fashion_mnist_dir)
    assert again[0].any()


def test_checksum_table_accepts_this_machines_files(fashion_mnist_dir):
    for stem in STEMS:
        assert fm._checksum_ok(fashion_mnist_dir / (stem + ".gz"), stem), stem


def test_classes():
    assert len(fm.FASHION_MNIST_CLASSES) == 10
    assert fm.FASHION_MNIST_CLASSES[0] == "T-shirt/top"
    assert fm.FASHION_MNIST_CLASSES[9] == "Ankle boot"


def test_bad_split_and_limit(fashion_mnist_dir):
    with pytest.raises(ValueError, match="unknown split 'val'; valid splits: train, test"):
        fm.load_fashion_mnist("val", root=fashion_mnist_dir)
    with pytest.raises(ValueError, match="limit must be >= 0"):
        fm.load_fashion_mnist("test", root=fashion_mnist_dir, limit=-1)


# ---------------------------------------------------------------------------- read_idx


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_uint8(tmp_path, gz):
    values = np.array([[0, 1, 2], [253, 254, 255]], dtype=np.uint8)
    data = _idx_bytes(values, 0x08)
    path = tmp_path / ("a.idx.gz" if gz else "a.idx")
    path.write_bytes(gzip.compress(data) if gz else data)
    out = fm.read_idx(path)
    assert out.dtype == np.uint8 and out.shape == (2, 3)
    assert out.tolist() == [[0, 1, 2], [253, 254, 255]]


def test_read_idx_big_endian_int32_to_native(tmp_path):
    path = tmp_path / "b.idx"
    # 0x0C = int32; bytes written big-endian by hand.
    path.write_bytes(bytes([0, 0, 0x0C, 1, 0, 0, 0, 3]) + struct.pack(">iii", 1, -2, 70_000))
    out = fm.read_idx(path)
    assert out.dtype == np.dtype("int32") and out.dtype.isnative
    assert out.tolist() == [1, -2, 70_000]


def test_read_idx_truncated_names_the_file(tmp_path):
    path = tmp_path / "cut-idx3-ubyte"
    path.write_bytes(_idx_bytes(np.zeros((2, 2, 2), np.uint8), 0x08)[:-3])
    with pytest.raises(DataError, match="size mismatch.*needs 24 bytes, file has 21") as info:
        fm.read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_truncated_gzip_names_the_file(tmp_path):
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(_idx_bytes(np.zeros(100, np.uint8), 0x08))[:20])
    with pytest.raises(DataError, match="cannot read idx file") as info:
        fm.read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_wrong_magic(tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0rest")
    with pytest.raises(DataError, match=r"not an idx file \(magic bytes ffd8ffe0\)") as info:
        fm.read_idx(path)
    assert str(path) in str(info.value)


def test_wrong_sized_split_is_refused(tmp_path):
    _write_fake_set(tmp_path / "tiny")
    with pytest.raises(
        DataError, match=r"expected \(10000, 28, 28\) uint8 images, got \(2, 28, 28\)"
    ):
        fm.load_fashion_mnist("test", root=tmp_path / "tiny")


# ---------------------------------------------------------------------------- lookup order


def test_env_dir_wins(monkeypatch, isolated, tmp_path):
    _write_fake_set(tmp_path / "mine", gz=False)  # uncompressed files are accepted too
    _write_fake_set(isolated / "fashion-mnist")
    monkeypatch.setenv("JUMPRAY_FASHION_MNIST_DIR", str(tmp_path / "mine"))
    assert fm.find_fashion_mnist(download=False, cache_dir=isolated) == tmp_path / "mine"


def test_env_dir_incomplete_is_an_error(monkeypatch, isolated, tmp_path):
    _write_fake_set(tmp_path / "mine")
    (tmp_path / "mine" / "t10k-labels-idx1-ubyte.gz").unlink()
    monkeypatch.setenv("JUMPRAY_FASHION_MNIST_DIR", str(tmp_path / "mine"))
    with pytest.raises(DataError, match="lacks t10k-labels-idx1-ubyte.gz"):
        fm.find_fashion_mnist(download=False, cache_dir=isolated)


def test_debian_before_cache(monkeypatch, isolated, tmp_path):
    _write_fake_set(tmp_path / "debian")
    _write_fake_set(isolated / "fashion-mnist")
    monkeypatch.setattr(fm, "DEBIAN_DIR", tmp_path / "debian")
    assert fm.find_fashion_mnist(download=False, cache_dir=isolated) == tmp_path / "debian"


def test_cache_then_none(monkeypatch, isolated, tmp_path):
    assert fm.find_fashion_mnist(download=False, cache_dir=isolated) is None
    _write_fake_set(isolated / "fashion-mnist")
    assert fm.find_fashion_mnist(download=False, cache_dir=isolated) == isolated / "fashion-mnist"
    # Without cache_dir the root is $JUMPRAY_DATA_DIR.
    monkeypatch.setenv("JUMPRAY_DATA_DIR", str(isolated))
    assert fm.find_fashion_mnist(download=False) == isolated / "fashion-mnist"


# ---------------------------------------------------------------------------- download, offline


@pytest.fixture
def mirror(monkeypatch, tmp_path):
    """A file:// mirror of four tiny .gz files, with the checksum table pointed at them."""
    folder = tmp_path / "mirror"
    _write_fake_set(folder)
    table = {}
    for stem in STEMS:
        gz = (folder / (stem + ".gz")).read_bytes()
        table[stem] = (_md5(gz), _md5(gzip.decompress(gz)))
    monkeypatch.setattr(fm, "_CHECKSUMS", table)
    monkeypatch.setenv("JUMPRAY_FASHION_MNIST_MIRROR", folder.as_uri())
    return folder


def test_download_into_cache(isolated, mirror):
    found = fm.find_fashion_mnist(download=True, cache_dir=isolated)
    assert found == isolated / "fashion-mnist"
    assert sorted(p.name for p in found.iterdir()) == sorted(s + ".gz" for s in STEMS)
    for stem in STEMS:
        assert (found / (stem + ".gz")).read_bytes() == (mirror / (stem + ".gz")).read_bytes()
    assert fm.read_idx(found / "t10k-labels-idx1-ubyte.gz").tolist() == [3, 9]


def test_recompressed_file_passes_on_its_payload(isolated, mirror):
    # Debian's case: other .gz bytes, same decompressed idx bytes.
    path = mirror / "train-labels-idx1-ubyte.gz"
    payload = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(payload, compresslevel=1, mtime=12345))
    assert _md5(path.read_bytes()) != fm._CHECKSUMS["train-labels-idx1-ubyte"][0]
    fm.download_fashion_mnist(isolated)
    assert (isolated / "train-labels-idx1-ubyte.gz").read_bytes() == path.read_bytes()


def test_checksum_mismatch_leaves_no_file(isolated, mirror):
    bad = mirror / "t10k-images-idx3-ubyte.gz"
    bad.write_bytes(gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x01\x07"))
    with pytest.raises(DataError, match="checksum mismatch") as info:
        fm.find_fashion_mnist(download=True, cache_dir=isolated)
    assert "by hand" in str(info.value)
    names = sorted(p.name for p in (isolated / "fashion-mnist").iterdir())
    # Files before the bad one were verified and kept; nothing else, no partial file.
    assert names == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]


def test_unreachable_mirror_raises_with_manual_fix(isolated, mirror, monkeypatch, tmp_path):
    monkeypatch.setenv("JUMPRAY_FASHION_MNIST_MIRROR", (tmp_path / "nowhere").as_uri())
    with pytest.raises(DataError, match="could not download") as info:
        fm.find_fashion_mnist(download=True, cache_dir=isolated)
    message = str(info.value)
    assert fm.MIRROR_URL in message and str(isolated / "fashion-mnist") in message
    assert list((isolated / "fashion-mnist").iterdir()) == []


def test_valid_files_already_present_are_not_fetched(isolated, mirror, monkeypatch):
    fm.download_fashion_mnist(isolated)
    fetched = []
    monkeypatch.setattr(fm, "_fetch", lambda url, dest: fetched.append(url))
    fm.download_fashion_mnist(isolated)
    assert fetched == []

"""Shard folders in object storage: a real S3 server (moto) on loopback, started by the tests.

The same malformed and hostile shards as tests/unit/data/test_scan.py, uploaded to S3, must give
the same scan, the same quarantine and the same rows as on disk; nothing is unpickled; a broken
stream is retried from where it broke; errors name the object.
"""

from __future__ import annotations

import importlib.util
import io
import json
from pathlib import Path

import numpy as np
import pytest

from jumpray import storage
from jumpray.data.scan import read_shard_rows, scan_folder
from jumpray.errors import DataError

pytestmark = [pytest.mark.s3]

_spec = importlib.util.spec_from_file_location(
    "_data_build", Path(__file__).parents[1] / "unit" / "data" / "_build.py"
)
build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build)

IMAGES = build.tiny_images(8, size=4, seed=5)


def good(i: int, **changes) -> list:
    spec = {"image": build.png_bytes(IMAGES[i]), "cls": i % 3, "meta": {"idx": i, "clean": i % 3}}
    spec.update(changes)
    return build.sample(f"s{i}", **spec)


def local_folder(root: Path, shards: list[list]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    names = [f"a-{n:06d}.tar" for n in range(len(shards))]
    for name, samples in zip(names, shards, strict=True):
        build.write_tar(root / name, samples)
    build.write_index(root, {n: len(s) for n, s in zip(names, shards, strict=True)})
    return root


def upload(folder: Path, uri: str) -> str:
    storage.push_tree(folder, uri, head="index.json")
    return uri


def _scan_facts(scan):
    return (
        scan.rows_in,
        scan.quarantine.to_table().to_pylist(),
        scan.drop,
        [(s.file, s.keys, s.idx.tolist(), s.given.tolist(), s.error) for s in scan.shards],
    )


def test_storage_lists_streams_and_publishes_the_head_last(tmp_path, s3_bucket):
    folder = local_folder(tmp_path / "ds", [[good(0), good(1)], [good(2)]])
    (folder / "sub").mkdir()
    (folder / "sub" / "note.txt").write_text("hello")
    order = storage.push_tree(folder, f"{s3_bucket}/ds", head="index.json")
    assert order[-1] == "index.json" and len(order) == 4
    assert storage.list_files(f"{s3_bucket}/ds", ".tar") == ["a-000000.tar", "a-000001.tar"]
    assert storage.list_files(f"{s3_bucket}/ds", recursive=True) == [
        "a-000000.tar",
        "a-000001.tar",
        "index.json",
        "sub/note.txt",
    ]
    assert storage.is_dir(f"{s3_bucket}/ds") and not storage.is_dir(f"{s3_bucket}/nothing")
    assert storage.exists(f"{s3_bucket}/ds/index.json")
    assert storage.read_bytes(f"{s3_bucket}/ds/sub/note.txt") == b"hello"
    tar = f"{s3_bucket}/ds/a-000000.tar"
    assert storage.file_size(tar) == (folder / "a-000000.tar").stat().st_size
    with storage.open_input(tar) as f:
        assert not f.seekable()
        assert f.read() == (folder / "a-000000.tar").read_bytes()
    back = storage.pull_tree(f"{s3_bucket}/ds", tmp_path / "back", skip=("sub",))
    assert sorted(back) == ["a-000000.tar", "a-000001.tar", "index.json"]
    assert (tmp_path / "back" / "a-000001.tar").read_bytes() == (
        folder / "a-000001.tar"
    ).read_bytes()
    storage.delete(f"{s3_bucket}/ds/sub")
    assert not storage.exists(f"{s3_bucket}/ds/sub/note.txt")


def test_a_missing_bucket_or_folder_is_a_clear_error_naming_it(s3_server):
    with pytest.raises(DataError, match="shard folder s3://no-such-bucket-x/ds does not exist"):
        scan_folder("s3://no-such-bucket-x/ds")
    assert storage.redact("s3://KEY:SECRET@bkt/p") == "s3://bkt/p"


@pytest.mark.parametrize(
    "shards",
    [
        [[good(0), good(1, cls=None), good(2)], [good(3, cls=7), good(4)]],
        [[good(0), good(1)], [good(2, meta={"idx": 1}), good(3)]],
    ],
    ids=["bad labels", "duplicate idx"],
)
def test_a_folder_in_s3_scans_and_reads_exactly_as_on_disk(tmp_path, s3_bucket, shards):
    folder = local_folder(tmp_path / "ds", shards)
    uri = upload(folder, f"{s3_bucket}/ds")
    on_disk, in_s3 = scan_folder(folder, on_error="skip"), scan_folder(uri, on_error="skip")
    assert _scan_facts(in_s3) == _scan_facts(on_disk)
    for shard in in_s3.shards:
        local_rows = list(read_shard_rows(folder / shard.file, drop=on_disk.drop[shard.file]))
        s3_rows = list(read_shard_rows(shard.path, drop=in_s3.drop[shard.file]))
        assert len(local_rows) == len(s3_rows)
        for (a, qa), (b, qb) in zip(local_rows, s3_rows, strict=True):
            assert qa == qb and a["key"].tolist() == b["key"].tolist()
            np.testing.assert_array_equal(a["image"], b["image"])
    with pytest.raises(DataError) as err:
        scan_folder(uri, on_error="raise")
    assert err.value.shard == "a-000000.tar" or err.value.shard == "a-000001.tar"


def test_truncated_and_hostile_shards_in_s3_behave_as_on_disk(tmp_path, s3_bucket):
    target = tmp_path / build.EVIL_MARKER
    evil = build.evil_pickle(target)
    folder = local_folder(
        tmp_path / "ds",
        [
            [good(i) for i in range(4)],
            [good(4, extra=[("pyd", evil), ("pickle", evil)]), good(5, extra=[("x.pth", evil)])],
        ],
    )
    build.truncate(folder / "a-000000.tar", 2 * 3072 + 600)  # cut inside s2
    uri = upload(folder, f"{s3_bucket}/ds")
    on_disk, in_s3 = scan_folder(folder, on_error="skip"), scan_folder(uri, on_error="skip")
    assert _scan_facts(in_s3) == _scan_facts(on_disk)
    assert "truncated tar" in in_s3.quarantine.to_table().to_pylist()[0]["reason"]
    rows = [
        b
        for path in (f"{uri}/a-000000.tar", f"{uri}/a-000001.tar")
        for b, _ in read_shard_rows(path, drop=in_s3.drop[storage.name_of(path)])
    ]
    assert np.concatenate([r["idx"] for r in rows]).tolist() == [0, 1, 4, 5]
    assert not target.exists()


class _Flaky:
    """A pyarrow-like filesystem whose streams break once after ``fail_at`` bytes."""

    def __init__(self, data: bytes, *, fail_at: int, failures: int):
        self.data, self.fail_at, self.failures, self.opens = data, fail_at, failures, 0

    def open_input_stream(self, path, compression=None, buffer_size=None):
        self.opens += 1
        outer = self

        class Stream(io.BytesIO):
            def read(self, n=-1):
                if outer.failures and self.tell() >= outer.fail_at:
                    outer.failures -= 1
                    raise OSError("connection reset by peer")
                return super().read(min(n, 4096) if n and n > 0 else 4096)

        return Stream(self.data)


def test_a_stream_that_breaks_is_resumed_and_gives_up_naming_the_object(monkeypatch):
    data = bytes(range(256)) * 400
    flaky = _Flaky(data, fail_at=50_000, failures=2)
    monkeypatch.setattr(storage, "filesystem", lambda uri: (flaky, "bkt/x.tar"))
    monkeypatch.setattr(storage, "_BACKOFF_S", (0.0,))
    with storage.open_input("s3://bkt/x.tar") as f:
        assert f.read() == data
    assert flaky.opens == 3
    flaky = _Flaky(data, fail_at=10, failures=99)
    monkeypatch.setattr(storage, "filesystem", lambda uri: (flaky, "bkt/x.tar"))
    with pytest.raises(storage.StorageError, match=r"reading s3://bkt/x.tar failed 4 times"):
        storage.read_bytes("s3://bkt/x.tar")


def test_index_json_in_s3_is_read(tmp_path, s3_bucket):
    from jumpray.data.schema import read_index

    folder = local_folder(tmp_path / "ds", [[good(0)]])
    uri = upload(folder, f"{s3_bucket}/ds")
    index = read_index(uri)
    assert index is not None and index.num_samples == 1
    assert json.loads(storage.read_bytes(f"{uri}/index.json"))["num_classes"] == 3

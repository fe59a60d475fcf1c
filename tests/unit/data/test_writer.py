"""ShardWriter, the tar reader/writer pair and the array source, without Ray."""

from __future__ import annotations

import json
import tarfile

import numpy as np
import pyarrow.parquet as pq
import pytest

from jumpray.data.convert import write_arrays
from jumpray.data.decode import decode_image
from jumpray.data.schema import read_index
from jumpray.data.tario import TarSampleReader
from jumpray.data.writer import ShardWriter
from jumpray.errors import DataError, UsageError

from ._build import png_bytes, sample, tiny_images, truncate, write_tar


def _read_all(folder):
    """[(shard, key, members)] of every sample, via the project's tar reader."""
    out = []
    for tar in sorted(folder.glob("*.tar")):
        reader = TarSampleReader(tar, read_suffixes={"png", "cls", "json"})
        out += [(tar.name, s.key, s.members) for s in reader]
        assert reader.error is None
    return out


def test_count_limit_splits_shards_and_index_lists_them(tmp_path):
    out = tmp_path / "ds"
    with ShardWriter(out, max_samples_per_shard=3) as w:
        for i in range(7):
            assert (
                w.write(
                    png_bytes(np.full((4, 4), i, np.uint8)),
                    image_format="png",
                    given_label=i % 2,
                    shape=(1, 4, 4),
                )
                == i
            )
        index = w.close(num_classes=2, class_names=["a", "b"])
    assert [(s.file, s.num_samples) for s in index.shards] == [
        ("train-000000.tar", 3),
        ("train-000001.tar", 3),
        ("train-000002.tar", 1),
    ]
    on_disk = read_index(out)
    assert on_disk.num_samples == 7 and on_disk.num_classes == 2
    assert on_disk.channels == 1 and on_disk.image_size == [4, 4]
    assert on_disk.has_clean_labels is False
    rows = _read_all(out)
    assert [k for _, k, _ in rows] == [f"s{i:09d}" for i in range(7)]
    assert [m["cls"] for _, _, m in rows] == [b"0", b"1"] * 3 + [b"0"]
    assert json.loads(rows[4][2]["json"]) == {"idx": 4}
    # Nothing temporary is left beside or inside the folder.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    assert sorted(p.name for p in out.iterdir()) == [
        "index.json",
        "quarantine.parquet",
        "train-000000.tar",
        "train-000001.tar",
        "train-000002.tar",
    ]
    assert pq.read_table(out / "quarantine.parquet").num_rows == 0


def test_byte_limit_starts_a_new_shard(tmp_path):
    image = bytes(3000)  # 3000 B payload = 512 header + 3072 data in the tar
    with ShardWriter(tmp_path / "ds", max_shard_bytes=8192) as w:
        for _ in range(5):
            w.write(image, image_format="png", given_label=0)
        index = w.close(num_classes=1)
    # each sample takes 3584 (image) + 1024 (cls) + 1024 (json) = 5632 B: one per 8192-B shard
    assert [s.num_samples for s in index.shards] == [1, 1, 1, 1, 1]
    for tar in (tmp_path / "ds").glob("*.tar"):
        assert tar.stat().st_size <= 8192 + 10240  # + the end marker padded to a 10 KiB record


def test_existing_output_refused_then_replaced_with_overwrite(tmp_path):
    out = tmp_path / "ds"
    with ShardWriter(out) as w:
        w.write(b"img", image_format="png", given_label=0)
        w.close(num_classes=1)
    with pytest.raises(UsageError, match="already exists.*--overwrite"):
        ShardWriter(out)
    with ShardWriter(out, overwrite=True, prefix="new") as w:
        w.write(b"img", image_format="png", given_label=0)
        w.close(num_classes=1)
    assert sorted(p.name for p in out.iterdir()) == [
        "index.json",
        "new-000000.tar",
        "quarantine.parquet",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]
    # A folder holding anything else is never replaced, with or without --overwrite.
    (out / "old.txt").write_text("x")
    with pytest.raises(UsageError, match=r"did not write \(old.txt\).*not even with --overwrite"):
        ShardWriter(out, overwrite=True)
    assert (out / "old.txt").read_text() == "x"


def test_failure_mid_write_leaves_no_output_and_no_temp(tmp_path):
    with pytest.raises(RuntimeError), ShardWriter(tmp_path / "ds") as w:
        w.write(b"img", image_format="png", given_label=0)
        raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []


def test_skip_quarantines_under_skip_and_raises_under_raise(tmp_path):
    with ShardWriter(tmp_path / "a", on_error="skip", max_quarantine_fraction=1.0) as w:
        w.skip(source="img/bad.jpg", reason="image does not decode")
        w.write(b"ok", image_format="jpg", given_label=1, clean_label=0, source="img/ok.jpg")
        index = w.close(num_classes=2)
    table = pq.read_table(tmp_path / "a" / "quarantine.parquet").to_pylist()
    assert table == [
        {"key": "img/bad.jpg", "shard": "", "idx": -1, "reason": "image does not decode"}
    ]
    assert index.extra["num_quarantined"] == 1 and index.num_samples == 1
    assert index.has_clean_labels and index.extra["num_clean_labels"] == 1
    with (
        pytest.raises(DataError, match="img/bad.jpg.*image does not decode"),
        ShardWriter(tmp_path / "b") as w,
    ):
        w.skip(source="img/bad.jpg", reason="image does not decode")
    assert not (tmp_path / "b").exists()


def test_write_arrays_round_trips_images_labels_and_noise(tmp_path):
    images = tiny_images(12, size=6, channels=3, seed=3)
    labels = np.arange(12) % 4
    index = write_arrays(
        tmp_path / "ds", images, labels, noise="sym:0.5", seed=7, max_samples_per_shard=5
    )
    rows = _read_all(tmp_path / "ds")
    assert [r[0] for r in rows] == ["train-000000.tar"] * 5 + ["train-000001.tar"] * 5 + [
        "train-000002.tar"
    ] * 2
    given = np.array([int(m["cls"]) for _, _, m in rows])
    metas = [json.loads(m["json"]) for _, _, m in rows]
    assert [m["idx"] for m in metas] == list(range(12))
    assert [m["clean"] for m in metas] == labels.tolist()
    # sym:0.5 relabels exactly round(0.5 * 12) = 6 samples, each with a different class.
    assert int((given != labels).sum()) == 6
    assert index.noise["realized_rate"] == 0.5 and index.noise["seed"] == 7
    for (_, _, m), img in zip(rows, images, strict=True):
        np.testing.assert_array_equal(decode_image(m["png"]), img.transpose(2, 0, 1))
    # The same seed gives the same noisy labels.
    write_arrays(tmp_path / "again", images, labels, noise="sym:0.5", seed=7)
    again = np.array([int(m["cls"]) for _, _, m in _read_all(tmp_path / "again")])
    np.testing.assert_array_equal(again, given)
    # Suggested normalisation = the images' per-channel mean over 0..1.
    np.testing.assert_allclose(index.mean, (images / 255.0).mean(axis=(0, 1, 2)), atol=1e-4)


def test_tar_reader_reads_long_names_and_never_reads_unknown_members(tmp_path):
    key = "d" * 120 + "/s1"
    path = tmp_path / "t.tar"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for suffix, data in (("png", b"P"), ("cls", b"2"), ("evil.pyd", b"XYZ")):
            info = tarfile.TarInfo(f"{key}.{suffix}")
            info.size = len(data)
            import io

            tar.addfile(info, io.BytesIO(data))
    [s] = list(TarSampleReader(path, read_suffixes={"png", "cls"}))
    assert s.key == key and s.members == {"png": b"P", "cls": b"2", "evil.pyd": None}


@pytest.mark.parametrize(
    "keep,expected_samples,last_complete",
    [
        (None, 3, True),  # intact
        (512 * 12, 3, False),  # only the end-of-archive marker cut: the last sample may be cut
        (512 * 5 + 100, 2, False),  # cut after sample 1's image, before its cls
        (0, 0, None),  # zero-byte file
    ],
)
def test_tar_reader_reports_truncation(tmp_path, keep, expected_samples, last_complete):
    path = write_tar(
        tmp_path / "t.tar", [sample(f"s{i}", image=b"x" * 10, cls=i) for i in range(3)]
    )
    if keep is not None:
        truncate(path, keep)
    reader = TarSampleReader(path, read_suffixes={"png", "cls"})
    samples = list(reader)
    assert len(samples) == expected_samples
    assert (reader.error is None) == (keep is None)
    if samples:
        assert samples[-1].complete is last_complete

"""read_shards through Ray Data: round trips, list-format fixtures, bad input under both policies.

Few tests, many assertions each: Ray starts once per session and each Ray Data execution costs
about a second on the 2-core box.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from jumpray.config import DataConfig
from jumpray.data.convert import write_arrays, write_from_list
from jumpray.data.decode import decode_image
from jumpray.data.shards import read_shards
from jumpray.errors import DataError

pytestmark = pytest.mark.integration

_spec = importlib.util.spec_from_file_location(
    "_data_build", Path(__file__).parents[1] / "unit" / "data" / "_build.py"
)
build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build)


def _by_idx(rows: list[dict]) -> list[dict]:
    return sorted(rows, key=lambda r: r["idx"])


def test_arrays_round_trip_through_ray_data(tmp_path, ray_cluster):
    images = build.tiny_images(23, size=10, channels=3, seed=11)
    labels = np.arange(23) % 5
    write_arrays(
        tmp_path / "rgb", images, labels, noise="pairflip:0.3", seed=3, max_samples_per_shard=7
    )
    source = read_shards(tmp_path / "rgb")
    rows = _by_idx(source.dataset.take_all())
    assert [r["idx"] for r in rows] == list(range(23))
    assert [r["key"] for r in rows] == [f"s{i:09d}" for i in range(23)]
    assert [r["shard"] for r in rows] == [f"train-{i // 7:06d}.tar" for i in range(23)]
    np.testing.assert_array_equal(
        np.stack([r["image"] for r in rows]), images.transpose(0, 3, 1, 2)
    )
    assert [r["clean_label"] for r in rows] == labels.tolist()
    given = np.array([r["given_label"] for r in rows])
    # pairflip moves a flipped label to the next class, never elsewhere.
    assert np.all((given == labels) | (given == (labels + 1) % 5))
    assert source.info.noise["realized_rate"] == pytest.approx(float((given != labels).mean()))
    assert (source.info.num_samples, source.info.num_classes, source.info.num_shards) == (23, 5, 4)
    assert (source.info.channels, source.info.image_hw, source.info.rows_in) == (3, (10, 10), 23)
    assert source.check_counts(len(rows)) == 0
    # Normalisation: index.json's suggestion unless the config sets one.
    index_mean = (images / 255.0).mean(axis=(0, 1, 2))
    np.testing.assert_allclose(source.make_augmenter().mean, index_mean, atol=1e-4)
    aug = source.make_augmenter(DataConfig(mean=[0.1], std=[0.2]))
    assert (aug.mean, aug.std, aug.image_size, aug.channels) == ((0.1,) * 3, (0.2,) * 3, 10, 3)

    # Gray images, forced to 3 channels and resized: every channel equals the gray one.
    gray = build.tiny_images(5, size=8, channels=1, seed=12)
    write_arrays(tmp_path / "gray", gray, np.zeros(5, np.int64), num_classes=2)
    source = read_shards(tmp_path / "gray", DataConfig(channels=3), image_size=6)
    # The one "materialize or stream" estimate: 5 rows of 3x6x6 pixels and 64 bytes of the rest,
    # against half the object store.
    assert source.decoded_bytes() == 5 * (3 * 6 * 6 + 64)
    assert source.fits_object_store(store_bytes=2 * source.decoded_bytes())
    assert not source.fits_object_store(store_bytes=2 * source.decoded_bytes() - 1)
    assert source.materialize()  # it fits
    assert type(source.dataset).__name__ == "MaterializedDataset"
    rows = _by_idx(source.dataset.take_all())
    stacked = np.stack([r["image"] for r in rows])
    assert stacked.shape == (5, 3, 6, 6) and source.info.image_hw == (6, 6)
    np.testing.assert_array_equal(stacked[:, 0], stacked[:, 2])
    assert [r["clean_label"] for r in rows] == [-1] * 5 and not source.info.has_clean_labels


def test_list_fixtures_and_a_folder_without_index(tmp_path, ray_cluster):
    root = tmp_path / "c1m"
    paths, _, noisy = build.make_clothing1m(root)
    label = root / "label"
    write_from_list(
        label / "noisy_label_kv.txt",
        root=root,
        out=tmp_path / "train",
        num_classes=14,
        key_list=label / "noisy_train_key_list.txt",
        clean_list=label / "clean_label_kv.txt",
        max_samples_per_shard=3,
    )
    source = read_shards(tmp_path / "train")
    rows = _by_idx(source.dataset.take_all())
    order = [4, 0, 2, 3]
    assert [r["given_label"] for r in rows] == [noisy[i] for i in order]
    assert [r["clean_label"] for r in rows] == [-1, 5, 1, -1]
    for r, i in zip(rows, order, strict=True):
        np.testing.assert_array_equal(r["image"], decode_image((root / paths[i]).read_bytes()))
    assert source.info.num_classes == 14 and source.info.has_clean_labels

    # WebVision mini, resized on read.
    wv = build.make_webvision(tmp_path / "wv", [3, 50, 49])
    write_from_list(
        wv / "info" / "train_filelist_google.txt", root=wv, out=tmp_path / "wvs", max_label=49
    )
    source = read_shards(tmp_path / "wvs", image_size=16)
    rows = _by_idx(source.dataset.take_all())
    assert [(r["idx"], r["given_label"]) for r in rows] == [(0, 3), (1, 49)]
    assert rows[0]["image"].shape == (3, 16, 16) and source.info.num_classes == 50

    # The same Clothing1M shards without index.json: json idx still used, C assumed, logged.
    (tmp_path / "train" / "index.json").unlink()
    source = read_shards(tmp_path / "train")
    assert sorted(r["idx"] for r in source.dataset.take_all()) == [0, 1, 2, 3]
    assert source.info.num_classes == 14  # highest label 13 + 1
    assert any("num_classes = 14" in a for a in source.info.assumptions)
    assert not source.info.idx_assigned and source.info.mean is None


def _bad_folder(folder: Path, target: Path) -> None:
    """Every bad-input case at once (C = 3), plus pickle members that would create ``target``."""
    folder.mkdir()
    png = [build.png_bytes(img) for img in build.tiny_images(11, size=4, seed=2)]
    evil = build.evil_pickle(target)

    def s(i, **kw):
        spec = {"image": png[i], "cls": i % 3, "meta": {"idx": i}}
        spec.update(kw)
        return build.sample(f"s{i}", **spec)

    build.write_tar(
        folder / "a-000000.tar",
        [
            s(0, extra=[("pyd", evil), ("pickle", evil)]),  # fine; its pickles must stay unread
            s(1, cls=None),  # missing cls
            s(2, cls="x"),  # non-integer cls
            s(3, cls=7),  # label out of range
        ],
    )
    build.write_tar(
        folder / "a-000001.tar",
        [
            s(4, extra=[("evil.pth", evil)]),
            s(5, meta={"idx": 0}),  # duplicate idx
            s(6, image=None),  # missing image member
            s(
                7, image=b"\x89PNG\r\n\x1a\n garbage"
            ),  # undecodable image (found by the decode pass)
        ],
    )
    build.write_tar(folder / "a-000002.tar", [])  # empty shard; index.json promises 1 sample
    build.write_tar(folder / "a-000003.tar", [s(8), s(9), s(10)])
    build.truncate(folder / "a-000003.tar", 2 * 3072 + 700)  # cut inside s10's image
    build.write_index(
        folder, {"a-000000.tar": 4, "a-000001.tar": 4, "a-000002.tar": 1, "a-000003.tar": 4}
    )


def test_bad_input_under_both_policies_and_malicious_pickles(tmp_path, ray_cluster):
    target = tmp_path / build.EVIL_MARKER
    _bad_folder(tmp_path / "bad", target)

    # 9 of 13 samples are bad: above any sane limit, so the limit is lifted for this check.
    source = read_shards(tmp_path / "bad", on_error="skip", max_quarantine_fraction=1.0)
    source.materialize()
    rows = _by_idx(source.dataset.take_all())
    assert [r["key"] for r in rows] == ["s0", "s4", "s8", "s9"]
    np.testing.assert_array_equal(rows[0]["image"][0], build.tiny_images(11, size=4, seed=2)[0])
    q = source.quarantine().to_pylist()
    assert [(r["shard"][-8:-4], r["key"]) for r in q] == [
        ("0000", "s1"),
        ("0000", "s2"),
        ("0000", "s3"),
        ("0001", "s5"),
        ("0001", "s6"),
        ("0002", "<lost-0>"),
        ("0003", "s10"),
        ("0003", "<lost-0>"),
        ("0001", "s7"),
    ]
    reasons = [r["reason"] for r in q]
    assert reasons[0] == "no cls member (the label)"
    assert reasons[1] == "cls is not an integer: b'x'"
    assert reasons[2] == "label 7 out of range [0, 3)"
    assert reasons[3] == "duplicate idx 0, first in shard a-000000.tar key s0"
    assert reasons[4].startswith("no image member")
    assert reasons[5].startswith("empty shard") and reasons[6].startswith("truncated tar")
    assert reasons[8].startswith("image does not decode")
    # rows in = 4 + 4 + 1 (lost) + 3 + 1 (lost) = 13 = 4 out + 9 quarantined
    assert source.info.rows_in == 13 and source.check_counts(len(rows)) == 9

    with pytest.raises(DataError) as err:
        read_shards(tmp_path / "bad", on_error="raise")
    assert (err.value.shard, err.value.key, err.value.reason) == (
        "a-000000.tar",
        "s1",
        "no cls member (the label)",
    )

    # raise at decode time: the scan passes, executing the dataset raises, naming shard and key.
    only = tmp_path / "decode"
    only.mkdir()
    build.write_tar(
        only / "b-000000.tar",
        [
            build.sample(
                "k0",
                image=build.png_bytes(np.zeros((4, 4), np.uint8)),
                cls=1,
                extra=[("pickle", build.evil_pickle(target))],
            ),
            build.sample("k1", image=b"GIF89a broken", cls=0),
        ],
    )
    source = read_shards(only, on_error="raise")
    with pytest.raises(DataError) as err:
        source.dataset.take_all()
    assert (err.value.shard, err.value.key) == ("b-000000.tar", "k1")
    assert err.value.reason.startswith("image does not decode")
    skip = read_shards(only, on_error="skip", max_quarantine_fraction=1.0)
    assert [(r["key"], r["idx"]) for r in skip.dataset.take_all()] == [("k0", 0)]
    assert skip.info.idx_assigned and skip.check_counts(1) == 1
    assert not target.exists()

    # Nothing usable at all: an empty dataset, every sample accounted for.
    none = tmp_path / "none"
    none.mkdir()
    build.write_tar(none / "c-000000.tar", [build.sample("z0", image=None, cls=0)])
    empty = read_shards(none, on_error="skip", max_quarantine_fraction=1.0)
    assert empty.dataset.take_all() == [] and empty.check_counts(0) == 1


def test_folder_wide_failures_fail_with_the_counts_not_exit_0(tmp_path, ray_cluster):
    """Issue 11, defects 2 and 8: a tar cut in half, or a folder of non-images, under skip."""
    images = build.tiny_images(200, size=8, seed=3)
    write_arrays(tmp_path / "cut", images, np.arange(200) % 4, num_classes=4)
    tar = next((tmp_path / "cut").glob("*.tar"))
    build.truncate(tar, build.file_size(tar) // 2)
    with pytest.raises(DataError, match=r"of the 200 samples, \d+ \([45]\d\.\d%\) are unusable"):
        read_shards(tmp_path / "cut", on_error="skip")

    junk = tmp_path / "junk"
    junk.mkdir()
    rng = np.random.default_rng(0)
    samples = [build.sample(f"r{i}", image=rng.bytes(300), cls=i % 2) for i in range(20)]
    build.write_tar(junk / "x-000000.tar", samples)
    with pytest.raises(DataError, match="none of the 20 images sampled is a readable image"):
        read_shards(junk, on_error="skip", max_quarantine_fraction=1.0)


def test_materialized_rows_keep_the_read_order_whatever_order_the_reads_end_in(
    tmp_path, ray_cluster
):
    # Two big shards and a tiny last one: on 2 CPUs the tiny read starts when the first big one
    # ends and ends before the second, so an unordered materialization puts its rows first. The
    # order is what a worker trains in with shuffle_buffer 0 (data.preserve_order runs).
    images = build.tiny_images(4005, size=48, channels=1, seed=5)
    write_arrays(
        tmp_path / "uneven", images, np.arange(4005) % 10, seed=0, max_samples_per_shard=2000
    )
    for _ in range(2):
        source = read_shards(tmp_path / "uneven")
        source.materialize()
        assert type(source.dataset).__name__ == "MaterializedDataset"
        idx = [int(i) for b in source.dataset.iter_batches(batch_size=None) for i in b["idx"]]
        assert idx == list(range(4005))

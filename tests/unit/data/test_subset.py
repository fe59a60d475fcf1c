"""Chosen samples by (shard, key): copied into a new folder with new labels, or read back small."""

from __future__ import annotations

import json

import numpy as np

from jumpray.data.convert import write_arrays
from jumpray.data.scan import read_shard_rows, scan_folder
from jumpray.data.schema import read_index
from jumpray.data.subset import copy_samples, read_sample_images
from jumpray.data.tario import TarSampleReader
from jumpray.data.writer import ShardWriter

from ._build import tiny_images

IMAGES = tiny_images(7, size=4, seed=1)
LABELS = np.arange(7) % 3


def _source(tmp_path):
    write_arrays(
        tmp_path / "src",
        IMAGES,
        LABELS,
        clean_labels=LABELS,
        num_classes=3,
        max_samples_per_shard=3,
    )
    return scan_folder(tmp_path / "src")


def test_copy_samples_writes_the_kept_samples_with_the_labels_given(tmp_path):
    scan = _source(tmp_path)
    keep = {
        "train-000000.tar": {"s000000001": 2, "s000000002": 2},
        "train-000002.tar": {"s000000006": 0},
    }
    asked = []

    def labels_of(shard: str) -> dict[str, int]:
        asked.append(shard)
        return keep.get(shard, {})

    with ShardWriter(tmp_path / "out", prefix="clean", require_samples=False) as writer:
        counts = copy_samples(scan, writer, labels_of=labels_of)
        writer.close(num_classes=3)
    assert asked == ["train-000000.tar", "train-000001.tar", "train-000002.tar"]
    # s1 is written with label 2 instead of its cls 1; s2 and s6 keep theirs.
    assert (counts.num_copied, counts.num_relabelled) == (3, 1)
    [tar] = sorted((tmp_path / "out").glob("*.tar"))
    [(rows, bad)] = list(read_shard_rows(tar))
    assert bad == [] and rows["idx"].tolist() == [0, 1, 2]
    assert rows["given_label"].tolist() == [2, 2, 0]
    assert rows["clean_label"].tolist() == LABELS[[1, 2, 6]].tolist()
    np.testing.assert_array_equal(rows["image"][:, 0], IMAGES[[1, 2, 6]])
    sources = [
        json.loads(s.members["json"])["source"]
        for s in TarSampleReader(tar, read_suffixes={"json"})
    ]
    assert sources == [
        "train-000000.tar/s000000001",
        "train-000000.tar/s000000002",
        "train-000002.tar/s000000006",
    ]
    index = read_index(tmp_path / "out")
    assert (index.num_samples, index.channels, index.image_size) == (3, 1, [4, 4])


def test_read_sample_images_in_the_order_asked(tmp_path):
    _source(tmp_path)
    asked = [
        ("train-000002.tar", "s000000006"),
        ("train-000000.tar", "s000000001"),
        ("train-000000.tar", "no-such-key"),
        ("no-such.tar", "s000000000"),
    ]
    got = read_sample_images(tmp_path / "src", asked, image_size=4)
    np.testing.assert_array_equal(got[0][0], IMAGES[6])
    np.testing.assert_array_equal(got[1][0], IMAGES[1])
    assert got[2:] == [None, None]
    assert read_sample_images(tmp_path / "src", asked[:1], image_size=2)[0].shape == (1, 2, 2)

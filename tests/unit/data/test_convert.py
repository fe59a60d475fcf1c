"""List, folder and Fashion-MNIST sources written to shards, checked member by member (no Ray)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from jumpray.data.convert import read_list_file, write_from_folder, write_from_list
from jumpray.data.decode import decode_image
from jumpray.data.schema import ShardIndex, read_index
from jumpray.data.tario import TarSampleReader
from jumpray.errors import ConfigError, DataError

from ._build import make_clothing1m, make_webvision, png_bytes, tiny_images


def _samples(folder):
    rows = []
    for tar in sorted(folder.glob("*.tar")):
        for s in TarSampleReader(tar, read_suffixes={"jpg", "png", "webp", "cls", "json"}):
            meta = json.loads(s.members["json"])
            image = next(v for k, v in s.members.items() if k in ("jpg", "png", "webp"))
            rows.append((int(s.members["cls"]), meta, image))
    return rows


def _from_clothing1m_lists(root, out, labels: str, keys: str, **options) -> ShardIndex:
    """Shards from the Clothing1M lists ``label/<labels>`` and ``label/<keys>`` (clean labels from
    ``label/clean_label_kv.txt``, C = 14)."""
    return write_from_list(
        root / "label" / labels,
        root=root,
        out=out,
        key_list=root / "label" / keys,
        clean_list=root / "label" / "clean_label_kv.txt",
        num_classes=14,
        **options,
    )


def test_clothing1m_layout_with_key_list_and_clean_list(tmp_path):
    root = tmp_path / "clothing1m"
    paths, images, noisy = make_clothing1m(root)
    index = _from_clothing1m_lists(
        root,
        tmp_path / "train",
        "noisy_label_kv.txt",
        "noisy_train_key_list.txt",
        max_samples_per_shard=3,
    )
    rows = _samples(tmp_path / "train")
    order = [4, 0, 2, 3]
    assert [meta["source"] for _, meta, _ in rows] == [paths[i] for i in order]
    assert [meta["idx"] for _, meta, _ in rows] == [0, 1, 2, 3]
    assert [given for given, _, _ in rows] == [noisy[i] for i in order]
    assert [meta.get("clean", -1) for _, meta, _ in rows] == [-1, 5, 1, -1]
    # JPEG bytes are stored unchanged.
    assert rows[1][2] == (root / paths[0]).read_bytes()
    assert index.num_classes == 14 and index.has_clean_labels
    assert index.extra["num_clean_labels"] == 2 and [s.num_samples for s in index.shards] == [3, 1]
    assert index.channels == 3 and index.image_size == [16, 16]
    # The test split: labels from the clean list itself.
    test = _from_clothing1m_lists(
        root, tmp_path / "test", "clean_label_kv.txt", "clean_test_key_list.txt", prefix="test"
    )
    [(given, meta, _)] = _samples(tmp_path / "test")
    assert (given, meta["clean"], meta["source"]) == (9, 9, paths[5])
    assert test.shards[0].file == "test-000000.tar"


def test_key_missing_from_list_raises_or_is_quarantined(tmp_path):
    root = tmp_path / "c"
    make_clothing1m(root)
    keys = root / "label" / "noisy_train_key_list.txt"
    keys.write_text(keys.read_text() + "images/9/99/missing.jpg\n")
    kwargs = dict(root=root, key_list=keys, num_classes=14)
    with pytest.raises(DataError, match="1 keys have no label.*missing.jpg"):
        write_from_list(root / "label" / "noisy_label_kv.txt", out=tmp_path / "a", **kwargs)
    index = write_from_list(
        root / "label" / "noisy_label_kv.txt",
        out=tmp_path / "b",
        on_error="skip",
        max_quarantine_fraction=1.0,  # a tiny fixture: 1 of 5 lost
        **kwargs,
    )
    assert index.num_samples == 4
    q = pq.read_table(tmp_path / "b" / "quarantine.parquet").to_pylist()
    assert [(r["key"], r["reason"]) for r in q] == [
        ("images/9/99/missing.jpg", "key has no label in the list file")
    ]


def test_webvision_layout_keeps_the_first_50_classes(tmp_path):
    root = make_webvision(tmp_path / "webvision", [0, 49, 50, 12, 999, 49])
    index = write_from_list(
        root / "info" / "train_filelist_google.txt", root=root, out=tmp_path / "mini", max_label=49
    )
    rows = _samples(tmp_path / "mini")
    assert [given for given, _, _ in rows] == [0, 49, 12, 49]
    assert [m["idx"] for _, m, _ in rows] == [0, 1, 2, 3]  # running index among kept lines
    assert [m["source"] for _, m, _ in rows][2] == "google/q0012/img3.jpg"
    assert index.num_classes == 50 and not index.has_clean_labels


def test_bad_list_line_names_file_and_line(tmp_path):
    path = tmp_path / "list.txt"
    path.write_text("a.jpg 1\n\n# comment\nb.jpg one\n")
    with pytest.raises(DataError, match=r"list.txt, line 4: expected .*'b.jpg one'"):
        read_list_file(path)
    path.write_text("dir with space/a b.jpg 3\n")
    assert read_list_file(path) == [("dir with space/a b.jpg", 3)]


def test_from_folder_classes_sorted_bad_image_quarantined_and_noise(tmp_path):
    root = tmp_path / "tree"
    gray = tiny_images(3, size=5, channels=1, seed=2)
    for name, imgs in (("zebra", gray[:2]), ("ant", gray[2:])):
        (root / name).mkdir(parents=True)
        for i, img in enumerate(imgs):
            (root / name / f"{i}.png").write_bytes(png_bytes(img))
    (root / "ant" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "ant" / "notes.txt").write_text("ignored")
    with pytest.raises(DataError, match="ant/broken.jpg.*does not decode"):
        write_from_folder(root, out=tmp_path / "a")
    index = write_from_folder(root, out=tmp_path / "b", on_error="skip", max_quarantine_fraction=1)
    assert index.class_names == ["ant", "zebra"] and index.num_samples == 3
    rows = _samples(tmp_path / "b")
    assert [(g, m["source"]) for g, m, _ in rows] == [
        (0, "ant/0.png"),
        (1, "zebra/0.png"),
        (1, "zebra/1.png"),
    ]
    np.testing.assert_array_equal(decode_image(rows[1][2])[0], gray[0])
    q = pq.read_table(tmp_path / "b" / "quarantine.parquet").to_pylist()
    assert len(q) == 1 and q[0]["key"] == "ant/broken.jpg"
    assert index.extra["source"]["ignored_files"] == 1
    # pairflip:0.6 over 3 samples of 2 classes: noise needs only labels; the clean label is kept.
    noisy = write_from_folder(
        root / "zebra" / "..",
        out=tmp_path / "c",
        on_error="skip",
        max_quarantine_fraction=1,
        noise="pairflip:0.6",
        seed=3,
    )
    rows = _samples(tmp_path / "c")
    assert [m["clean"] for _, m, _ in rows] == [0, 1, 1]
    wrong = sum(g != m["clean"] for g, m, _ in rows)
    assert noisy.noise["realized_rate"] == pytest.approx(wrong / 3)
    with pytest.raises(ConfigError, match="instance noise needs image features"):
        write_from_folder(root, out=tmp_path / "d", noise="instance:0.2")


def test_fashion_mnist_source_first_n_in_file_order(tmp_path, fashion_mnist_dir):
    from jumpray.data.convert import write_fashion_mnist
    from jumpray.data.fashion_mnist import load_fashion_mnist

    images, labels = load_fashion_mnist("test", limit=30)
    index = write_fashion_mnist(tmp_path / "fm", split="test", limit=30, noise="asym:0.9", seed=0)
    rows = _samples(tmp_path / "fm")
    assert len(rows) == 30 and index.shards[0].file == "test-000000.tar"
    assert [m["clean"] for _, m, _ in rows] == labels.tolist()
    np.testing.assert_array_equal(decode_image(rows[7][2])[0], images[7])
    # asym uses the Fashion-MNIST map: a flipped label is its class's look-alike.
    look_alike = {0: 6, 6: 0, 2: 4, 4: 2, 5: 7, 7: 9, 9: 7}
    for given, meta, _ in rows:
        assert given == meta["clean"] or given == look_alike[meta["clean"]]
    assert read_index(tmp_path / "fm").noise["spec"] == "asym:0.9"

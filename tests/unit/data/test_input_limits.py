"""Issue 11, defects 2, 5, 7 and the quarantine rows: input that must not set the problem size,
read outside --root, or pass as a silent total loss. Without Ray."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from jumpray.cli import main
from jumpray.data.convert import write_from_list
from jumpray.data.quarantine import check_quarantine_fraction
from jumpray.data.scan import read_shard_rows, scan_folder
from jumpray.data.schema import infer_num_classes
from jumpray.data.shards import choose_image_size
from jumpray.errors import DataError

from ._build import jpeg_bytes, png_bytes, sample, tiny_images, write_tar

IMAGES = tiny_images(40, size=4, seed=7)


def _bare(folder, labels, metas=None):
    """One tar without index.json: sample k<i> with label labels[i] and json metas[i]."""
    folder.mkdir()
    samples = [
        sample(f"k{i:02d}", image=png_bytes(IMAGES[i]), cls=y, meta=(metas or {}).get(i))
        for i, y in enumerate(labels)
    ]
    write_tar(folder / "a-000000.tar", samples)
    return folder


def test_one_huge_idx_does_not_size_the_problem(tmp_path):
    n = 12
    metas = {i: {"idx": i} for i in range(n)}
    metas[5] = {"idx": 99_999_999_999}
    folder = _bare(tmp_path / "f", [i % 3 for i in range(n)], metas)
    with pytest.raises(DataError, match="idx 99999999999 outside"):
        scan_folder(folder)
    scan = scan_folder(folder, on_error="skip")
    assert scan.num_samples == n  # bounded by the samples found, not by the largest idx
    [row] = scan.quarantine.to_table().to_pylist()
    assert row["key"] == "k05" and row["idx"] == 99_999_999_999


def test_one_stray_label_is_rejected_not_made_a_class(tmp_path):
    labels = [i % 10 for i in range(39)] + [42]
    scan = scan_folder(_bare(tmp_path / "f", labels), on_error="skip")
    assert scan.num_classes == 10
    [row] = scan.quarantine.to_table().to_pylist()
    assert row["key"] == "k39" and "label 42 lies far outside" in row["reason"]
    assert any("num_classes = 10" in a and "42" in a for a in scan.assumptions)
    # Many samples past a gap are a class missing in the middle, not strays.
    c, reject, _ = infer_num_classes(np.array([0, 1, 3, 3, 3, 3]))
    assert c == 4 and not reject.any()


def test_from_list_label_outside_the_dense_range_and_paths_outside_root(tmp_path, capsys):
    root = tmp_path / "root"
    (root / "img").mkdir(parents=True)
    lines = []
    for i in range(24):
        (root / "img" / f"{i}.jpg").write_bytes(jpeg_bytes(tiny_images(1, size=8, seed=i)[0]))
        lines.append(f"img/{i}.jpg {i % 4}")
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(jpeg_bytes(tiny_images(1, size=8, seed=99)[0]))
    lines[3] = "img/3.jpg 7"  # one stray label among classes 0..3
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join([*lines, "../secret.jpg 1", f"{outside} 2"]) + "\n")
    argv = ["shards", "from-list", str(listing), "--root", str(root)]
    assert main([*argv, "--out", str(tmp_path / "a")]) == 2
    assert "label 7 lies far outside the dense labels 0..3" in capsys.readouterr().err
    index = write_from_list(
        listing, root=root, out=tmp_path / "b", on_error="skip", max_quarantine_fraction=1.0
    )
    assert index.num_classes == 4 and index.num_samples == 23
    rows = pq.read_table(tmp_path / "b" / "quarantine.parquet").to_pylist()
    reasons = {r["key"]: r["reason"] for r in rows}
    assert "far outside" in reasons["img/3.jpg"]
    assert (
        "outside --root" in reasons["../secret.jpg"] and "outside --root" in reasons[str(outside)]
    )
    # --prefix names files inside --out only.
    code = main([*argv, "--out", str(tmp_path / "c"), "--prefix", "../evil"])
    assert code == 2 and "--prefix" in capsys.readouterr().err
    assert not list(tmp_path.glob("evil*")) and not (tmp_path / "c").exists()


def test_total_loss_is_an_error_not_exit_0(tmp_path, capsys):
    root = tmp_path / "root"
    root.mkdir()
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"img/{i}.jpg {i % 2}\n" for i in range(10)))
    for policy in ("data.on_error=skip", "data.on_error=raise"):
        code = main(
            ["shards", "from-list", str(listing), "--root", str(root)]
            + [policy]
            + ["--out", str(tmp_path / "o")]
        )
        assert code == 2 and not (tmp_path / "o").exists()
    err = capsys.readouterr().err
    assert "no sample could be written" in err and "Traceback" not in err
    with pytest.raises(DataError, match=r"500 \(50.0%\) are unusable.*2 x truncated"):
        check_quarantine_fraction(
            ["truncated tar 1", "truncated tar 2"] + ["x"] * 498,
            1000,
            0.05,
            what="f: of the 1000 samples",
        )
    check_quarantine_fraction(["x"] * 50, 1000, 0.05, what="f")  # 5 % is within the default


def test_mixed_sizes_get_one_size_chosen_from_the_data():
    shapes = [(3, 228, 270), (3, 134, 114), (3, 300, 200), (3, 90, 120), (3, 150, 150)]
    size, hw, note = choose_image_size(shapes, configured=None, index_hw=None)
    assert size == 150 and hw == (150, 150) and "chosen from the data" in note
    assert "data.image_size" in note
    assert (
        choose_image_size(
            [(3, 4000, 5000)] * 2 + [(3, 3000, 3000)], configured=None, index_hw=None
        )[0]
        == 224
    )
    assert choose_image_size(shapes, configured=64, index_hw=None)[:2] == (64, (64, 64))
    assert choose_image_size([(1, 28, 28)] * 3, configured=None, index_hw=None)[:2] == (
        None,
        (28, 28),
    )
    assert choose_image_size([], configured=None, index_hw=[28, 28])[:2] == (None, (28, 28))


def test_quarantine_rows_keep_the_idx_a_bad_sample_carried(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    write_tar(
        folder / "a-000000.tar",
        [
            sample("k0", image=png_bytes(IMAGES[0]), cls=0, meta={"idx": 0}),
            sample("k1", image=png_bytes(IMAGES[1]), cls=None, meta={"idx": 1}),
            sample("k2", image=None, cls=1, meta={"idx": 2}),
        ],
    )
    scan = scan_folder(folder, on_error="skip")
    assert [(r["key"], r["idx"]) for r in scan.quarantine.to_table().to_pylist()] == [
        ("k1", 1),
        ("k2", 2),
    ]


def test_limit_and_shard_size_are_checked_by_the_parser(tmp_path, capsys):
    for flag, value in (("--limit", "-5"), ("--max-samples-per-shard", "0")):
        with pytest.raises(SystemExit) as exit_info:
            main(["shards", "fashion-mnist", "--out", str(tmp_path / "o"), flag, value])
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert "must be at least 1" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_a_size_mismatch_suggests_resizing_never_skipping(tmp_path):
    folder = tmp_path / "f"
    folder.mkdir()
    tar = write_tar(
        folder / "a-000000.tar",
        [
            sample("k0", image=png_bytes(IMAGES[0]), cls=0),
            sample("k1", image=png_bytes(np.zeros((6, 6), np.uint8)), cls=1),
        ],
    )
    with pytest.raises(DataError) as err:
        list(read_shard_rows(tar, expected_hw=(4, 4), idx_base=0))
    assert err.value.key == "k1" and "data.image_size=4" in str(err.value)
    assert "on_error" not in str(err.value)

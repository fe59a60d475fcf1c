"""``jumpray shards`` through the CLI entry point (docs/contract.md): exit codes, files, messages."""

from __future__ import annotations

import json

import pyarrow.parquet as pq

from jumpray.cli import main
from jumpray.data.schema import read_index

from ._build import make_clothing1m


def test_fashion_mnist_command_writes_a_valid_folder(tmp_path, fashion_mnist_dir, capsys):
    out = tmp_path / "fm"
    argv = ["shards", "fashion-mnist", "--out", str(out), "--limit", "500", "--noise", "sym:0.4"]
    assert main([*argv, "--seed", "1"]) == 0
    index = read_index(out)
    assert index.num_samples == 500 and index.num_classes == 10 and index.has_clean_labels
    assert [s.file for s in index.shards] == ["train-000000.tar"]
    # sym:0.4 relabels exactly 200 of 500 samples with another class.
    assert index.noise["spec"] == "sym:0.4" and index.noise["realized_rate"] == 0.4
    assert index.channels == 1 and index.image_size == [28, 28]
    assert "realized wrong-label rate 0.4000" in capsys.readouterr().out
    # A second run refuses to overwrite, exit 2; with --overwrite it succeeds.
    assert main([*argv, "--seed", "1"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main([*argv, "--seed", "1", "--overwrite", "--max-samples-per-shard", "200"]) == 0
    assert [s.num_samples for s in read_index(out).shards] == [200, 200, 100]


def test_bad_list_file_exits_2_naming_file_and_line(tmp_path, capsys):
    bad = tmp_path / "list.txt"
    bad.write_text("images/a.jpg 1\nimages/b.jpg seven\n")
    code = main(
        ["shards", "from-list", str(bad), "--root", str(tmp_path), "--out", str(tmp_path / "o")]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert f"{bad}, line 2" in err and "'images/b.jpg seven'" in err
    assert "Traceback" not in err and not (tmp_path / "o").exists()


def test_clothing1m_documented_command_with_skip_override(tmp_path, capsys):
    root = tmp_path / "c1m"
    make_clothing1m(root)
    label = root / "label"
    (root / "images/0/04/0004.jpg").write_bytes(b"not a jpeg")  # key 0 of the train list
    argv = [
        "shards",
        "from-list",
        str(label / "noisy_label_kv.txt"),
        "--root",
        str(root),
        "--key-list",
        str(label / "noisy_train_key_list.txt"),
        "--clean-list",
        str(label / "clean_label_kv.txt"),
        "--num-classes",
        "14",
        "--out",
        str(tmp_path / "train"),
    ]
    assert main(argv) == 2
    assert "images/0/04/0004.jpg: image does not decode" in capsys.readouterr().err
    # 1 of 4 samples lost is above the default limit (5 %): refused with the counts, no folder.
    assert main([*argv, "data.on_error=skip"]) == 2
    err = capsys.readouterr().err
    assert "of the 4 source samples, 1 (25.0%) are unusable" in err
    assert "data.max_quarantine_fraction=0.05" in err and not (tmp_path / "train").exists()
    assert main([*argv, "data.on_error=skip", "data.max_quarantine_fraction=0.5"]) == 0
    index = read_index(tmp_path / "train")
    assert index.num_samples == 3 and index.extra["num_quarantined"] == 1
    [row] = pq.read_table(tmp_path / "train" / "quarantine.parquet").to_pylist()
    assert row["key"] == "images/0/04/0004.jpg" and "does not decode" in row["reason"]
    assert (
        json.loads((tmp_path / "train" / "index.json").read_text())["format"] == "jumpray-shards/1"
    )

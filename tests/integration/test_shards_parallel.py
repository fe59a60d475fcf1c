"""``jumpray shards ... --parallel N`` on a real local Ray: the same samples, idx and keys as a
serial run, the driver's progress and a bad entry's error naming its list line."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from jumpray.cli import main
from jumpray.data.convert import write_from_folder, write_from_list
from jumpray.errors import DataError

pytestmark = pytest.mark.integration

_spec = importlib.util.spec_from_file_location(
    "_data_build", Path(__file__).parents[1] / "unit" / "data" / "_build.py"
)
build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build)


def test_parallel_equals_serial_on_ray(tmp_path, ray_cluster, capsys):
    root = tmp_path / "root"
    for k, img in enumerate(build.tiny_images(6, size=6, channels=3, seed=3)):
        (root / f"c{k % 3}").mkdir(parents=True, exist_ok=True)
        (root / f"c{k % 3}" / f"{k}.png").write_bytes(build.png_bytes(img))
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
    lines = [f"{files[i % 6]} {i % 3}" for i in range(40)]
    lines[2] = "c0/gone.png 0"  # quarantined by the first task: later idx shift down
    listed = tmp_path / "list.txt"
    listed.write_text("\n".join(lines) + "\n")
    common = ["--root", str(root), "--max-samples-per-shard", "6", "--noise", "sym:0.3"]
    common += ["data.on_error=skip", "data.max_quarantine_fraction=0.5"]
    assert main(["shards", "from-list", str(listed), "--out", str(tmp_path / "s"), *common]) == 0
    argv = ["shards", "from-list", str(listed), "--out", str(tmp_path / "p"), "--parallel", "2"]
    assert main([*argv, *common]) == 0
    assert "39 in" in capsys.readouterr().out
    assert build.shard_members(tmp_path / "p") == build.shard_members(tmp_path / "s")
    serial, par = (json.loads((tmp_path / d / "index.json").read_text()) for d in "sp")
    serial.pop("shards"), par.pop("shards")
    assert par == serial
    assert pq.read_table(tmp_path / "p" / "quarantine.parquet").equals(
        pq.read_table(tmp_path / "s" / "quarantine.parquet")
    )
    # A folder source in 3 tasks.
    write_from_folder(root, out=tmp_path / "fs")
    write_from_folder(root, out=tmp_path / "fp", parallel=3)
    assert build.shard_members(tmp_path / "fp") == build.shard_members(tmp_path / "fs")
    # Under on_error=raise the task's error reaches the caller as itself, naming the line.
    with pytest.raises(DataError, match=r"list.txt, line 3: c0/gone.png: image file unreadable"):
        write_from_list(listed, root=root, out=tmp_path / "bad", num_classes=3, parallel=2)
    assert not (tmp_path / "bad").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]

"""The list and folder converters at scale, checked structurally (no Ray, no timing): the source is
streamed (at most one entry pending between source and writer), the folder walk keeps the sorted
order, progress carries an ETA, bad entries name their list line, and parallel parts merged by
the driver give the samples of a serial run."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from jumpray.data import convert
from jumpray.data.filelist import ListEntries, walk_sorted
from jumpray.data.writer import ShardWriter
from jumpray.errors import DataError

from ._build import png_bytes, shard_members, tiny_images


def _source(tmp_path: Path, n: int, *, missing: tuple[int, ...] = ()) -> tuple[Path, Path]:
    """A root with 4 tiny PNGs and a list of ``n`` lines over them (line i+1 = entry i); the
    entries in ``missing`` name a file that does not exist."""
    root = tmp_path / "root"
    (root / "img").mkdir(parents=True)
    for k, img in enumerate(tiny_images(4, size=6, channels=3, seed=1)):
        (root / "img" / f"{k}.png").write_bytes(png_bytes(img))
    lines = [f"img/{'gone' if i in missing else i % 4}.png {(i * 7) % 5}" for i in range(n)]
    listed = tmp_path / "list.txt"
    listed.write_text("\n".join(lines) + "\n")
    return root, listed


def test_the_list_is_streamed_one_entry_at_a_time(tmp_path, monkeypatch):
    root, listed = _source(tmp_path, 300)
    pending = {"max": 0, "now": 0, "writing": False}

    class CountingEntries(ListEntries):
        def __call__(self):
            for entry in super().__call__():
                if pending["writing"]:
                    pending["now"] += 1
                    pending["max"] = max(pending["max"], pending["now"])
                yield entry

    def consumed(method):
        def wrapped(self, *args, **kwargs):
            pending["writing"] = True
            pending["now"] -= 1
            return method(self, *args, **kwargs)

        return wrapped

    start = ShardWriter.__init__

    def start_writing(self, *args, **kwargs):
        start(self, *args, **kwargs)
        pending["writing"] = True

    monkeypatch.setattr(convert, "ListEntries", CountingEntries)
    monkeypatch.setattr(ShardWriter, "__init__", start_writing)
    monkeypatch.setattr(ShardWriter, "write", consumed(ShardWriter.write))
    monkeypatch.setattr(
        convert, "read_list_file", lambda *a, **k: pytest.fail("the whole list was read")
    )
    index = convert.write_from_list(
        listed, root=root, out=tmp_path / "out", num_classes=5, noise="sym:0.2"
    )
    assert index.num_samples == 300
    # The writer took each entry before the next was read: nothing of the list is held.
    assert pending["max"] == 1 and pending["now"] == 0


def test_folder_walk_keeps_sorted_rglob_order(tmp_path):
    root = tmp_path / "t"
    for rel in ("a/x.png", "a.png", "a-b/c.png", "A/z.png", "a/b/c/d.png", "a/b.png", "b", "a0"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    (root / "link").symlink_to(root / "a")  # like rglob: a symlinked folder is not entered
    expected = [p.relative_to(root).as_posix() for p in sorted(root.rglob("*")) if p.is_file()]
    assert list(walk_sorted(root)) == expected


def test_progress_lines_carry_an_eta(tmp_path, caplog, monkeypatch):
    root, listed = _source(tmp_path, 40)
    caplog.set_level(logging.INFO, logger="jumpray")
    monkeypatch.setattr(convert.ShardWriter, "__init__", _every_line(ShardWriter.__init__))
    convert.write_from_list(listed, root=root, out=tmp_path / "out", num_classes=5)
    lines = [r.getMessage() for r in caplog.records if "samples written" in r.getMessage()]
    assert len(lines) > 2 and all(" ETA " in line and "/40 (" in line for line in lines)
    assert lines[-1].startswith("out: samples written: 40/40 (100%)")


def _every_line(init):
    def wrapped(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.progress.every_s = 0.0  # a line per sample instead of every 10 s

    return wrapped


def test_bad_entry_names_the_list_line_and_the_fix(tmp_path):
    root, listed = _source(tmp_path, 6, missing=(3,))
    with pytest.raises(DataError) as caught:
        convert.write_from_list(listed, root=root, out=tmp_path / "a", num_classes=5)
    message = str(caught.value)
    assert f"{listed}, line 4: img/gone.png: image file unreadable" in message
    assert "data.on_error=skip" in message
    assert not (tmp_path / "a").exists()
    listed.write_text("img/0.png 1\nimg/1.png 9\n")
    with pytest.raises(DataError, match=r"list.txt, line 2: label 9 of img/1.png is outside"):
        convert.write_from_list(listed, root=root, out=tmp_path / "b", num_classes=5)


def _in_process(calls, progress):
    """The Ray runner's contract, in this process: one part per call, in order."""
    return [convert._write_part(*call) for call in calls]


@pytest.mark.parametrize("parallel", [2, 3])
def test_parallel_parts_give_the_serial_samples(tmp_path, monkeypatch, parallel):
    # Entries 1 and 2 are missing: the first part quarantines them, so every later part's idx
    # must be shifted down when the driver appends it.
    root, listed = _source(tmp_path, 50, missing=(1, 2))
    options = dict(
        root=root,
        num_classes=5,
        noise="pairflip:0.3",
        seed=4,
        on_error="skip",
        max_quarantine_fraction=0.5,
        max_samples_per_shard=8,
    )
    serial = convert.write_from_list(listed, out=tmp_path / "serial", **options)
    monkeypatch.setattr(convert, "_run_parts", _in_process)
    par = convert.write_from_list(listed, out=tmp_path / "par", parallel=parallel, **options)
    assert shard_members(tmp_path / "par") == shard_members(tmp_path / "serial")
    assert (par.num_samples, par.mean, par.std, par.noise, par.extra) == (
        serial.num_samples,
        serial.mean,
        serial.std,
        serial.noise,
        serial.extra,
    )
    assert len(par.shards) > len(serial.shards) - 1  # each part starts a tar of its own
    tables = [pq.read_table(tmp_path / d / "quarantine.parquet") for d in ("serial", "par")]
    assert tables[0].equals(tables[1]) and tables[0].num_rows == 2
    assert sorted(p.name for p in (tmp_path / "par").iterdir() if p.name.startswith(".")) == []


def test_a_serial_command_never_imports_ray(tmp_path):
    root, listed = _source(tmp_path, 5)
    code = (
        "import sys\n"
        "from jumpray.cli import main\n"
        f"rc = main(['shards', 'from-list', {str(listed)!r}, '--root', {str(root)!r}, "
        f"'--out', {str(tmp_path / 'out')!r}, '--parallel', '1'])\n"
        "assert rc == 0 and 'ray' not in sys.modules, sorted(sys.modules)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(convert.__file__).parents[2])}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_write_tasks_leave_one_cpu_free_on_small_machines():
    assert convert._cpus_per_task(2.0, 2) == 0.5  # this box: both tasks fit in 1 CPU
    assert convert._cpus_per_task(4.0, 2) == 1.0
    assert convert._cpus_per_task(16.0, 4) == 1.0
    assert convert._cpus_per_task(1.0, 2) == 0.5  # one core: nothing to leave

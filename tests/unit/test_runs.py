"""Output folders (issue 11, defects 1, 4 and 8): the one guard every command uses, and the
staged publishing of run outputs. No Ray: the guard decides before anything starts."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from jumpray.cli import main
from jumpray.errors import UsageError
from jumpray.runs import MARKER, RunFolder, claim_output


def _image_folder(root, n=4):
    """root/<class>/<i>.png, two classes, mixed sizes: a from-folder source."""
    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(n):
            h, w = rng.integers(8, 20, 2)
            Image.fromarray(rng.integers(0, 255, (h, w), dtype=np.uint8)).save(
                root / c / f"{i}.png"
            )
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))


@pytest.mark.parametrize("where", ["same", "parent", "inside"])
def test_shards_never_writes_over_its_source(tmp_path, capsys, where):
    src = tmp_path / "photos"
    files = _image_folder(src)
    out = {"same": src, "parent": tmp_path, "inside": src / "cat" / "shards"}[where]
    code = main(["shards", "from-folder", str(src), "--out", str(out), "--overwrite"])
    err = capsys.readouterr().err
    assert code == 2 and "the source" in err and "Traceback" not in err
    assert sorted(p.relative_to(src).as_posix() for p in src.rglob("*.png")) == files
    assert not any(p.suffix == ".tar" for p in tmp_path.rglob("*"))


def test_overwrite_replaces_only_a_shard_folder_jumpray_wrote(tmp_path, capsys):
    src, out = tmp_path / "photos", tmp_path / "out"
    _image_folder(src)
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    argv = ["shards", "from-folder", str(src), "--out", str(out)]
    assert main([*argv, "--overwrite"]) == 2
    assert "did not write (notes.txt)" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "mine"
    (out / "notes.txt").unlink()
    assert main(argv) == 0  # an empty folder is fine
    assert main(argv) == 2 and "pass --overwrite" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0
    # a hidden file would be replaced with the folder: refused, with or without --overwrite
    (out / ".git").mkdir()
    (out / ".git" / "HEAD").write_text("ref")
    assert main([*argv, "--overwrite"]) == 2
    assert "did not write (.git)" in capsys.readouterr().err
    assert (out / ".git" / "HEAD").read_text() == "ref"
    fresh = tmp_path / "fresh"
    (fresh / ".git").mkdir(parents=True)
    assert main(["shards", "from-folder", str(src), "--out", str(fresh)]) == 2
    assert (fresh / ".git").is_dir() and not (fresh / "index.json").exists()


def test_out_under_a_file_is_one_paragraph(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    code = main(
        ["shards", "fashion-mnist", "--out", str(tmp_path / "afile" / "sub"), "--limit", "5"]
    )
    err = capsys.readouterr().err
    assert code == 2 and "which is a file" in err and "Traceback" not in err


def _finished_run(out, command="clean", inputs=None):
    claim = claim_output(out, command=command, inputs=inputs or {"shards": out.parent / "s"})
    run = RunFolder(claim).begin()
    (run.staging / "labels.parquet").write_text("new")
    (run.staging / "summary.json").write_text(json.dumps({"checkpoint": str(run.staging / "c")}))
    run.publish(head="summary.json")
    return run


def test_run_folder_rules_and_publish(tmp_path):
    out, shards = tmp_path / "o", tmp_path / "s"
    run = _finished_run(out)
    assert json.loads((out / MARKER).read_text())["state"] == "done"
    # Paths inside published JSON point to the published place; no staging folder is left.
    assert json.loads((out / "summary.json").read_text())["checkpoint"] == str(out / "c")
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
    # A finished run is replaced only with --overwrite; foreign files never; sources never.
    with pytest.raises(UsageError, match="finished `jumpray clean` run.*--overwrite"):
        claim_output(out, command="clean", inputs={"shards": shards})
    with pytest.raises(UsageError, match="the source"):
        claim_output(shards / "x", command="clean", sources=[shards])
    # --overwrite: the new outputs replace the old ones, and an old output this run does not
    # write (clean-shards/ of an earlier --write-shards run) goes too: nothing stale is shipped.
    (out / "clean-shards").mkdir()
    (out / "clean-shards" / "index.json").write_text("{}")
    claim = claim_output(out, command="clean", inputs={"shards": shards}, overwrite=True)
    run = RunFolder(claim).begin()
    assert (out / "labels.parquet").read_text() == "new"  # kept until the new run publishes
    (run.staging / "labels.parquet").write_text("newer")
    (run.staging / "summary.json").write_text("{}")
    run.publish(head="summary.json")
    assert (out / "labels.parquet").read_text() == "newer" and not (out / "clean-shards").exists()
    (out / "stray.txt").write_text("mine")
    with pytest.raises(UsageError, match=r"did not write \(stray.txt\)"):
        claim_output(out, command="clean", overwrite=True)


def test_an_unfinished_run_of_the_same_inputs_resumes(tmp_path):
    out, shards = tmp_path / "o", tmp_path / "s"
    claim = claim_output(out, command="clean", inputs={"shards": shards})
    run = RunFolder(claim).begin()
    (run.staging / "labels.parquet").write_text("half")
    run.abandon(interrupted=True)
    assert json.loads((out / MARKER).read_text())["state"] == "interrupted"
    assert not (out / "labels.parquet").exists()  # nothing half-published
    again = claim_output(out, command="clean", inputs={"shards": shards})
    assert again.resume and not again.replace
    with pytest.raises(UsageError, match="unfinished `jumpray clean` run of other inputs"):
        claim_output(out, command="clean", inputs={"shards": tmp_path / "other"})
    with pytest.raises(UsageError, match="unfinished `jumpray clean` run"):
        claim_output(out, command="score", inputs={"shards": shards})
    assert claim_output(out, command="clean", inputs={"shards": shards}, overwrite=True).replace


def test_a_failed_run_that_published_nothing_is_started_over(tmp_path):
    out, shards = tmp_path / "o", tmp_path / "s"
    run = RunFolder(claim_output(out, command="train", inputs={"shards": shards})).begin()
    run.abandon(interrupted=False)
    again = claim_output(out, command="train", inputs={"shards": tmp_path / "fixed"})
    assert again.replace and not again.resume


def test_the_demo_folder_holds_only_the_demo(tmp_path):
    out = tmp_path / "demo-out"
    (out / "shards").mkdir(parents=True)
    (out / "clean").mkdir()
    assert claim_output(out, command="demo", kind="demo").out == out
    (out / "thesis.pdf").write_text("mine")
    with pytest.raises(UsageError, match="thesis.pdf"):
        claim_output(out, command="demo", kind="demo")


def test_an_unwritable_or_full_output_is_refused_when_the_run_begins(tmp_path, monkeypatch):
    """The drill of issue 17: said up front, before Ray or training starts, naming OUT."""
    import jumpray.runs as runs_module
    from jumpray.errors import UsageError

    claim = claim_output("/proc/jumpray-no-such-out", command="train")
    with pytest.raises(UsageError, match="--out /proc/jumpray-no-such-out cannot be created"):
        RunFolder(claim).begin()
    monkeypatch.setattr(runs_module, "MIN_FREE_MB", 10**12)
    claim = claim_output(tmp_path / "out", command="train")
    with pytest.raises(UsageError, match=r"MB free on its disk .*\(JUMPRAY_MIN_FREE_MB"):
        RunFolder(claim).begin()


def test_a_full_disk_mid_run_is_a_user_error_naming_the_file():
    import errno

    from jumpray.errors import UsageError, user_error

    err = user_error(OSError(errno.ENOSPC, "No space left on device", "/runs/out/labels.parquet"))
    assert isinstance(err, UsageError)
    assert "cannot write /runs/out/labels.parquet: No space left on device; free space" in str(err)
    assert user_error(OSError(errno.ECONNRESET, "reset")) is None  # not the user's to fix

"""``jumpray tune``'s own checks (before Ray starts) and its one-screen summary."""

from __future__ import annotations

from pathlib import Path

from jumpray.cli import main
from jumpray.config import load_config
from jumpray.jobs.tune import summary_text
from jumpray.tune.ledger import RayLedger
from jumpray.tune.sweep import SweepResult


def test_resume_refuses_a_new_config(tmp_path, capsys):
    args = ["tune", "--shards", str(tmp_path), "--out", str(tmp_path / "o"), "--resume"]
    assert main([*args, "train.lr=0.1"]) == 2
    assert "--resume continues the sweep with the config it was started with" in (
        capsys.readouterr().err
    )


def test_out_inside_the_shards_or_among_other_files_is_refused_before_ray(tmp_path, capsys):
    shards = tmp_path / "shards"
    shards.mkdir()
    (shards / "index.json").write_text("{}")
    assert main(["tune", "--shards", str(shards), "--out", str(shards / "sweep")]) == 2
    assert "source" in capsys.readouterr().err
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    assert main(["tune", "--shards", str(shards), "--out", str(other)]) == 2
    err = capsys.readouterr().err
    assert "is not empty (notes.txt) and holds no sweep" in err
    assert (other / "notes.txt").read_text() == "keep me"


def _result(complete: bool) -> SweepResult:
    cfg = load_config(None, {"train": {"epochs": 6}, "tune": {"epochs": 3}})
    best = {
        "trial_id": "ab_00001",
        "params": {"jump.interval": 2, "model.semantic_dim": 32, "train.lr": 0.0312345},
        "metrics": {"val_accuracy": 0.61, "test_accuracy": 0.8123, "f1": 0.9, "epochs_done": 3},
        "status": "finished",
    }
    numbers = {
        "num_trials": 4,
        "num_finished": 2,
        "num_stopped_early": 2,
        "num_failed": 0,
        "val_accuracy_max": 0.61,
        "val_accuracy_median": 0.58,
        "val_accuracy_min": 0.55,
        "val_accuracy_spread": 0.06,
    }
    books = RayLedger({"X": 1}, {}, 0, 0.0)
    return SweepResult(
        out=Path("/o"),
        config=cfg,
        records=[best] * 4,
        best=best,
        numbers=numbers,
        complete=complete,
        num_planned=4,
        concurrency=2,
        files=[Path("/o/best.yaml"), Path("/o/trials.csv")],
        ledger_before=books,
        ledger_after=books,
        parent_run_id="p1",
        tracking_uri="sqlite:///m.db",
        wall_s=123.4,
    )


def test_summary_fits_one_screen_and_names_what_matters():
    text = summary_text(_result(True), shards=Path("s"), test_shards=Path("t"))
    lines = text.splitlines()
    assert len(lines) <= 24 and all(len(line) <= 160 for line in lines)
    assert lines[0].startswith("jumpray tune: 4 of 4 trials on s (searcher random")
    assert "2 ran the budget of 3 epochs, 2 stopped early by ASHA, 0 failed" in text
    assert "best 0.6100, median 0.5800, spread 0.0600" in text
    assert "best trial ab_00001: jump.interval=2 model.semantic_dim=32 train.lr=0.0312" in text
    assert "test accuracy 0.8123, detection F1 0.9000" in text
    assert "jumpray clean --shards s --test-shards t --out OUT --config /o/best.yaml" in text
    assert "(nothing left behind)" in text and "--resume" not in text
    assert "--resume" in summary_text(_result(False), shards=Path("s"))

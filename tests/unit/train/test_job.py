"""``jumpray train`` argument handling that needs no Ray."""

from __future__ import annotations

import pytest

from jumpray.cli import main
from jumpray.jobs.train import summary_text


def test_resume_without_an_earlier_run_is_a_one_paragraph_error(tmp_path, capsys):
    code = main(["train", "--shards", str(tmp_path), "--out", str(tmp_path / "o"), "--resume"])
    assert code == 2
    err = capsys.readouterr().err
    assert "train_run.json does not exist" in err and "Traceback" not in err


def test_bad_override_lists_the_key(tmp_path, capsys):
    code = main(["train", "--shards", str(tmp_path), "--out", str(tmp_path), "train.epochz=3"])
    assert code == 2
    assert "train.epochz: unknown key" in capsys.readouterr().err


def test_summary_text_shows_the_key_numbers(tmp_path):
    final = {
        "loss": 0.5,
        "selected_fraction": 0.61,
        "precision": 0.9,
        "recall": 0.8,
        "f1": 0.847,
        "data_clean_fraction": 0.6,
        "test_accuracy": 0.8123,
        "samples_per_s": 1500.0,
    }
    s = {
        "method": "jumpteaching",
        "shards": "shards/fm",
        "num_samples": 1000,
        "num_classes": 10,
        "epochs": 3,
        "num_workers": 2,
        "use_gpu": False,
        "final": final,
        "mean_epoch_time_s": 1.25,
        "fit_wall_s": 30.0,
        "startup_s": 20.0,
        "num_quarantined": 0,
        "snapshot_epochs": [0, 1, 2],
        "mlflow_run_id": "abc",
        "mlflow_tracking_uri": "sqlite:///mlflow.db",
    }
    text = summary_text(s, out=tmp_path)
    assert "jumpteaching on shards/fm (1000 samples, 10 classes), 3 epochs, 2 worker(s)" in text
    assert "precision 0.900, recall 0.800, F1 0.847" in text
    assert "test accuracy 0.8123" in text and "start-up 20 s" in text and "MLflow run abc" in text


def test_a_data_error_raised_in_a_worker_is_unwrapped():
    from jumpray.errors import DataError
    from jumpray.errors import user_error as _user_error

    class TaskError(Exception):  # shaped like ray.exceptions.RayTaskError
        def __init__(self, cause):
            super().__init__("task failed")
            self.cause = cause

    class GroupError(Exception):  # shaped like ray.train.WorkerGroupError
        def __init__(self, failures):
            super().__init__("workers failed")
            self.worker_failures = failures

    bad = DataError("label changed", key="s1")
    assert _user_error(GroupError({0: RuntimeError("x"), 1: TaskError(bad)})) is bad
    assert _user_error(GroupError({0: RuntimeError("x")})) is None


@pytest.mark.parametrize("command", ["train", "clean"])
@pytest.mark.parametrize("problem", ["missing", "empty"])
def test_a_bad_shard_folder_fails_before_ray_starts(
    tmp_path, capsys, monkeypatch, command, problem
):
    import jumpray.ray_utils

    def no_ray(*args, **kwargs):
        raise AssertionError("Ray was started before the shard folder was checked")

    monkeypatch.setattr(jumpray.ray_utils, "init_ray", no_ray)
    folder = tmp_path / "shards"
    if problem == "empty":
        folder.mkdir()
    code = main([command, "--shards", str(folder), "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err
    reason = "does not exist" if problem == "missing" else "holds no .tar shards"
    assert str(folder) in err and reason in err and "Fix: point --shards" in err
    assert "Traceback" not in err

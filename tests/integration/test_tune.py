"""``jumpray tune`` end to end on a small Fashion-MNIST subset: ASHA stops weak trials, MLflow holds
one parent and a child per trial, best.yaml drives ``jumpray clean``, placement groups are removed
and the sweep leaves the actors and placement groups it found; a killed trial is retried from its
checkpoint; an interrupted sweep resumes without re-running its finished trial. Real Ray Train
runs: about 3 minutes on an idle 2-core box."""

from __future__ import annotations

import csv
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from jumpray.cli import main
from jumpray.data.convert import write_fashion_mnist

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Fashion-MNIST profile, tiny: 600 noisy samples (sym:0.4), batch 32, 3 epochs, 1 warm-up.
BASE = [
    "model.semantic_dim=16",
    "train.epochs=3",
    "train.batch_size=32",
    "train.eval_batch_size=256",
    "jump.warmup_epochs=1",
    "selection.class_floor=1.2",
    "selection.temperature=1.0",
    "selection.blend=false",
    "tune.searcher=grid",
    "tune.num_samples=1",
]


@pytest.fixture(scope="module")
def shards(tmp_path_factory, fashion_mnist_dir) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tune_shards")
    write_fashion_mnist(root / "train", split="train", limit=600, noise="sym:0.4", seed=0)
    write_fashion_mnist(root / "test", split="test", limit=200)
    return {"train": root / "train", "test": root / "test"}


def _args(shards, out, uri, *extra):
    return [
        "tune",
        "--shards",
        str(shards["train"]),
        "--test-shards",
        str(shards["test"]),
        "--out",
        str(out),
        *extra,
        f"tracking.uri={uri}",
        "tracking.experiment=test-tune",
    ]


def _live_groups() -> int:
    import ray

    return sum(1 for g in ray.util.placement_group_table().values() if g["state"] != "REMOVED")


def _children(uri: str, parent: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("test-tune")
    query = f"tags.mlflow.parentRunId = '{parent}'"
    return client, client.search_runs([exp.experiment_id], query)


def test_sweep_stops_weak_trials_tracks_them_and_leaves_nothing(ray_cluster, shards, tmp_path):
    from jumpray.tune.ledger import take_ledger

    out, uri = tmp_path / "tune", f"sqlite:///{tmp_path / 'mlflow.db'}"
    before = take_ledger()
    # Grid order: lr 0.05 with J = 1, 2 first, then lr 1e-5 (learns nothing) with J = 1, 2; two at
    # a time, so the weak pair meets the strong pair's first-epoch results at ASHA's rung.
    space = "tune.search_space={train.lr: {grid: [0.05, 0.00001]}, jump.interval: {grid: [1, 2]}}"
    assert main(_args(shards, out, uri, *BASE, space)) == 0

    # Every placement group is removed (Train V2 removes a stopped trial's a few seconds late).
    deadline = time.monotonic() + 20
    while _live_groups() and time.monotonic() < deadline:
        time.sleep(1)
    assert _live_groups() == 0
    # Nothing of the four Train runs stays: same actors (Ray's cluster services apart) and
    # placement groups as before the sweep.
    from jumpray.tune.ledger import settle

    after = settle(before)
    assert after.actors == before.actors and after.placement_groups == before.placement_groups
    assert after.growth(before) == []
    assert all(n == 1 for n in after.services.values())  # created once, never multiplied

    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert len(rows) == 4 and {r["status"] for r in rows} <= {"finished", "stopped_early"}
    stopped = [r for r in rows if r["stopped_early"] == "True"]
    assert stopped and all(float(r["epochs_done"]) < 3 for r in stopped)
    weak = [r for r in rows if float(r["train.lr"]) < 1e-3]  # the lr that learns nothing
    assert len(weak) == 2 and all(r["stopped_early"] == "True" for r in weak)
    assert all("val_accuracy" in r and "test_accuracy" in r and "f1" in r for r in rows)
    for name in ("best.yaml", "tune_train_lr.png", "tune_jump_interval.png"):
        assert (out / name).is_file()

    run = json.loads((out / "tune_run.json").read_text())
    client, children = _children(uri, run["parent_run_id"])
    assert len(children) == 4 and {c.info.status for c in children} == {"FINISHED"}
    assert {c.data.tags["jumpray.status"] for c in children} >= {"finished", "stopped_early"}
    parent = client.get_run(run["parent_run_id"])
    assert parent.info.status == "FINISHED" and "best_val_accuracy" in parent.data.metrics
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "tune")}
    assert {"tune/best.yaml", "tune/trials.csv"} <= artifacts

    # best.yaml is a config `jumpray clean` accepts (one epoch fewer to keep the test short).
    # Run in this process, the clean job too leaves nothing behind: its snapshot store, its
    # readers' quarantine sinks and its Train run's actors all end with it.
    before_clean = take_ledger()
    clean = tmp_path / "clean"
    args = ["clean", "--shards", str(shards["train"]), "--out", str(clean)]
    args += ["--config", str(out / "best.yaml"), "train.epochs=2", "tracking.enabled=false"]
    assert main(args) == 0
    assert (clean / "labels.parquet").is_file()
    assert settle(before_clean).growth(before_clean) == []


def _kill_then_interrupt(out: Path, stop: threading.Event) -> None:
    """Kill the first trial's process after its first epoch (Tune retries it), then send SIGUSR1
    (Tune's interrupt, like Ctrl-C) once a trial has ended."""
    killed = False
    while not stop.is_set():
        try:
            records = json.loads((out / "tune_trials.json").read_text())
        except (OSError, ValueError):
            records = []
        first_epoch = [r for r in records if r["metrics"].get("epochs_done") == 1.0]
        if first_epoch and not killed:
            os.kill(first_epoch[0]["pid"], signal.SIGKILL)
            killed = True
        if any(r["status"] != "running" for r in records):
            os.kill(os.getpid(), signal.SIGUSR1)
            return
        time.sleep(0.2)


def test_killed_trial_resumes_and_interrupted_sweep_continues_without_rerunning(
    ray_cluster, shards, tmp_path, capsys
):
    out, uri = tmp_path / "tune", f"sqlite:///{tmp_path / 'mlflow.db'}"
    space = "tune.search_space={jump.interval: {grid: [1, 2]}}"
    extra = [*BASE, "train.epochs=2", "train.lr=0.05", "tune.max_concurrent_trials=1", space]
    stop = threading.Event()
    watcher = threading.Thread(target=_kill_then_interrupt, args=(out, stop), daemon=True)
    watcher.start()
    try:
        assert main(_args(shards, out, uri, *extra)) == 130  # interrupted
    finally:
        stop.set()
    assert "--resume" in capsys.readouterr().out
    first = json.loads((out / "tune_trials.json").read_text())
    finished = [r for r in first if r["status"] == "finished"]
    assert len(finished) == 1
    done_id = finished[0]["trial_id"]
    # Its process was killed after epoch 1: the retry resumed from that epoch's checkpoint.
    assert finished[0]["metrics"]["attempt_start_epoch"] == 1.0
    summary = out / "trials" / done_id / "train_summary.json"
    stamp = summary.stat().st_mtime_ns
    results = out / "ray_tune" / "sweep"
    progress = next(results.glob(f"*{done_id}*/progress.csv")).read_text()

    resume = ["tune", "--shards", str(shards["train"]), "--test-shards", str(shards["test"])]
    assert main([*resume, "--out", str(out), "--resume"]) == 0
    records = json.loads((out / "tune_trials.json").read_text())
    assert len(records) == 2 and {r["status"] for r in records} == {"finished"}
    # The finished trial was not run again: same summary file, same Tune results.
    assert summary.stat().st_mtime_ns == stamp
    assert next(results.glob(f"*{done_id}*/progress.csv")).read_text() == progress
    run = json.loads((out / "tune_run.json").read_text())
    client, children = _children(uri, run["parent_run_id"])
    assert len(children) == 2 and {c.info.status for c in children} == {"FINISHED"}
    assert client.get_run(run["parent_run_id"]).info.status == "FINISHED"
    assert len(list(csv.DictReader((out / "trials.csv").open()))) == 2

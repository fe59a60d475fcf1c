"""Ray Train end to end on small real shards (Fashion-MNIST): DDP on 2 CPU workers with a real
worker kill, exact resume and plain-loop equality with 1 worker, snapshots that outlive the workers,
MLflow, the CLI. Few fits, tiny data: about 2-3 minutes on 2 cores."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from jumpray.checkpoint import load_checkpoint
from jumpray.config import load_config
from jumpray.data.convert import write_arrays
from jumpray.data.decode import resolve_normalization
from jumpray.data.fashion_mnist import load_fashion_mnist
from jumpray.data.shards import read_shard_rows, read_shards, scan_folder
from jumpray.models import build_model
from jumpray.train.launch import fit
from jumpray.train.local import ArraySet, run_local

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_TRAIN, N_TEST, EPOCHS = 600, 200, 3


@pytest.fixture(scope="module")
def shards(tmp_path_factory, fashion_mnist_dir) -> dict[str, Path]:
    """600 noisy training samples in 3 unequal shards (250/250/100) and 200 clean test samples."""
    root = tmp_path_factory.mktemp("fm_shards")
    images, labels = load_fashion_mnist("train", limit=N_TRAIN, root=fashion_mnist_dir)
    write_arrays(
        root / "train",
        images,
        labels,
        num_classes=10,
        noise="sym:0.4",
        seed=0,
        max_samples_per_shard=250,
    )
    test_images, test_labels = load_fashion_mnist("test", limit=N_TEST, root=fashion_mnist_dir)
    write_arrays(root / "test", test_images, test_labels, num_classes=10)
    return {"train": root / "train", "test": root / "test"}


def _config(tmp_path: Path, **sections):
    base = {
        "train": {"epochs": EPOCHS, "batch_size": 64},
        "jump": {"warmup_epochs": 2},
        "model": {"semantic_dim": 16},
        "scaling": {"num_workers": 2, "max_failures": 1},
        "tracking": {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}", "experiment": "test-train"},
    }
    for name, values in sections.items():
        base[name] = base.get(name, {}) | values
    return load_config(None, base)


def _plain_rows(folder: Path) -> ArraySet:
    """The shards' rows in (shard, position) order, read without Ray."""
    scan = scan_folder(folder)
    rows = [b for s in scan.shards for b, _ in read_shard_rows(s.path)]

    def cat(k):
        return torch.from_numpy(np.concatenate([r[k] for r in rows]))

    return ArraySet(cat("image"), cat("given_label"), cat("idx"), cat("clean_label"))


def _alive_train_workers() -> int:
    from ray.util.state import list_actors

    actors = list_actors(filters=[("state", "=", "ALIVE")], limit=1000)
    return sum(1 for a in actors if "TrainWorker" in (a.class_name or ""))


def test_two_workers_survive_a_kill_with_consistent_flags(ray_cluster, shards, tmp_path, caplog):
    import mlflow.tracking

    caplog.set_level(logging.INFO, logger="jumpray")
    cfg = _config(tmp_path)
    marker = tmp_path / "killed.txt"
    result = fit(
        cfg,
        train=read_shards(shards["train"]),
        test=read_shards(shards["test"]),
        out_dir=tmp_path / "out",
        fault_injection={"rank": 1, "epoch": 1, "batch": 2, "marker": str(marker)},
    )
    h = result.history

    # A real SIGKILL happened mid-epoch 1; the restart resumed from epoch 0's checkpoint.
    assert marker.exists()
    assert [m["epoch"] for m in h] == [0, 1, 2]
    assert [m["attempt_start_epoch"] for m in h] == [0, 1, 1]
    assert result.extra["reported_epochs"] == [0, 1, 2]
    # Every idx exactly once per epoch across the two ranks; the same flags on both ranks.
    for m in h:
        assert m["num_samples"] == N_TRAIN
        assert (m["num_unique_seen"], m["num_seen_multiple"], m["num_unseen"]) == (N_TRAIN, 0, 0)
        assert m["flags_same_on_all_ranks"] == 1.0
        assert m["history_same_on_all_ranks"] == 1.0
        assert m["test_num_samples"] == N_TEST
    # Shards of 250/250/100 rows split unequally: the shorter rank took dummy steps, no hang.
    assert sum(m["num_dummy_steps"] for m in h) > 0
    # Loss falls over the warm-up; selection starts at epoch 2 (J = 1).
    assert h[1]["loss"] < h[0]["loss"]
    assert h[0]["selected_fraction"] == h[1]["selected_fraction"] == 1.0
    assert h[2]["selected_fraction"] < 1.0
    assert 0.55 < h[0]["data_clean_fraction"] < 0.65  # sym:0.4 on 600 samples

    # The checkpoint: all flag generations with one visit per epoch, every given label.
    state = load_checkpoint(result.checkpoint_dir)
    assert state["epoch"] == 2 and state["method_name"] == "jumpteaching"
    assert state["method"]["flags"]["visits"].tolist() == [EPOCHS] * N_TRAIN
    # The per-sample training history: every epoch once, across the kill and resume.
    history = state["method"]["history"]
    assert history["weight"].tolist() == [float(EPOCHS)] * N_TRAIN
    assert history["flag_visits"].tolist() == [EPOCHS - 2] * N_TRAIN  # epochs after warm-up
    plain = _plain_rows(shards["train"])
    assert torch.equal(state["given_label"][plain.idx], plain.given_label)
    assert state["snapshot_epochs"] == [0, 1, 2]

    # Snapshots: the workers are gone, the refs (owned by the store actor) still resolve.
    assert _alive_train_workers() == 0
    import ray

    assert [e for e, _ in result.snapshots] == [0, 1, 2]
    weights = [ray.get(ref) for _, ref in result.snapshots]
    net = build_model(**state["model_args"])
    net.load_state_dict(weights[-1])
    for k, v in state["model"].items():
        assert torch.equal(net.state_dict()[k], v)
    assert not torch.equal(weights[0]["classifier.fc.weight"], weights[2]["classifier.fc.weight"])

    # Files of OUT/ and the MLflow run.
    out = tmp_path / "out"
    for name in ("checkpoint/state.pt", "config.yaml", "model.pt", "selection_curves.png"):
        assert (out / name).is_file(), name
    assert result.summary["num_quarantined"] == 0 and result.summary["epochs"] == EPOCHS
    client = mlflow.tracking.MlflowClient(cfg.tracking.uri)
    run = client.get_run(result.mlflow_run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["jump.interval"] == "1" and run.data.params["scaling.num_workers"] == "2"
    losses = client.get_metric_history(run.info.run_id, "loss")
    assert sorted(m.step for m in losses) == [0, 1, 2]
    assert {"precision", "recall", "f1", "test_accuracy", "samples_per_s", "epoch_time_s"} <= set(
        run.data.metrics
    )
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "train_summary.json", "selection_curves.png", "model"} <= artifacts
    # One progress line per epoch on the driver, with an ETA.
    lines = [r.getMessage() for r in caplog.records if r.name == "jumpray.train.progress"]
    assert [ln.split(" | ")[0] for ln in lines] == [
        "jumpteaching: epoch 1/3",
        "jumpteaching: epoch 2/3",
        "jumpteaching: epoch 3/3",
    ]
    assert all("ETA" in ln and "test acc" in ln for ln in lines)


def test_one_worker_gives_the_plain_loop_flags_even_across_a_kill(ray_cluster, shards, tmp_path):
    cfg = _config(
        tmp_path,
        jump={"warmup_epochs": 1},
        scaling={"num_workers": 1},
        data={"shuffle_buffer": 0, "preserve_order": True},
        tracking={"enabled": False},
    )
    source = read_shards(shards["train"])
    result = fit(
        cfg,
        train=source,
        out_dir=tmp_path / "out",
        fault_injection={"rank": 0, "epoch": 1, "batch": 3, "marker": str(tmp_path / "k")},
    )
    assert (tmp_path / "k").exists()
    assert [m["attempt_start_epoch"] for m in result.history] == [0, 1, 1]

    # The plain core loop on the same rows in the same order, the same seeds, 1 thread.
    mean, std = resolve_normalization(
        None, None, channels=1, index_mean=source.info.mean, index_std=source.info.std
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        plain = run_local(
            cfg,
            _plain_rows(shards["train"]),
            num_classes=10,
            shuffle=False,
            mean=list(mean),
            std=list(std),
        )
    finally:
        torch.set_num_threads(threads)
    flags = load_checkpoint(result.checkpoint_dir)["method"]["flags"]
    local_flags = plain.method.flags.state_dict()
    assert torch.equal(flags["slots"], local_flags["slots"])
    assert torch.equal(flags["visits"], local_flags["visits"])
    assert 0 < int(flags["slots"].sum()) < N_TRAIN
    for ray_m, local_m in zip(result.history, plain.history, strict=True):
        assert ray_m["loss"] == pytest.approx(local_m["loss"], rel=1e-6)
        assert ray_m["selected_fraction"] == local_m["selected_fraction"]
    # The training history too, across the kill: counts exact, probabilities to float noise.
    history = load_checkpoint(result.checkpoint_dir)["method"]["history"]
    local_history = plain.method.history.state_dict()
    for name in ("clean_count", "flag_visits", "weight"):
        assert torch.equal(history[name], local_history[name]), name
    torch.testing.assert_close(
        history["given_sum"], local_history["given_sum"], rtol=1e-5, atol=1e-6
    )

    def dense(h):  # C = 10 <= top_k: the whole running sum per sample
        return torch.zeros(N_TRAIN, 10).scatter(1, h["top_labels"].long(), h["top_sums"])

    torch.testing.assert_close(dense(history), dense(local_history), rtol=1e-5, atol=1e-6)


def test_cli_coteaching_with_dead_tracking_server_then_resume(
    ray_cluster, shards, tmp_path, capsys
):
    from jumpray.cli import main

    out = tmp_path / "out"
    common = [
        "train",
        "--shards",
        str(shards["train"]),
        "--out",
        str(out),
        "method.name=coteaching",
        "scaling.num_workers=2",
        # Nothing listens there: every tracking call warns, training goes on.
        "tracking.uri=http://127.0.0.1:9",
    ]
    with pytest.warns(RuntimeWarning, match="MLflow start failed"):
        assert main([*common, "train.epochs=2"]) == 0
    text = capsys.readouterr().out
    assert "jumpray train: coteaching" in text and "2 epochs, 2 worker(s)" in text
    state = load_checkpoint(out / "checkpoint")
    assert state["method_name"] == "coteaching" and len(state["method"]["nets"]) == 2
    for m in state["history"]:
        assert m["num_unique_seen"] == N_TRAIN and m["num_seen_multiple"] == 0
    # Co-teaching keeps 1 - forget rate: all at epoch 0, fewer later (index noise rate 0.4).
    assert state["history"][0]["selected_fraction"] == 1.0
    assert state["history"][1]["selected_fraction"] < 1.0

    # --resume continues the same Ray Train run from its last checkpoint for one more epoch.
    with pytest.warns(RuntimeWarning):
        assert main([*common, "train.epochs=3", "--resume"]) == 0
    state = load_checkpoint(out / "checkpoint")
    assert [m["epoch"] for m in state["history"]] == [0, 1, 2]
    assert [m["attempt_start_epoch"] for m in state["history"]] == [0, 0, 2]


def test_driver_mode_runs_the_worker_without_ray_train(ray_cluster, shards, tmp_path):
    cfg = _config(
        tmp_path,
        method={"name": "jocor"},
        train={"epochs": 2},
        scaling={"num_workers": 0},
        tracking={"enabled": False},
    )
    result = fit(cfg, train=read_shards(shards["train"]), out_dir=tmp_path / "out")
    assert [m["epoch"] for m in result.history] == [0, 1]
    assert all(m["num_unique_seen"] == N_TRAIN for m in result.history)
    assert [e for e, _ in result.snapshots] == [0, 1]
    assert load_checkpoint(result.checkpoint_dir)["method_name"] == "jocor"
    assert result.summary["num_workers"] == 0


def test_cli_reports_bad_input_in_one_paragraph(ray_cluster, tmp_path, capsys):
    from jumpray.cli import main

    code = main(["train", "--shards", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")])
    assert code == 2
    err = capsys.readouterr().err
    assert "jumpray train: error:" in err and "nowhere" in err and "Traceback" not in err


def test_one_worker_with_rows_in_memory_takes_the_free_cores(ray_cluster, shards, tmp_path):
    """Materialized rows: the worker keeps them in memory, uses the node's 2 CPUs, and the
    summary reports each start-up part."""
    cfg = _config(
        tmp_path,
        train={"epochs": 2},
        jump={"warmup_epochs": 1},
        scaling={"num_workers": 1},
        tracking={"enabled": False},
    )
    result = fit(
        cfg,
        train=read_shards(shards["train"]),
        out_dir=tmp_path / "out",
        startup={"startup_x_s": 1.5},
    )
    for m in result.history:
        assert (m["num_unique_seen"], m["num_seen_multiple"], m["num_unseen"]) == (N_TRAIN, 0, 0)
    s = result.summary
    assert s["torch_threads"] == 2  # 2 CPUs, 1 worker, nothing left to read
    assert s["startup_x_s"] == 1.5  # the caller's parts are kept
    for key in (
        "startup_materialize_s",
        "startup_trainer_s",
        "startup_worker_s",
        "startup_load_rows_s",
        "teardown_s",
    ):
        assert s[key] > 0, key
    assert s["startup_parts_total_s"] >= s["startup_trainer_s"] + s["startup_x_s"]
    # The start-up parts are in the first epoch's metrics only.
    assert "startup_trainer_s" in result.history[0] and "startup_trainer_s" not in result.history[1]


def _flags(result) -> dict[str, torch.Tensor]:
    return load_checkpoint(result.checkpoint_dir)["method"]["flags"]


def test_streamed_rows_keep_the_jump_semantics_of_rows_in_memory(
    ray_cluster, shards, tmp_path, monkeypatch, caplog
):
    """``data.materialize=false``, or rows over the object store budget, stream every epoch:
    every idx is trained on once per epoch (1 and 2 workers), and in read order the flags equal
    those of the same run with the rows in memory."""
    from jumpray.data import shards as shards_module

    def run(name: str, workers: int, **data):
        cfg = _config(
            tmp_path / name,
            train={"epochs": 2},
            jump={"warmup_epochs": 1},
            scaling={"num_workers": workers},
            data=data,
            tracking={"enabled": False},
        )
        return fit(cfg, train=read_shards(shards["train"]), out_dir=tmp_path / name)

    in_order = {"shuffle_buffer": 0, "preserve_order": True}
    kept = run("memory", 1, **in_order)
    streamed = run("stream", 1, materialize=False, **in_order)
    assert kept.history[0]["startup_load_rows_s"] > 0  # read into the worker once
    assert streamed.history[0]["startup_load_rows_s"] == 0.0  # nothing kept: it streams
    for name in ("slots", "visits"):
        assert torch.equal(_flags(kept)[name], _flags(streamed)[name]), name
    assert 0 < int(_flags(streamed)["slots"].sum()) < N_TRAIN
    for a, b in zip(kept.history, streamed.history, strict=True):
        assert a["selected_fraction"] == b["selected_fraction"]

    # Over the budget (materialize on, the share of the object store forced to nothing): the
    # launcher streams, 2 workers, shuffled; each epoch still covers every idx exactly once.
    monkeypatch.setattr(shards_module, "STORE_SHARE", 1e-9)
    # A CLI run earlier in the session leaves the jumpray logger unpropagated (setup_logging).
    monkeypatch.setattr(logging.getLogger("jumpray"), "propagate", True)
    with caplog.at_level(logging.INFO, logger="jumpray"):
        over = run("over", 2)
    assert "streaming, not materializing" in caplog.text
    for m in over.history:
        assert (m["num_unique_seen"], m["num_seen_multiple"], m["num_unseen"]) == (N_TRAIN, 0, 0)
        assert m["flags_same_on_all_ranks"] == 1.0
    assert over.history[0]["startup_load_rows_s"] == 0.0
    # Flags are keyed by idx: each sample's visit count is that of the in-memory run.
    assert torch.equal(_flags(over)["visits"], _flags(kept)["visits"])

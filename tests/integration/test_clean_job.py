"""``jumpray clean`` end to end on a small Fashion-MNIST subset with bad samples, one MLflow run,
and ``jumpray train`` accepting the cleaned shards (slow)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from jumpray.cli import main
from jumpray.data.convert import write_fashion_mnist
from jumpray.data.schema import read_index

pytestmark = [pytest.mark.integration, pytest.mark.slow]

_spec = importlib.util.spec_from_file_location(
    "_data_build", Path(__file__).parents[1] / "unit" / "data" / "_build.py"
)
build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build)

SMOKE = str(Path(__file__).parents[2] / "configs" / "smoke.yaml")


def test_clean_writes_every_output_in_one_mlflow_run(tmp_path, ray_cluster, fashion_mnist_dir):
    shards, test = tmp_path / "train", tmp_path / "test"
    write_fashion_mnist(shards, split="train", limit=800, noise="sym:0.4", seed=0)
    write_fashion_mnist(test, split="test", limit=300)
    # Two bad samples in an extra tar (read too, with a warning): no label; label out of range.
    png = build.png_bytes(build.tiny_images(1, size=28, seed=0)[0])
    build.write_tar(
        shards / "train-000009.tar",
        [
            build.sample("bad0", image=png, cls=None, meta={"idx": 800}),
            build.sample("bad1", image=png, cls=10, meta={"idx": 801}),
        ],
    )
    out, uri = tmp_path / "out", f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["clean", "--shards", str(shards), "--test-shards", str(test), "--out", str(out)]
    args += ["--config", SMOKE, "--write-shards", "data.on_error=skip", "snapshots.keep=2"]
    args += ["score.num_snapshots=2", "clean.relabel=true", "clean.relabel_min_prob=0.5"]
    args += ["tracking.enabled=true", f"tracking.uri={uri}", "tracking.experiment=test-clean"]
    assert main(args) == 0

    labels = pq.read_table(out / "labels.parquet")
    quarantine = pq.read_table(out / "quarantine.parquet")
    assert labels.num_rows == 800 and quarantine.num_rows == 2  # 802 samples in the shards
    assert sorted(quarantine.column("key").to_pylist()) == ["bad0", "bad1"]
    assert sorted(labels.column("idx").to_pylist()) == list(range(800))
    summary = json.loads((out / "summary.json").read_text())
    flagged = sum(labels.column("is_label_issue").to_pylist())
    assert summary["num_samples"] == 800 and summary["num_label_issues"] == flagged
    assert summary["num_quarantined"] == 2
    assert summary["true_noise_rate"] == pytest.approx(0.4)
    assert 0.0 <= summary["f1"] <= 1.0 and "test_accuracy" in summary
    assert summary["decision"]["snapshot_epochs"] == [0, 1]
    # kept = unflagged + relabelled; dropped = the rest
    assert summary["num_kept"] + summary["num_dropped"] == 800
    assert summary["num_kept"] >= 800 - flagged
    index = read_index(out / "clean-shards")
    assert index.num_samples == summary["num_kept"] and index.class_names[0] == "T-shirt/top"
    for name in ("report.html", "report_label_scores.png", "report_selection_curves.png"):
        assert (out / name).is_file()

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["score.num_snapshots"] == "2"
    assert run.data.metrics["clean/f1"] == pytest.approx(summary["f1"])
    assert "test_accuracy" in run.data.metrics  # the training epochs, same run
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "clean")}
    assert {"clean/report.html", "clean/labels.parquet", "clean/report_gallery.png"} <= artifacts
    assert "summary.json" in {a.path for a in client.list_artifacts(run.info.run_id)}

    # The cleaned shards are a shard folder `jumpray train` accepts. In the driver (no Ray Train
    # start-up, about 15 s): the Ray Train retrain on cleaned shards is the example's
    # (test_api_end_to_end.py).
    again = tmp_path / "retrain"
    args = ["train", "--shards", str(out / "clean-shards"), "--out", str(again)]
    args += ["--config", SMOKE, "method.name=ce", "train.epochs=1", "scaling.num_workers=0"]
    assert main(args) == 0
    trained = json.loads((again / "train_summary.json").read_text())
    assert trained["num_samples"] == summary["num_kept"] and trained["epochs"] == 1


def test_clean_streams_end_to_end_when_the_rows_do_not_fit(
    tmp_path, ray_cluster, fashion_mnist_dir, monkeypatch
):
    """Rows over the object store budget: neither the clean job nor the launcher materializes
    them; training and scoring stream, every sample is scored once, the quarantine is complete."""
    from jumpray.data import shards as shards_module

    monkeypatch.setattr(shards_module, "STORE_SHARE", 1e-9)  # nothing fits
    shards = tmp_path / "train"
    write_fashion_mnist(shards, split="train", limit=300, noise="sym:0.4", seed=0)
    png = build.png_bytes(build.tiny_images(1, size=28, seed=0)[0])
    build.write_tar(
        shards / "train-000009.tar", [build.sample("bad0", image=png, cls=None, meta={"idx": 300})]
    )
    out = tmp_path / "out"
    args = ["clean", "--shards", str(shards), "--out", str(out), "--config", SMOKE]
    assert main([*args, "data.on_error=skip", "score.num_snapshots=2"]) == 0

    summary = json.loads((out / "summary.json").read_text())
    assert summary["startup_load_rows_s"] == 0.0  # the worker kept no rows: they streamed
    labels = pq.read_table(out / "labels.parquet")
    assert sorted(labels.column("idx").to_pylist()) == list(range(300))
    assert pq.read_table(out / "quarantine.parquet").column("key").to_pylist() == ["bad0"]
    state = json.loads((out / "train_summary.json").read_text())
    assert state["num_samples"] == 300

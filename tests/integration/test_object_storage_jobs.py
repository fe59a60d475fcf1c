"""The run commands with every folder in object storage: a real S3 server (moto) on loopback.

``jumpray clean`` reads its shards from S3 and writes its outputs, its clean shards and its Ray
Train checkpoints to S3; ``jumpray score --checkpoint s3://...`` reads the checkpoint back; the
credentials never reach a file or an MLflow param.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import jumpray
from jumpray import storage
from jumpray.cli import main
from jumpray.data.convert import write_fashion_mnist

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.s3]

SMOKE = str(Path(__file__).parents[2] / "configs" / "smoke.yaml")


def _table(uri: str):
    return pq.read_table(io.BytesIO(storage.read_bytes(uri)))


def test_clean_and_score_with_every_folder_in_s3(
    tmp_path, ray_cluster, fashion_mnist_dir, s3_bucket
):
    train, test = f"{s3_bucket}/shards/train", f"{s3_bucket}/shards/test"
    # `jumpray shards` writes straight to S3 (index.json published last) ...
    args = ["shards", "fashion-mnist", "--limit", "400", "--noise", "sym:0.4", "--seed", "0"]
    args += ["--out", train]
    assert main(args) == 0
    assert storage.list_files(train) == ["index.json", "quarantine.parquet", "train-000000.tar"]
    # ... exactly what it writes on disk.
    local_train = tmp_path / "train"
    write_fashion_mnist(local_train, split="train", limit=400, noise="sym:0.4", seed=0)
    local_tar = (local_train / "train-000000.tar").read_bytes()
    assert storage.read_bytes(f"{train}/train-000000.tar") == local_tar
    local_test = tmp_path / "test"
    write_fashion_mnist(local_test, split="test", limit=200)
    storage.push_tree(local_test, test, head="index.json")
    out = f"{s3_bucket}/runs/clean"
    db = tmp_path / "mlflow.db"
    args = ["clean", "--shards", train, "--test-shards", test, "--out", out, "--config", SMOKE]
    args += ["--write-shards", "snapshots.keep=2", "score.num_snapshots=2"]
    args += ["tracking.enabled=true", f"tracking.uri=sqlite:///{db}"]
    assert main(args) == 0

    names = storage.list_files(out, recursive=True)
    top = {n.split("/", 1)[0] for n in names}
    assert {"summary.json", "labels.parquet", "quarantine.parquet", "report.html"} <= top
    assert {"checkpoint", "clean-shards", "ray_results", "jumpray_run.json"} <= top
    # Ray Train wrote its checkpoints to S3 itself.
    assert any(n.startswith("ray_results/") and "/checkpoint_" in n for n in names)
    labels = _table(f"{out}/labels.parquet")
    assert sorted(labels.column("idx").to_pylist()) == list(range(400))
    summary = json.loads(storage.read_bytes(f"{out}/summary.json"))
    assert summary["num_samples"] == 400
    assert summary["checkpoint"] == f"{out}/checkpoint"
    assert summary["clean_shards"] == f"{out}/clean-shards"
    marker = json.loads(storage.read_bytes(f"{out}/jumpray_run.json"))
    assert marker["state"] == "done" and marker["inputs"]["shards"] == train
    index = json.loads(storage.read_bytes(f"{out}/clean-shards/index.json"))
    assert index["num_samples"] == summary["num_kept"]
    # No secret anywhere: not in the outputs, not in the MLflow params or tags.
    secret = os.environ["AWS_SECRET_ACCESS_KEY"]
    for name in names:
        if name.endswith((".json", ".yaml", ".html", ".log")):
            assert secret not in storage.read_bytes(f"{out}/{name}").decode(errors="replace")
    assert secret.encode() not in db.read_bytes()

    scored = f"{s3_bucket}/runs/score"
    args = ["score", "--shards", train, "--checkpoint", f"{out}/checkpoint", "--out", scored]
    args += ["tracking.enabled=false"]
    assert main(args) == 0
    rescored = _table(f"{scored}/labels.parquet")
    assert sorted(rescored.column("idx").to_pylist()) == list(range(400))
    assert json.loads(storage.read_bytes(f"{scored}/summary.json"))["num_samples"] == 400

    # Re-running into a finished remote OUT is refused, as on disk; overwrite replaces it, here
    # through the Python API, which takes the same URIs and reads the labels back from S3.
    assert main(args) != 0
    result = jumpray.score_shards(
        train, scored, checkpoint=f"{out}/checkpoint", overwrite=True, tracking__enabled=False
    )
    assert result.labels_path == f"{scored}/labels.parquet"
    assert sorted(result.labels.column("idx").to_pylist()) == list(range(400))

"""The scoring pipeline through Ray Data on tiny hand-made shards with bad samples.

A checkpoint is written by hand (random-init networks as three snapshots), so no training runs:
the actor pool's rows must equal the in-process Scorer's on the same images, rows + quarantined
must equal the samples in the shards, and the cleaned shards must hold exactly the kept samples
with the decided labels.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from jumpray.checkpoint import save_checkpoint
from jumpray.cli import main
from jumpray.config import load_config
from jumpray.core import detection_metrics
from jumpray.data.scan import scan_folder
from jumpray.data.schema import parse_label_member, parse_meta_member, read_index
from jumpray.data.tario import TarSampleReader
from jumpray.errors import ConfigError
from jumpray.models import build_model
from jumpray.score.decide import Decision, relabel_decision
from jumpray.score.scorer import Scorer, ScorerSpec

pytestmark = pytest.mark.integration

_spec = importlib.util.spec_from_file_location(
    "_data_build", Path(__file__).parents[1] / "unit" / "data" / "_build.py"
)
build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build)

C, K, GOOD = 4, 4, 12
MODEL_ARGS = {
    "backbone": "cnn28",
    "num_classes": C,
    "num_bits": K,
    "in_channels": 1,
    "dropout": 0.0,
}
DATA = {"num_samples": GOOD + 3, "channels": 1, "image_hw": [8, 8], "mean": [0.5], "std": [0.25]}


def _shards(folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """12 good 8x8 samples (3 wrong labels) in two tars, plus 3 bad ones; C = 4."""
    folder.mkdir()
    images = build.tiny_images(GOOD, size=8, seed=3)
    clean = np.arange(GOOD) % C
    given = clean.copy()
    given[[1, 6, 11]] = (given[[1, 6, 11]] + 1) % C
    good = [
        build.sample(
            f"s{i:02d}",
            image=build.png_bytes(images[i]),
            cls=int(given[i]),
            meta={"idx": i, "clean": int(clean[i])},
        )
        for i in range(GOOD)
    ]
    bad = [
        build.sample("s12", image=build.png_bytes(images[0]), cls=None, meta={"idx": 12}),
        build.sample("s13", image=b"\x89PNG\r\n\x1a\n not a png", cls=1, meta={"idx": 13}),
        build.sample("s14", image=build.png_bytes(images[1]), cls=9, meta={"idx": 14}),
    ]
    build.write_tar(folder / "t-000000.tar", good[:7] + bad[:2])
    build.write_tar(folder / "t-000001.tar", good[7:] + bad[2:])
    build.write_index(
        folder, {"t-000000.tar": 9, "t-000001.tar": 6}, num_classes=C, channels=1, image_size=[8, 8]
    )
    return images, given, clean


def _checkpoint(folder: Path) -> list[dict]:
    snapshots = []
    for epoch in (3, 4, 5):
        torch.manual_seed(epoch)
        snapshots.append((epoch, build_model(**MODEL_ARGS).state_dict()))
    cfg = load_config(None, {"model": {"semantic_dim": K}, "tracking": {"enabled": False}})
    history = [
        {"epoch": float(e), "selected_fraction": 0.5 + 0.1 * e / 5, "test_accuracy": 0.3}
        for e in range(6)
    ]
    save_checkpoint(
        folder,
        {
            "epoch": 5,
            "model": snapshots[-1][1],
            "model_args": MODEL_ARGS,
            "config": cfg.model_dump(),
            "snapshots": snapshots,
            "snapshot_epochs": [3, 4, 5],
            "history": history,
            "data": DATA,
        },
    )
    return [w for _, w in snapshots]


def _expected(weights: list[dict], images: np.ndarray, given: np.ndarray, **decision) -> dict:
    spec = ScorerSpec(
        model_args=MODEL_ARGS,
        image_size=8,
        channels=1,
        mean=(0.5,),
        std=(0.25,),
        decision=Decision(**decision),
    )
    return Scorer(weights, spec, device="cpu")({"image": images[:, None], "given_label": given})


def test_score_job_rows_quarantine_report_and_clean_shards(tmp_path, ray_cluster):
    images, given, clean = _shards(tmp_path / "shards")
    weights = _checkpoint(tmp_path / "ckpt")
    out = tmp_path / "out"
    args = ["score", "--shards", str(tmp_path / "shards"), "--checkpoint", str(tmp_path / "ckpt")]
    args += ["--out", str(out), "--test-shards", str(tmp_path / "shards")]
    args += ["data.on_error=skip", "data.max_quarantine_fraction=1", "score.num_snapshots=2"]
    args += ["score.batch_size=5"]
    args += ["score.decision=threshold", "score.formula=prob", "score.threshold=0.3"]
    args += ["clean.gallery_size=4"]
    assert main(args) == 0

    table = pq.read_table(out / "labels.parquet")
    quarantine = pq.read_table(out / "quarantine.parquet")
    # rows + quarantined = samples in the shards (12 good + 3 bad)
    assert table.num_rows == GOOD and quarantine.num_rows == 3
    assert sorted(quarantine.column("key").to_pylist()) == ["s12", "s13", "s14"]
    schema = table.schema
    for name, kind in [("key", "string"), ("idx", "int64"), ("given_label", "int64")]:
        assert str(schema.field(name).type) == kind
    for name, kind in [("predicted_label", "int64"), ("clean_label", "int64")]:
        assert str(schema.field(name).type) == kind
    assert str(schema.field("label_score").type) == "double"
    assert str(schema.field("is_label_issue").type) == "bool"
    rows = table.sort_by("idx").to_pydict()
    assert rows["idx"] == list(range(GOOD)) and rows["clean_label"] == clean.tolist()

    # The actor pool's numbers = the in-process Scorer's with the last 2 snapshots.
    exp = _expected(weights[-2:], images, given, formula="prob", threshold=0.3)
    np.testing.assert_allclose(rows["label_score"], exp["label_score"], rtol=1e-5)
    np.testing.assert_allclose(rows["bit_loss_var"], exp["bit_loss_var"], rtol=1e-4)
    assert rows["predicted_label"] == exp["predicted_label"].tolist()
    assert rows["votes"] == exp["votes"].tolist()
    assert rows["is_label_issue"] == exp["is_label_issue"].tolist()

    summary = json.loads((out / "summary.json").read_text())
    m = detection_metrics(exp["is_label_issue"], given, clean)
    assert summary["num_samples"] == GOOD and summary["num_quarantined"] == 3
    assert summary["num_label_issues"] == m["num_flagged"]
    assert summary["estimated_noise_rate"] == pytest.approx(m["flagged_fraction"])
    assert (summary["precision"], summary["recall"]) == (
        pytest.approx(m["precision"]),
        pytest.approx(m["recall"]),
    )
    assert summary["true_noise_rate"] == pytest.approx(3 / GOOD)
    assert summary["decision"]["snapshot_epochs"] == [4, 5]
    # test accuracy = the newest snapshot's classifier on the "test" shards (same good rows)
    last = _expected(weights[-1:], images, given, formula="prob")
    assert summary["test_accuracy"] == pytest.approx(
        float((last["predicted_label"] == given).mean())
    )
    html = (out / "report.html").read_text()
    for png in ("report_label_scores.png", "report_noise_matrix.png", "report_gallery.png"):
        assert f'src="{png}"' in html and (out / png).stat().st_size > 1000

    # The cleaned shards: a valid folder holding exactly the kept samples, relabelled as decided.
    from jumpray.data.shards import read_shards
    from jumpray.score.export import write_clean_shards

    source = read_shards(tmp_path / "shards", on_error="skip", max_quarantine_fraction=1.0)
    written = write_clean_shards(
        source, out / "labels.parquet", tmp_path / "clean", relabel=True, min_prob=0.0
    )
    keep, label, relab = relabel_decision(
        given,
        exp["predicted_label"],
        exp["pred_prob"],
        exp["is_label_issue"],
        relabel=True,
        min_prob=0.0,
    )
    assert written["num_kept"] == int(keep.sum()) and written["num_relabelled"] == int(relab.sum())
    scan = scan_folder(tmp_path / "clean")
    assert scan.rows_in == int(keep.sum()) and len(scan.quarantine) == 0
    index = read_index(tmp_path / "clean")
    assert index.num_samples == int(keep.sum()) and index.num_classes == C
    got = {}
    for tar in sorted((tmp_path / "clean").glob("*.tar")):
        for s in TarSampleReader(tar, read_suffixes=("cls", "json")):
            meta = json.loads(s.members["json"])
            orig = int(meta["source"].split("/s")[-1])
            got[orig] = (
                parse_label_member(s.members["cls"]),
                parse_meta_member(s.members["json"])[1],
            )
    assert sorted(got) == np.flatnonzero(keep).tolist()
    assert all(got[i] == (int(label[i]), int(clean[i])) for i in got)


def test_actor_pool_that_starves_the_reader_is_refused(tmp_path, ray_cluster):
    from jumpray.config import ScoreConfig
    from jumpray.score.pipeline import check_resources

    with pytest.raises(ConfigError, match="less than 1 CPU for reading"):
        check_resources(ScoreConfig(num_actors=3, cpus_per_actor=0.5))
    check_resources(ScoreConfig(num_actors=2, cpus_per_actor=0.5))


def test_score_job_with_confident_learning(tmp_path, ray_cluster):
    from jumpray.score.confident import find_label_issues, rank_label_issues
    from jumpray.score.export import write_clean_shards

    images, given, clean = _shards(tmp_path / "shards")
    weights = _checkpoint(tmp_path / "ckpt")
    out = tmp_path / "out"
    args = ["score", "--shards", str(tmp_path / "shards"), "--checkpoint", str(tmp_path / "ckpt")]
    args += ["--out", str(out), "data.on_error=skip", "data.max_quarantine_fraction=1"]
    args += ["score.num_snapshots=2"]
    args += ["score.batch_size=5", "score.decision=confident", "score.top_k=3"]
    assert main(args) == 0
    # Only the final files remain: no raw or temporary table beside them.
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]

    table = pq.read_table(out / "labels.parquet")
    assert table.num_rows == GOOD
    assert str(table.schema.field("rank").type) == "int64"
    top_type = table.schema.field("top_probs").type
    assert (top_type.list_size, str(top_type.value_type)) == (3, "float")
    rows = table.sort_by("idx").to_pydict()
    # The decision on the rows' own probabilities: p(given) and the top 3 of 4 classes.
    exp = _expected(weights[-2:], images, given, formula="prob")
    np.testing.assert_allclose(rows["top_probs"], exp["top_probs"][:, :3], rtol=1e-5)
    probs = np.zeros((GOOD, C))
    np.put_along_axis(probs, np.asarray(rows["top_labels"]), np.asarray(rows["top_probs"]), 1)
    probs[np.arange(GOOD), given] = rows["prob_given"]
    issues = find_label_issues(given, probs)
    assert rows["is_label_issue"] == issues.tolist()
    ranked = rank_label_issues(given, probs, label_issues=issues)
    assert [rows["rank"][i] for i in ranked] == list(range(1, len(ranked) + 1))
    assert all(rows["rank"][i] is None for i in np.flatnonzero(~issues))
    np.testing.assert_allclose(rows["label_score"], rows["prob_given"])

    summary = json.loads((out / "summary.json").read_text())
    d = summary["decision"]
    assert d["name"] == "confident" and d["filter_by"] == "prune_by_noise_rate"
    assert len(d["class_thresholds"]) == C and d["snapshot_epochs"] == [4, 5]
    assert summary["noise_matrix_method"] == "confident_learning"
    assert np.asarray(summary["estimated_noise_matrix"]).shape == (C, C)
    assert len(summary["estimated_noise_rate_by_class"]) == C
    assert summary["num_label_issues"] == int(issues.sum())
    assert "Confident learning" in (out / "report.html").read_text()

    from jumpray.data.shards import read_shards

    source = read_shards(tmp_path / "shards", on_error="skip", max_quarantine_fraction=1.0)
    written = write_clean_shards(source, out / "labels.parquet", tmp_path / "clean")
    assert written["num_kept"] == GOOD - int(issues.sum())


@pytest.mark.parametrize("source", ["training", "both"])
def test_score_job_from_the_training_history(tmp_path, ray_cluster, source):
    from jumpray.checkpoint import load_checkpoint
    from jumpray.core import SampleHistory

    images, given, clean = _shards(tmp_path / "shards")
    weights = _checkpoint(tmp_path / "ckpt")
    # A history of two epochs for the 15 ids (12 usable), as Jump-teaching would have saved it.
    history = SampleHistory(DATA["num_samples"], C, top_k=10)
    gen = torch.Generator().manual_seed(0)
    for epoch in range(2):
        probs = torch.softmax(torch.randn(DATA["num_samples"], C, generator=gen) * 2, dim=1)
        labels = torch.tensor([*given.tolist(), 0, 0, 0])
        history.record(torch.arange(15), labels, probs, epoch=epoch)
        history.commit(*history.pending())
    history.count_flags(torch.arange(15), torch.arange(15) % 3 == 0)
    state = load_checkpoint(tmp_path / "ckpt")
    state["method"] = {"history": history.state_dict()}
    save_checkpoint(tmp_path / "ckpt", state)

    out = tmp_path / "out"
    args = ["score", "--shards", str(tmp_path / "shards"), "--checkpoint", str(tmp_path / "ckpt")]
    args += ["--out", str(out), "data.on_error=skip", "data.max_quarantine_fraction=1"]
    args += ["score.num_snapshots=2"]
    args += ["score.decision=confident", f"score.source={source}"]
    assert main(args) == 0
    rows = pq.read_table(out / "labels.parquet").sort_by("idx").to_pydict()
    assert rows["idx"] == list(range(GOOD))
    hist = history.lookup(torch.arange(GOOD))
    p_hist = hist["prob_given"].double().numpy()
    if source == "training":
        np.testing.assert_allclose(rows["prob_given"], p_hist, rtol=1e-5)
        assert rows["votes"] == [-1] * GOOD
    else:
        snap = _expected(weights[-2:], images, given, formula="prob")
        np.testing.assert_allclose(rows["prob_given"], (p_hist + snap["prob_given"]) / 2, rtol=1e-5)
    np.testing.assert_allclose(rows["train_clean_rate"], (np.arange(GOOD) % 3 == 0) * 1.0)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["decision"]["source"] == source and summary["num_quarantined"] == 3
    assert summary["num_label_issues"] == sum(rows["is_label_issue"])


def _score_actor_pids() -> list[int]:
    import psutil

    pids = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "ScoreActor" in cmd and "ray::" in cmd:
            pids.append(p.info["pid"])
    return pids


def test_a_scoring_actor_killed_mid_run_loses_and_repeats_no_row(tmp_path, ray_cluster):
    """The drill of issue 17: SIGKILL a scoring actor while it works; Ray Data restarts it and
    retries its batches; labels.parquet holds every sample exactly once."""
    import os
    import signal
    import threading
    import time

    folder, n = tmp_path / "shards", 3000
    folder.mkdir()
    images = build.tiny_images(n, size=8, seed=4)
    per_tar = 500
    for t in range(n // per_tar):
        samples = [
            build.sample(f"k{i:05d}", image=build.png_bytes(images[i]), cls=i % C, meta={"idx": i})
            for i in range(t * per_tar, (t + 1) * per_tar)
        ]
        build.write_tar(folder / f"t-{t:06d}.tar", samples)
    build.write_index(
        folder,
        {f"t-{t:06d}.tar": per_tar for t in range(n // per_tar)},
        num_classes=C,
        channels=1,
        image_size=[8, 8],
    )
    _checkpoint(tmp_path / "ckpt")
    out = tmp_path / "out"
    args = ["score", "--shards", str(folder), "--checkpoint", str(tmp_path / "ckpt")]
    args += ["--out", str(out), "score.batch_size=4", "score.num_snapshots=3"]
    args += ["tracking.enabled=false", "data.materialize=false"]
    killed: list[int] = []

    def kill_one_actor() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            pids = _score_actor_pids()
            if pids:
                time.sleep(1.0)  # let it score some batches first
                os.kill(pids[0], signal.SIGKILL)
                killed.append(pids[0])
            time.sleep(0.1)

    killer = threading.Thread(target=kill_one_actor, daemon=True)
    killer.start()
    assert main(args) == 0
    killer.join(timeout=5)
    assert killed, "no scoring actor was seen to kill"
    idx = pq.read_table(out / "labels.parquet").column("idx").to_pylist()
    assert len(idx) == n and sorted(idx) == list(range(n))

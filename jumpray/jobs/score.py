"""``jumpray score``: every sample of a shard folder scored by a trained run's snapshots (docs/contract.md).

Examples::

    jumpray score --shards shards/fm-train --checkpoint runs/jt/checkpoint --out runs/jt-score
    # the model a training run logged to MLflow (or registered: models:/NAME/VERSION)
    jumpray score --shards shards/fm-train --checkpoint runs:/RUN_ID/model --out runs/s3
    jumpray score --shards shards/fm-train --checkpoint runs/jt/checkpoint --out runs/s2 \\
        score.combine=vote score.num_actors=1 score.cpus_per_actor=1
    # a cluster, one GPU per scoring actor
    RAY_ADDRESS=auto jumpray score --shards /data/c1m --checkpoint runs/c1m/checkpoint \\
        --out runs/c1m-score score.num_actors=4 score.gpus_per_actor=1

The config is the checkpoint's (the training run's resolved config), then ``--config``, then the
overrides. The last ``score.num_snapshots`` snapshots saved in the checkpoint score each sample,
with the images decoded at the size the model was trained at. Writes OUT/labels.parquet,
OUT/summary.json, OUT/quarantine.parquet and OUT/report.html (with its PNGs), built aside and
published at the end; with ``--test-shards`` the summary also has the newest snapshot's
``test_accuracy``. ``summary.json`` lists ``warnings`` when the model looks useless
(:mod:`jumpray.score.sanity`); they are printed and shown at the top of the report too.

The scoring and the files are :func:`jumpray.score.outputs.score_and_report`, which the clean
job shares.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from jumpray.cli import add_config_arguments, add_overwrite_argument
from jumpray.config import RunConfig, load_config
from jumpray.log import echo, get_logger
from jumpray.score.outputs import SUMMARY_FILE, score_and_report
from jumpray.storage import fetch_folder, is_uri, location, redact

__all__ = ["add_arguments", "run", "run_score", "summary_text"]

log = get_logger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shards", type=location, required=True, help="the shard folder to score")
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="a checkpoint folder (OUT/checkpoint of jumpray train or clean), or the MLflow "
        "model they logged: runs:/RUN_ID/model or models:/NAME/VERSION (tracking.uri)",
    )
    parser.add_argument("--out", type=location, required=True, help="the output folder")
    parser.add_argument(
        "--test-shards", type=location, default=None, help="clean test shards (adds test_accuracy)"
    )
    parser.add_argument(
        "--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or local)"
    )
    add_overwrite_argument(parser)
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Score the shards with the checkpoint's snapshots; print a one-screen summary."""
    from jumpray.jobs._run import job_arguments

    names = ("shards", "checkpoint", "out", "test_shards", "config", "overrides", "address")
    summary = run_score(**job_arguments(args, *names, "overwrite", "verbose"))
    echo(summary_text(summary, out=args.out, command="score", log_path=summary["log_path"]))
    return 0


def run_score(
    *,
    shards: Path,
    checkpoint: str | Path,
    out: Path,
    test_shards: Path | None = None,
    config: str | Path | None = None,
    overrides: Any = (),
    address: str | None = None,
    overwrite: bool = False,
    verbose: bool = True,
) -> dict[str, Any]:
    """The score job (module docstring); returns the summary written to OUT/summary.json.

    Args:
        checkpoint: a checkpoint folder, or an MLflow model URI (``runs:/RUN_ID/model``,
            ``models:/NAME/VERSION``) logged by ``jumpray train`` / ``clean``, read from
            ``tracking.uri``; the model scores as one snapshot.
        config, overrides: ``--config`` and the dotted overrides, applied over the checkpoint's
            (or the model's) training config.
        overwrite: replace an earlier output in ``out`` (:func:`jumpray.runs.claim_output`).
        verbose: leave Ray's output on the console; False writes it to OUT/logs/.

    The summary's ``log_path`` is the log file (None when verbose); it is not written to
    summary.json.
    """
    from jumpray.jobs._run import claim_shard_run, run_session
    from jumpray.tracking import is_model_uri

    served, named = None, checkpoint
    if is_model_uri(checkpoint):
        import tempfile

        from jumpray.models.serving import load_probability_model
        from jumpray.tracking import download_model

        uri = load_config(config, overrides).tracking.uri
        with tempfile.TemporaryDirectory(prefix="jumpray-model-") as tmp:
            served = load_probability_model(download_model(str(checkpoint), tmp, tracking_uri=uri))
        base = dict(getattr(served, "config", None) or {})
    else:
        from jumpray.checkpoint import load_checkpoint

        named = checkpoint
        checkpoint = fetch_folder(str(checkpoint)) if is_uri(checkpoint) else Path(checkpoint)
        base = load_checkpoint(checkpoint).get("config") or {}
    cfg = load_config(config, overrides, base=base)
    claim = claim_shard_run(
        "score",
        out,
        shards,
        test_shards,
        extra_sources=[] if served is not None else [named],
        extra_inputs={"checkpoint": redact(str(named))},
        overwrite=overwrite,
    )
    with run_session(claim, verbose=verbose) as session:
        summary = _score(cfg, session, shards, test_shards, checkpoint, address, served)
    return summary | {"log_path": session.log_path}


def _score(cfg: RunConfig, session, shards, test_shards, checkpoint, address, served):
    """Inside the run session: Ray, the snapshots, scoring, publish; returns the summary."""
    from jumpray.jobs._run import read_inputs, start_ray

    start_ray(address or cfg.scaling.address)
    from jumpray.score.pipeline import (
        evaluate_accuracy,
        snapshots_from_checkpoint,
        snapshots_from_served,
    )

    if served is not None:
        snaps = snapshots_from_served(served, source=str(checkpoint))
    else:
        snaps = snapshots_from_checkpoint(checkpoint, cfg.score.num_snapshots)
    num_classes = int(snaps.model_args["num_classes"])
    # The size the model was trained at, whatever sizes these shards hold.
    size = cfg.data.image_size or min(int(v) for v in snaps.data["image_hw"])
    inputs = read_inputs(cfg, shards, test_shards, num_classes=num_classes, image_size=size)
    extra: dict[str, Any] = {"checkpoint": str(checkpoint)}
    try:
        if inputs.test is not None:
            extra["test_accuracy"] = evaluate_accuracy(inputs.test, snaps, cfg)
        summary = score_and_report(
            cfg, source=inputs.train, snaps=snaps, out=session.staging, extra=extra
        )
    finally:  # the quarantine sinks end with the job
        inputs.close()
    session.publish(head=SUMMARY_FILE)
    return session.final(summary)


def summary_text(
    s: dict[str, Any],
    *,
    out: Path,
    command: str,
    log_path: Path | None = None,
    tracker: Any = None,
) -> str:
    """The one-screen summary of a scoring (or clean) run."""
    from jumpray.jobs._run import shown, tracking_lines

    d = s["decision"]
    source = d.get("source", "snapshots")
    probs = "the training history" if source == "training" else f"snapshots {d['snapshot_epochs']}"
    if source == "both":
        probs += " and the training history"
    if d.get("name") == "confident":
        how = f"confident learning ({d['filter_by']}, ranked by {d['rank_by']}) on {probs}"
    else:
        how = f"{d['combine']} of {d['formula']} on {probs}, threshold {d['threshold']:g}"
    lines = [
        f"jumpray {command}: {s['num_samples']} samples scored from {s['shards']}, "
        f"{s['num_quarantined']} quarantined",
        f"  label issues: {s['num_label_issues']} (estimated noise rate "
        f"{s['estimated_noise_rate']:.3f}); decision: {how}",
    ]
    if "precision" in s:
        lines.append(
            f"  against the clean labels: precision {s['precision']:.3f}, recall "
            f"{s['recall']:.3f}, F1 {s['f1']:.3f} (true noise rate {s['true_noise_rate']:.3f})"
        )
    if "test_accuracy" in s:
        lines.append(f"  test accuracy {s['test_accuracy']:.4f}")
    if "num_kept" in s:
        lines.append(
            f"  cleaned shards: {s['num_kept']} samples ({s['num_relabelled']} relabelled) in "
            f"{shown(s['clean_shards'])}"
        )
    if s.get("image_size_choice"):
        lines.append(f"  images: {s['image_size_choice']}")
    lines.append(
        f"  scoring: {s['num_samples']} samples in {s['scoring_wall_s']:.1f} s "
        f"({s['scoring_samples_per_s']:.1f} samples/s)"
    )
    lines.append(f"  outputs: {out}/labels.parquet, summary.json, quarantine.parquet, report.html")
    if s.get("mlflow_model_uri"):
        lines.append(f"  MLflow model: {s['mlflow_model_uri']} (jumpray score --checkpoint URI)")
    if log_path is not None:
        lines.append(f"  log (Ray's output): {shown(log_path)}")
    if tracker is not None:
        lines += tracking_lines(tracker, kept_in=f"{out}/summary.json")
    elif s.get("mlflow_run_id"):
        lines.append(f"  MLflow run {s['mlflow_run_id']} at {s.get('mlflow_tracking_uri')}")
    for warning in s.get("warnings") or []:
        lines.append(f"  CAUTION: {warning}")
    return "\n".join(lines)

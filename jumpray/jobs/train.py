"""``jumpray train``: Jump-teaching (or a baseline) on shards with Ray Train (docs/contract.md).

Examples::

    jumpray train --shards shards/fm-train --test-shards shards/fm-test --out runs/jt \\
        train.epochs=10 scaling.num_workers=2
    jumpray train --shards shards/fm-train --out runs/ce method.name=ce
    # a cluster: 4 GPU workers, AMP on by default
    RAY_ADDRESS=auto jumpray train --shards /data/c1m --out runs/c1m --config configs/clothing1m.yaml \\
        scaling.num_workers=4 scaling.use_gpu=true
    # continue a stopped run (same OUT) from its last checkpoint, with the same flags
    jumpray train --shards shards/fm-train --out runs/jt --resume

Writes OUT/checkpoint/, OUT/train_summary.json, OUT/config.yaml, OUT/model.pt,
OUT/selection_curves.png and OUT/quarantine.parquet (built aside, published when training is
done); OUT/ray_results/ holds Ray Train's checkpoints and OUT/logs/ the run's log. MLflow gets
params, per-epoch metrics and the same files as artifacts (``MLFLOW_TRACKING_URI`` or
``sqlite:///mlflow.db``). A non-empty OUT is refused unless it is this command's own unfinished
run (re-running the command resumes it), ``--resume`` or ``--overwrite`` (jumpray.runs).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from jumpray.cli import add_config_arguments, add_overwrite_argument
from jumpray.config import RunConfig, load_config
from jumpray.log import echo, get_logger
from jumpray.storage import location

__all__ = ["add_arguments", "run", "run_train", "summary_text", "startup_lines"]

log = get_logger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shards", type=location, required=True, help="the training shard folder")
    parser.add_argument("--out", type=location, required=True, help="the output folder")
    parser.add_argument("--test-shards", type=location, default=None, help="clean test shards")
    parser.add_argument(
        "--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or local)"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run recorded in OUT/train_run.json from its last checkpoint",
    )
    add_overwrite_argument(parser)
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    """Read the shards, train, print a one-screen summary; returns 0."""
    cfg = load_config(args.config, args.overrides)
    from jumpray.jobs._run import job_arguments

    names = ("shards", "out", "test_shards", "address", "resume", "overwrite", "verbose")
    summary = run_train(cfg, **job_arguments(args, *names))
    echo(
        summary_text(
            summary, out=args.out, log_path=summary["log_path"], tracker=summary["tracker"]
        )
    )
    return 0


def run_train(
    cfg: RunConfig,
    *,
    shards: Path,
    out: Path,
    resume: bool = False,
    test_shards: Path | None = None,
    overwrite: bool = False,
    address: str | None = None,
    verbose: bool = True,
) -> dict[str, Any]:
    """The train job (module docstring); returns the summary written to OUT/train_summary.json.

    Args:
        resume: continue the run recorded in OUT (``--resume``).
        overwrite: replace an earlier output in ``out`` (:func:`jumpray.runs.claim_output`).
        verbose: leave Ray's output on the console; False writes it to OUT/logs/.

    The summary's ``log_path`` is the log file (None when verbose) and ``tracker`` the MLflow
    tracker, both for the caller's summary lines (not written to the file).
    """
    from jumpray.jobs._run import claim_shard_run, resume_name, run_session

    if resume:
        resume_name(out, required=True)
    claim = claim_shard_run("train", out, shards, test_shards, overwrite=overwrite, resume=resume)
    with run_session(claim, verbose=verbose) as session:
        summary, tracker = _train(cfg, session, shards, test_shards, address, resume=claim.resume)
    return summary | {"log_path": session.log_path, "tracker": tracker}


def _train(
    cfg, session, shards, test_shards, address, *, resume: bool
) -> tuple[dict[str, Any], Any]:
    """Inside the run session: Ray, the shards, fit, publish; returns (summary, tracker)."""
    from jumpray.jobs._run import read_inputs, resume_name, start_ray
    from jumpray.tracking import PENDING_DIR, build_tracker

    startup = start_ray(address or cfg.scaling.address)
    from jumpray.train.launch import SUMMARY_FILE, fit

    # fit() caches only the tensor columns (data.materialize), so the reader does not.
    inputs = read_inputs(cfg, shards, test_shards, num_classes=cfg.num_classes)
    train, test = inputs.train, inputs.test
    startup |= inputs.startup
    tracker = build_tracker(
        cfg.tracking,
        default_name=f"train-{Path(shards).name}",
        pending_dir=session.out / PENDING_DIR,
    )
    tracker.set_tags({"jumpray.job": "train"})
    try:
        result = fit(
            cfg,
            train=train,
            test=test,
            out_dir=session.staging,
            work_dir=session.out,
            storage_path=session.ray_results,
            run_name=resume_name(session.out, required=False) if resume else None,
            tracker=tracker,
            startup=startup,
        )
        result.release()
        train.check_quarantine()
        session.publish(head=SUMMARY_FILE)
    except BaseException as exc:
        tracker.end("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    finally:  # nothing of this run stays in the Ray session (a caller may run more jobs)
        inputs.close()
    tracker.end()
    return session.final(result.summary), tracker


def summary_text(
    s: dict[str, Any], *, out: Path, log_path: Path | None = None, tracker: Any = None
) -> str:
    """The one-screen summary of a finished training run."""
    from jumpray.jobs._run import shown, tracking_lines

    f = s["final"]
    lines = [
        f"jumpray train: {s['method']} on {s['shards']} ({s['num_samples']} samples, "
        f"{s['num_classes']} classes), {s['epochs']} epochs, {s['num_workers']} worker(s)"
        + (" on GPU" if s["use_gpu"] else ""),
        f"  final loss {f['loss']:.4f}, selected fraction {f['selected_fraction']:.3f}",
    ]
    if "precision" in f:
        lines.append(
            f"  selection precision {f['precision']:.3f}, recall {f['recall']:.3f}, "
            f"F1 {f['f1']:.3f} (the data is {f['data_clean_fraction']:.3f} clean)"
        )
    if "test_accuracy" in f:
        lines.append(f"  test accuracy {f['test_accuracy']:.4f}")
    lines += [
        f"  {s['mean_epoch_time_s']:.1f} s/epoch, {f['samples_per_s']:.0f} samples/s; "
        f"wall {s['fit_wall_s']:.0f} s of which start-up {s['startup_s']:.0f} s",
        *startup_lines(s),
    ]
    if s.get("image_size_choice"):
        lines.append(f"  images: {s['image_size_choice']}")
    lines += [
        f"  quarantined samples: {s['num_quarantined']}",
        f"  snapshots kept (epochs): {s['snapshot_epochs']}",
        f"  outputs: {out}/checkpoint/, train_summary.json, selection_curves.png, model.pt",
    ]
    if s.get("mlflow_model_uri"):
        lines.append(f"  MLflow model: {s['mlflow_model_uri']} (jumpray score --checkpoint URI)")
    if log_path is not None:
        lines.append(f"  log (Ray's output): {shown(log_path)}")
    if tracker is not None:
        lines += tracking_lines(tracker, kept_in=f"{out}/train_summary.json")
    elif s.get("mlflow_run_id"):
        lines.append(f"  MLflow run {s['mlflow_run_id']} at {s['mlflow_tracking_uri']}")
    return "\n".join(lines)


STARTUP_LABELS = (
    ("startup_ray_init_s", "ray.init"),
    ("startup_scan_s", "shard scan"),
    ("startup_materialize_s", "decode into the object store"),
    ("startup_trainer_s", "Ray Train start"),
    ("startup_worker_s", "worker set-up"),
    ("startup_load_rows_s", "rows into memory"),
    ("teardown_s", "teardown"),
)


def startup_lines(s: dict[str, Any]) -> list[str]:
    """One line with each measured start-up part (train_summary.json's ``startup_*`` fields)."""
    parts = [f"{label} {s[key]:.1f} s" for key, label in STARTUP_LABELS if key in s]
    if not parts:
        return []
    threads = f"; {s['torch_threads']} torch thread(s) per worker" if "torch_threads" in s else ""
    return [f"  start-up: {', '.join(parts)}{threads}"]

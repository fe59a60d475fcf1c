"""``jumpray clean``: train, score with the last R snapshots, decide, write (docs/contract.md).

Examples::

    jumpray clean --shards shards/fm-train --test-shards shards/fm-test --out runs/clean \\
        --config configs/fashion_mnist.yaml --write-shards
    jumpray clean --shards shards/fm-train --out runs/clean2 --write-shards \\
        clean.relabel=true clean.relabel_min_prob=0.95 score.combine=vote
    # the cleaned shards are a shard folder like any other
    jumpray train --shards runs/clean/clean-shards --test-shards shards/fm-test --out runs/retrain

Steps, all in one MLflow run (params = the resolved config; per-epoch training metrics; then the
summary's numbers as metrics, summary.json, report.html with its PNGs, labels.parquet and
quarantine.parquet as artifacts):

1. ``jumpray.train.launch.fit``: Jump-teaching on Ray Train; every epoch's weights go to the run's
   snapshot store actor in the object store; OUT/checkpoint/ etc. as ``jumpray train`` writes;
2. the last ``score.num_snapshots`` snapshots, straight from the object store (no copy through
   the driver), score every sample with the Ray Data actor pool (:mod:`jumpray.score.pipeline`);
3. OUT/labels.parquet, OUT/quarantine.parquet, OUT/summary.json, OUT/report.html;
4. with ``--write-shards``, OUT/clean-shards/: the kept samples (relabelled when
   ``clean.relabel`` and the model is confident; :func:`jumpray.score.decide.relabel_decision`).

Everything is built in a staging folder and published at the end (jumpray.runs): a re-run never
mixes its files with an earlier run's, and a non-empty OUT is refused unless it is this command's
own unfinished run (re-running after Ctrl-C resumes the training) or ``--overwrite`` is given.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from jumpray.cli import add_config_arguments, add_overwrite_argument
from jumpray.config import RunConfig, load_config
from jumpray.files import write_json
from jumpray.jobs.score import summary_text
from jumpray.log import echo, get_logger
from jumpray.score.outputs import SUMMARY_FILE, score_and_report
from jumpray.storage import location

__all__ = ["add_arguments", "run", "run_clean", "CLEAN_SHARDS"]

log = get_logger(__name__)

CLEAN_SHARDS = "clean-shards"
# Training's start-up parts copied from train_summary.json into summary.json.
STARTUP_PREFIXES = ("startup_", "teardown_s", "torch_threads")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shards", type=location, required=True, help="the shard folder to clean")
    parser.add_argument("--out", type=location, required=True, help="the output folder")
    parser.add_argument("--test-shards", type=location, default=None, help="clean test shards")
    parser.add_argument(
        "--write-shards",
        action="store_true",
        help="write OUT/clean-shards/, the kept (optionally relabelled) samples",
    )
    parser.add_argument(
        "--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or local)"
    )
    add_overwrite_argument(parser)
    add_config_arguments(parser)


def _numbers(summary: dict[str, Any]) -> dict[str, float]:
    """The summary's scalar numbers, as tracker metrics."""
    return {
        k: float(v)
        for k, v in summary.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }


def run_clean(
    cfg: RunConfig,
    *,
    shards: Path,
    out: Path,
    test_shards: Path | None = None,
    write_shards: bool = False,
    address: str | None = None,
    title: str = "jumpray clean report",
    overwrite: bool = False,
    replace_finished: bool = False,
    verbose: bool = True,
) -> dict[str, Any]:
    """The clean job (module docstring); returns the summary written to OUT/summary.json.

    Args:
        overwrite, replace_finished: how an earlier output in ``out`` is treated
            (:func:`jumpray.runs.claim_output`).
        verbose: leave Ray's output on the console; False writes it to OUT/logs/.

    The summary's ``log_path`` is the log file (None when verbose) and ``tracker`` the MLflow
    tracker, both for the caller's summary lines (not written to summary.json).
    """
    from jumpray.jobs._run import claim_shard_run, run_session

    claim = claim_shard_run(
        "clean", out, shards, test_shards, overwrite=overwrite, replace_finished=replace_finished
    )
    with run_session(claim, verbose=verbose) as session:
        summary, tracker = _clean(cfg, session, shards, test_shards, write_shards, address, title)
    return summary | {"log_path": session.log_path, "tracker": tracker}


def _clean(cfg, session, shards, test_shards, write_shards, address, title):
    """Inside the run session: train, score, write, publish; returns (summary, tracker)."""
    from jumpray.jobs._run import read_inputs, resume_name, start_ray

    t_start = time.perf_counter()
    startup = start_ray(address or cfg.scaling.address)
    from jumpray.score.export import write_clean_shards
    from jumpray.score.pipeline import snapshots_from_refs
    from jumpray.tracking import PENDING_DIR, build_tracker
    from jumpray.train.launch import fit

    stage = session.staging
    t0 = time.perf_counter()
    inputs = read_inputs(cfg, shards, test_shards, num_classes=cfg.num_classes)
    source, test = inputs.train, inputs.test
    startup |= inputs.startup
    # Decoded once, all columns: training and scoring both read these rows (no second decode).
    t1 = time.perf_counter()
    if cfg.data.materialize:
        source.materialize()
    startup["startup_materialize_s"] = time.perf_counter() - t1
    tracker = build_tracker(
        cfg.tracking,
        default_name=f"clean-{Path(shards).name}",
        pending_dir=session.out / PENDING_DIR,
    )
    tracker.set_tags({"jumpray.job": "clean"})
    result = None
    try:
        result = fit(
            cfg,
            train=source,
            test=test,
            out_dir=stage,
            work_dir=session.out,
            storage_path=session.ray_results,
            run_name=resume_name(session.out, required=False) if session.claim.resume else None,
            tracker=tracker,
            startup=startup,
        )
        train_s = time.perf_counter() - t0
        snaps = snapshots_from_refs(
            result.snapshots, result.checkpoint_dir, cfg.score.num_snapshots
        )
        final = result.history[-1] if result.history else {}
        extra: dict[str, Any] = {
            "train_wall_s": round(train_s, 1),
            "train_epochs": len(result.history),
            "checkpoint": str(result.checkpoint_dir),
            "mlflow_model_uri": result.summary.get("mlflow_model_uri"),
        }
        extra |= {k: v for k, v in result.summary.items() if k.startswith(STARTUP_PREFIXES)}
        if "test_accuracy" in final:
            extra["test_accuracy"] = float(final["test_accuracy"])
        summary = score_and_report(
            cfg, source=source, snaps=snaps, out=stage, extra=extra, title=title
        )
        if write_shards:
            written = write_clean_shards(
                source,
                stage / "labels.parquet",
                stage / CLEAN_SHARDS,
                relabel=cfg.clean.relabel,
                min_prob=cfg.clean.relabel_min_prob,
            )
            summary |= {
                "clean_shards": written["folder"],
                "num_kept": written["num_kept"],
                "num_relabelled": written["num_relabelled"],
                "num_dropped": written["num_dropped"],
            }
        summary["total_wall_s"] = round(time.perf_counter() - t0, 1)
        # From ray.init on (total_wall_s starts after it, as it always did).
        summary["job_wall_s"] = round(time.perf_counter() - t_start, 1)
        summary["mlflow_run_id"] = tracker.run_id
        summary["mlflow_tracking_uri"] = tracker.uri
        summary["log_file"] = str(session.log_path) if session.log_path else None
        summary = session.final(summary)
        write_json(stage / SUMMARY_FILE, summary)
        _track(tracker, summary, stage)
        session.publish(head=SUMMARY_FILE)
    except BaseException as exc:
        tracker.end("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    finally:  # the snapshot store and the quarantine sinks end with the job
        if result is not None:
            result.release()
        inputs.close()
    tracker.end()
    return summary, tracker


def _track(tracker, summary: dict[str, Any], out: Path) -> None:
    """Everything the clean job wrote, into its MLflow run."""
    tracker.log_metrics({f"clean/{k}": v for k, v in _numbers(summary).items()})
    tracker.log_dict(summary, SUMMARY_FILE)
    for name in ("report.html", "labels.parquet", "quarantine.parquet"):
        path = out / name
        if path.exists():
            tracker.log_artifact(path, "clean")
    for png in sorted(out.glob("report_*.png")):
        tracker.log_artifact(png, "clean")


def run(args: argparse.Namespace) -> int:
    """Train + score + decide + write; print a one-screen summary."""
    cfg = load_config(args.config, args.overrides)
    summary = run_clean(
        cfg,
        shards=args.shards,
        out=args.out,
        test_shards=args.test_shards,
        write_shards=args.write_shards,
        address=args.address,
        overwrite=args.overwrite,
        verbose=args.verbose,
    )
    echo(
        summary_text(
            summary,
            out=args.out,
            command="clean",
            log_path=summary["log_path"],
            tracker=summary["tracker"],
        )
    )
    from jumpray.jobs.train import startup_lines

    for line in startup_lines(summary):
        echo(line)
    return 0

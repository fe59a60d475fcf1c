"""``jumpray demo``: the whole clean job on Fashion-MNIST with injected noise, on this machine.

What it does (the README's main-job command; a few minutes on 2 CPU cores):

1. writes the first ``--limit`` Fashion-MNIST training images with ``--noise`` (seeded) and the
   test split as shards under OUT/shards/ (only when they are not there yet);
2. runs :func:`jumpray.jobs.clean.run_clean` on them, into OUT/clean/: Jump-teaching on Ray Train
   (a local Ray), scoring with the last snapshots by the Ray Data actor pool, labels.parquet,
   summary.json, report.html and the cleaned shards, all in one MLflow run;
3. prints how well the wrong labels were found, the test accuracy, and where to look.

The settings are :data:`DEMO_DEFAULTS` (the Fashion-MNIST ones of ``configs/fashion_mnist.yaml``);
``--config`` and ``key=value`` overrides apply on top, as for every command.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from jumpray.cli import add_config_arguments
from jumpray.config import FASHION_MNIST_CONFIG, load_config, load_yaml, merge_settings
from jumpray.jobs._run import shown, tracking_lines
from jumpray.log import echo, get_logger

__all__ = ["add_arguments", "run", "DEMO_DEFAULTS", "prepare_shards"]

log = get_logger(__name__)

# The Fashion-MNIST settings (configs/fashion_mnist.yaml), plus what only the demo sets.
DEMO_DEFAULTS: dict[str, Any] = merge_settings(
    load_yaml(FASHION_MNIST_CONFIG),
    {
        "snapshots": {"keep": 3},
        "score": {"num_snapshots": 3, "num_actors": 2, "cpus_per_actor": 0.5},
        "clean": {"gallery_size": 36},
        "tracking": {"experiment": "jumpray-demo", "run_name": "demo"},
    },
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", type=Path, default=Path("demo-out"), help="output folder (default ./demo-out)"
    )
    parser.add_argument("--limit", type=int, default=10000, help="training samples (default 10000)")
    parser.add_argument("--noise", default="sym:0.4", help="noise SPEC (default sym:0.4)")
    parser.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    parser.add_argument(
        "--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or local)"
    )
    add_config_arguments(parser)


def prepare_shards(out: Path, *, limit: int, noise: str, seed: int) -> tuple[Path, Path]:
    """OUT/shards/train-<noise>-<limit>-s<seed> and OUT/shards/test, written once."""
    from jumpray.data.convert import write_fashion_mnist

    tag = noise.replace(":", "")
    train = out / "shards" / f"train-{tag}-{limit}-s{seed}"
    test = out / "shards" / "test"
    if not (train / "index.json").is_file():
        log.info("demo: writing %d Fashion-MNIST training samples with %s noise", limit, noise)
        write_fashion_mnist(
            train, split="train", limit=limit, noise=noise, seed=seed, overwrite=True
        )
    if not (test / "index.json").is_file():
        write_fashion_mnist(test, split="test", overwrite=True)
    return train, test


def run(args: argparse.Namespace) -> int:
    """Shards, clean job, short summary; returns 0."""
    from jumpray.errors import UsageError
    from jumpray.runs import claim_output

    t0 = time.perf_counter()
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit must be a positive number of samples, got {args.limit}")
    cfg = load_config(args.config, args.overrides, base=DEMO_DEFAULTS)
    # The demo folder may hold only the demo's own shards/ and clean/ (re-running reuses them).
    claim_output(args.out, command="demo", kind="demo")
    train, test = prepare_shards(args.out, limit=args.limit, noise=args.noise, seed=args.seed)
    from jumpray.jobs.clean import run_clean

    out = args.out / "clean"
    s = run_clean(
        cfg,
        shards=train,
        out=out,
        test_shards=test,
        write_shards=True,
        address=args.address,
        title=f"jumpray demo: Fashion-MNIST, {args.limit} samples, {args.noise} noise",
        replace_finished=True,
        verbose=args.verbose,
    )
    echo(summary_text(s, out=out, noise=args.noise, wall_s=time.perf_counter() - t0))
    return 0


def summary_text(s: dict[str, Any], *, out: Path, noise: str, wall_s: float) -> str:
    """The demo's closing lines."""
    lines = [
        "",
        f"jumpray demo: Fashion-MNIST, {s['num_samples']} training samples, {noise} noise "
        f"(true wrong-label rate {s.get('true_noise_rate', float('nan')):.3f})",
        f"  found wrong labels: precision {s['precision']:.3f}, recall {s['recall']:.3f}, "
        f"F1 {s['f1']:.3f} ({s['num_label_issues']} flagged)",
        f"  test accuracy of the model: {s['test_accuracy']:.4f}",
        f"  cleaned shards: {s['num_kept']} samples kept in {shown(s['clean_shards'])}",
        f"  report: {out / 'report.html'}",
        f"  labels: {out / 'labels.parquet'}   summary: {out / 'summary.json'}",
    ]
    if s.get("log_path"):
        lines.append(f"  log (Ray's output): {shown(s['log_path'])}")
    tracker = s.get("tracker")
    if (
        tracker is not None
        and getattr(tracker, "uri", None)
        and not tracker.failed
        and tracker.pending_path is None
    ):
        lines.append(f"  MLflow: mlflow ui --backend-store-uri {tracker.uri}")
        if tracker.artifact_uri:
            lines.append(f"  MLflow artifacts: {tracker.artifact_uri}")
    elif tracker is not None:
        lines += tracking_lines(tracker, kept_in=str(out / "summary.json"))
    elif s.get("mlflow_tracking_uri"):
        lines.append(f"  MLflow: mlflow ui --backend-store-uri {s['mlflow_tracking_uri']}")
    for warning in s.get("warnings") or []:
        lines.append(f"  CAUTION: {warning}")
    lines.append(f"  total {wall_s:.0f} s")
    return "\n".join(lines)

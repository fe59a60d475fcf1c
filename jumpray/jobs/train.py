"""``jumpray train``: Jump-teaching (or a baseline) on shards with Ray Train (CONTRACT §2).

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
OUT/selection_curves.png and OUT/quarantine.parquet; MLflow gets params, per-epoch metrics and the
same files as artifacts (``MLFLOW_TRACKING_URI`` or ``sqlite:///mlflow.db``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from jumpray.cli import add_config_arguments
from jumpray.config import load_config
from jumpray.errors import ConfigError
from jumpray.log import get_logger

__all__ = ["add_arguments", "run", "summary_text"]

log = get_logger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shards", type=Path, required=True, help="the training shard folder")
    parser.add_argument("--out", type=Path, required=True, help="the output folder")
    parser.add_argument("--test-shards", type=Path, default=None, help="clean test shards")
    parser.add_argument(
        "--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or local)"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run recorded in OUT/train_run.json from its last checkpoint",
    )
    add_config_arguments(parser)


def _resume_name(out: Path) -> str:
    from jumpray.train.launch import RUN_FILE

    path = out / RUN_FILE
    if not path.is_file():
        raise ConfigError(f"--resume: {path} does not exist (no earlier run wrote to this --out)")
    return str(json.loads(path.read_text())["run_name"])


def run(args: argparse.Namespace) -> int:
    """Read the shards, train, print a one-screen summary; returns 0."""
    cfg = load_config(args.config, args.overrides)
    run_name = _resume_name(args.out) if args.resume else None
    from jumpray.data.scan import check_shard_folders
    from jumpray.ray_utils import init_ray

    # A wrong path fails here, in a second, not after Ray has started.
    check_shard_folders(args.shards, args.test_shards)
    # Before Ray Data is imported: its quiet settings are read from the environment on import.
    init_ray(address=args.address or cfg.scaling.address)
    from jumpray.data.shards import read_shards
    from jumpray.train.launch import fit

    # fit() caches only the tensor columns (data.materialize), so the reader does not.
    train = read_shards(args.shards, cfg.data, num_classes=cfg.num_classes, materialize=False)
    test = None
    if args.test_shards is not None:
        test = read_shards(
            args.test_shards,
            cfg.data,
            num_classes=cfg.num_classes or train.info.num_classes,
            materialize=False,
        )
    try:
        result = fit(cfg, train=train, test=test, out_dir=args.out, run_name=run_name)
        result.release()
    finally:  # nothing of this run stays in the Ray session (a caller may run more jobs)
        for source in (train, test):
            if source is not None:
                source.close()
    print(summary_text(result.summary, out=args.out))
    return 0


def summary_text(s: dict[str, Any], *, out: Path) -> str:
    """The one-screen summary of a finished training run."""
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
        f"  quarantined samples: {s['num_quarantined']}",
        f"  snapshots kept (epochs): {s['snapshot_epochs']}",
        f"  outputs: {out}/checkpoint/, train_summary.json, selection_curves.png, model.pt",
    ]
    if s.get("mlflow_run_id"):
        lines.append(f"  MLflow run {s['mlflow_run_id']} at {s['mlflow_tracking_uri']}")
    return "\n".join(lines)

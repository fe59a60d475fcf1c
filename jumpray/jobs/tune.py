"""``jumpray tune``: a Ray Tune (ASHA) sweep of Jump-teaching's knobs, each trial a real Ray Train run.

Examples::

    # the default space: J in 1..4, K from the data's C, tau and lr log-uniform; 8 random trials
    jumpray tune --shards shards/fm-train --test-shards shards/fm-test --out runs/tune \\
        --config configs/tune.yaml
    # a grid over J and K only, 4 epochs per trial
    jumpray tune --shards shards/fm-train --out runs/tune-grid --config configs/fashion_mnist.yaml \\
        tune.searcher=grid tune.num_samples=1 tune.epochs=4 \\
        'tune.search_space={jump.interval: {grid: [1, 2, 3]}, model.semantic_dim: {grid: [16, 32]}}'
    # Optuna's TPE (pip install "jumpray[tune]")
    jumpray tune --shards shards/fm-train --out runs/tpe tune.searcher=optuna tune.num_samples=20
    # continue an interrupted sweep (same --out and folders): finished trials are not re-run
    jumpray tune --shards shards/fm-train --test-shards shards/fm-test --out runs/tune --resume
    # then the full run with the best config
    jumpray clean --shards shards/fm-train --out runs/clean --config runs/tune/best.yaml

Trials are ranked by ``tune.metric`` (default ``val_accuracy``: accuracy on the given labels of a
seeded, stratified held-out split of the noisy shards, so no clean label is needed); with
``--test-shards`` and clean labels every trial also reports test accuracy and detection F1.
Writes OUT/best.yaml, OUT/trials.csv and PNGs of the metric against J, K and both (docs/contract.md);
MLflow gets one parent run and a child run per trial.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from jumpray.cli import add_config_arguments
from jumpray.config import load_config
from jumpray.errors import ConfigError, UsageError
from jumpray.storage import is_uri, location, redact

__all__ = ["add_arguments", "run", "run_tune", "summary_text"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--shards", type=location, required=True, help="the training shard folder")
    parser.add_argument("--out", type=location, required=True, help="the output folder")
    parser.add_argument(
        "--test-shards",
        type=location,
        default=None,
        help="clean test shards (test accuracy per trial)",
    )
    parser.add_argument(
        "--address", default=None, help="Ray cluster address (default: RAY_ADDRESS or local)"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the sweep in OUT with its saved config (finished trials are kept)",
    )
    add_config_arguments(parser)


def _check_fresh_out(out: Path, *, resume: bool) -> None:
    """Refuse an ``--out`` that holds files of something other than a sweep (never mixed in).

    A sweep's own folder is handled by :func:`jumpray.tune.sweep.run_sweep` (``--resume``, or
    the message that says so); an empty or missing folder is fine.

    Raises:
        UsageError: naming the folder and the fix.
    """
    from jumpray.tune.sweep import RUN_FILE

    if resume or not out.is_dir() or (out / RUN_FILE).exists():
        return
    visible = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    if visible:
        shown = ", ".join(visible[:5]) + (", ..." if len(visible) > 5 else "")
        raise UsageError(
            f"--out {out} is not empty ({shown}) and holds no sweep; a sweep never writes among "
            "other files: give a new or empty --out"
        )


def run(args: argparse.Namespace) -> int:
    """Run or resume the sweep and print a one-screen summary; 130 when it was interrupted."""
    from jumpray.jobs._run import job_arguments

    names = ("shards", "out", "config", "overrides", "resume", "test_shards", "address")
    result = run_tune(**job_arguments(args, *names))
    print(summary_text(result, shards=args.shards, test_shards=args.test_shards))
    if result.complete:
        return 0
    budget = result.config.tune.time_budget_s
    return 0 if budget is not None and result.wall_s >= budget else 130


def run_tune(
    *,
    shards: Path,
    out: Path,
    config: str | Path | None = None,
    overrides: Any = (),
    resume: bool = False,
    test_shards: Path | None = None,
    address: str | None = None,
) -> Any:
    """The tune job (module docstring); returns the :class:`jumpray.tune.sweep.SweepResult`.

    Ray is joined when it runs (the caller's ``ray.init``) and started otherwise; a Ray started
    here is shut down at the end, one the caller started never is.

    Args:
        config, overrides: ``--config`` and the dotted overrides (or a nested mapping).
        resume: continue the sweep in ``out`` with its saved config (no config or overrides).

    Raises:
        ConfigError: ``resume`` with a config or overrides.
    """
    if resume and (config or overrides):
        raise ConfigError(
            "--resume continues the sweep with the config it was started with; drop --config "
            "and the overrides (or start a new --out)"
        )
    cfg = load_config(config, overrides)
    import sys

    from jumpray.data.scan import check_shard_folders
    from jumpray.ray_utils import init_ray
    from jumpray.runs import check_sources

    if is_uri(out):
        raise UsageError(
            f"--out {redact(out)}: jumpray tune writes its sweep to a local folder (object "
            "storage is not supported for a sweep's OUT yet); give a local --out, and "
            "scaling.storage_path=s3://... to keep the trials' checkpoints in the store (the "
            "sweep's best.yaml, trials.csv and plots also go to its MLflow run)"
        )
    check_sources(out, [shards, test_shards])
    _check_fresh_out(out, resume=resume)
    if resume:
        from jumpray.tune.sweep import sweep_state

        sweep_state(out)  # refused before Ray starts when it is not inside OUT
    check_shard_folders(shards, test_shards)
    ray = sys.modules.get("ray")
    ray_was_up = bool(ray is not None and ray.is_initialized())
    init_ray(address=address or cfg.scaling.address)
    try:
        from jumpray.tune.sweep import run_sweep

        return run_sweep(cfg, shards=shards, out=out, test_shards=test_shards, resume=resume)
    finally:
        if not ray_was_up:
            sys.modules["ray"].shutdown()


def summary_text(result: Any, *, shards: Path, test_shards: Path | None = None) -> str:
    """The one-screen summary of a sweep (:class:`jumpray.tune.sweep.SweepResult`)."""
    from jumpray.tune.report import format_value

    cfg, n = result.config, result.numbers
    t = cfg.tune
    metric = t.metric
    budget = t.epochs or cfg.train.epochs
    ran = n["num_finished"] + n["num_stopped_early"] + n["num_failed"]
    lines = [
        f"jumpray tune: {ran} of {result.num_planned} trials on {shards} (searcher {t.searcher}, "
        f"ASHA on epochs: grace {t.grace_period}, keep 1/{t.reduction_factor}; "
        f"{result.concurrency} at a time), {result.wall_s:.0f} s",
        f"  {n['num_finished']} ran the budget of {budget} epochs, {n['num_stopped_early']} "
        f"stopped early by ASHA, {n['num_failed']} failed",
    ]
    if f"{metric}_max" in n:
        what = (
            f" (noisy held-out {t.val_fraction:.0%} of the shards)"
            if metric == "val_accuracy"
            else ""
        )
        lines.append(
            f"  {metric}{what}: best {n[f'{metric}_max' if t.mode == 'max' else f'{metric}_min']:.4f}, "
            f"median {n[f'{metric}_median']:.4f}, spread {n[f'{metric}_spread']:.4f} "
            "over the trials that ran the budget"
        )
    if "rank_correlation_test_accuracy" in n:
        lines.append(
            f"  rank correlation (Spearman) of {metric} with test accuracy: "
            f"{n['rank_correlation_test_accuracy']:.2f} over {n['rank_correlation_pairs']} trials"
        )
    if result.best is not None:
        b = result.best
        values = " ".join(f"{k}={format_value(v)}" for k, v in sorted(b["params"].items()))
        lines.append(f"  best trial {b['trial_id']}: {values}")
        clean = [
            f"{label} {b['metrics'][key]:.4f}"
            for key, label in (("test_accuracy", "test accuracy"), ("f1", "detection F1"))
            if key in b["metrics"]
        ]
        if clean:
            lines.append("    " + ", ".join(clean))
    names = ", ".join(p.name for p in result.files)
    lines.append(f"  outputs: {result.out}/ {names}")
    if result.best is not None:
        test = f" --test-shards {test_shards}" if test_shards else ""
        lines.append(
            f"  next: jumpray clean --shards {shards}{test} --out OUT "
            f"--config {result.out / 'best.yaml'}"
        )
    if result.parent_run_id:
        lines.append(
            f"  MLflow parent run {result.parent_run_id} at {result.tracking_uri} "
            f"({len(result.records)} child runs)"
        )
    if result.ledger_before is not None and result.ledger_after is not None:
        kept = "; left behind: " + "; ".join(result.leftovers) if result.leftovers else ""
        lines.append(
            f"  Ray before: {result.ledger_before.describe()}; after: "
            f"{result.ledger_after.describe()}{kept or ' (nothing left behind)'}"
        )
    if not result.complete:
        lines.append(
            f"  incomplete: continue with jumpray tune --shards {shards}"
            + (f" --test-shards {test_shards}" if test_shards else "")
            + f" --out {result.out} --resume"
        )
    return "\n".join(lines)

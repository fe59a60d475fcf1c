"""Which metric ranks ``jumpray tune`` trials when clean labels are unknown, and what a sweep finds.

For each noise type (default ``sym:0.4`` and ``asym:0.4``) on a Fashion-MNIST subset, one
``jumpray tune`` sweep (:func:`jumpray.tune.sweep.run_sweep`, the real thing: ASHA, Ray Train
trials, MLflow) of the default space (J in 1..4, K in 8..128, tau and lr log-uniform) on the
Fashion-MNIST budget (the schema defaults), with the clean test split as ``--test-shards``. Every
trial reports, at each epoch, from the same model state:

- ``val_accuracy``: accuracy on the *given* (noisy) labels of a seeded, stratified 10 % held-out
  split of the training shards: no clean label needed;
- ``consistency``: 1 - |selected_fraction - val_accuracy|, a detection-consistency score (the
  selection's and the held-out split's estimates of the clean fraction agree): no clean label;
- ``test_accuracy`` on the clean test split (and the selection's F1 against the clean labels):
  the truth the two candidates should rank like.

Per sweep: Spearman's rank correlation of each candidate with test accuracy over the trials' last
reported epochs (trials ASHA stopped included: both numbers come from the same model), and over
the trials that ran the whole budget; the best J and K by ``val_accuracy``; how much the metric
and test accuracy spread. The table goes to stdout as Markdown and everything to ``--out``.

    python benchmarks/tune_metric.py --limit 4000 --test-limit 2000 --epochs 6 --trials 12 \\
        --out bench-tune

Figures measured on the project's box are in benchmarks/README.md and README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _sweep(args: argparse.Namespace, noise: str, data: Path, out: Path) -> dict[str, Any]:
    from jumpray.config import load_config
    from jumpray.data.convert import write_fashion_mnist
    from jumpray.tune.report import rank_correlation
    from jumpray.tune.sweep import run_sweep

    train = data / f"train-{noise.replace(':', '')}"
    if not train.is_dir():
        write_fashion_mnist(train, split="train", limit=args.limit, noise=noise, seed=args.seed)
    overrides = [
        f"train.epochs={args.epochs}",
        f"jump.warmup_epochs={args.warmup}",
        f"tune.num_samples={args.trials}",
        f"tune.grace_period={args.grace}",
        f"tune.searcher={args.searcher}",
        f"seed={args.seed}",
        f"tracking.uri=sqlite:///{out / 'mlflow.db'}",
        f"tracking.experiment=bench-tune-{noise}",
    ]
    cfg = load_config(ROOT / "configs" / "fashion_mnist.yaml", overrides)
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    result = run_sweep(
        cfg, shards=train, out=out / noise.replace(":", ""), test_shards=data / "test"
    )
    wall = time.perf_counter() - t0
    records = [r for r in result.records if "test_accuracy" in r["metrics"]]
    full = [r for r in records if r["status"] == "finished"]

    def rho(rows: list[dict[str, Any]], key: str) -> float:
        pairs = [
            (r["metrics"][key], r["metrics"]["test_accuracy"]) for r in rows if key in r["metrics"]
        ]
        return rank_correlation(*zip(*pairs, strict=True)) if len(pairs) >= 3 else float("nan")

    def spread(rows: list[dict[str, Any]], key: str) -> float:
        values = [r["metrics"][key] for r in rows]
        return max(values) - min(values) if values else float("nan")

    best = result.best or {"params": {}, "metrics": {}}
    return {
        "noise": noise,
        "num_trials": len(result.records),
        "num_finished": len(full),
        "num_stopped_early": result.numbers["num_stopped_early"],
        "num_failed": result.numbers["num_failed"],
        "best_trial": best.get("trial_id"),
        "best_params": best["params"],
        "best_val_accuracy": best["metrics"].get("val_accuracy"),
        "best_test_accuracy": best["metrics"].get("test_accuracy"),
        "max_test_accuracy": max((r["metrics"]["test_accuracy"] for r in full), default=None),
        "val_spread_finished": spread(full, "val_accuracy"),
        "test_spread_finished": spread(full, "test_accuracy"),
        "rho_val_all": rho(records, "val_accuracy"),
        "rho_consistency_all": rho(records, "consistency"),
        "rho_val_finished": rho(full, "val_accuracy"),
        "rho_consistency_finished": rho(full, "consistency"),
        "rho_f1_val_finished": _rho_f1(full),
        "wall_s": wall,
        "load_before": load0,
        "load_after": os.getloadavg()[0],
        "leftovers": result.leftovers,
        "records": result.records,
    }


def _rho_f1(rows: list[dict[str, Any]]) -> float:
    from jumpray.tune.report import rank_correlation

    pairs = [
        (r["metrics"]["val_accuracy"], r["metrics"]["f1"]) for r in rows if "f1" in r["metrics"]
    ]
    return rank_correlation(*zip(*pairs, strict=True)) if len(pairs) >= 3 else float("nan")


def _table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| noise | trials (ran budget / ASHA-stopped) | best J | best K | best val acc | its test acc "
        "| best test acc of any | val acc spread | test acc spread | rho(val acc, test) all / ran "
        "budget | rho(consistency, test) all / ran budget | wall s (load) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|",
    ]
    for r in rows:
        p = r["best_params"]
        lines.append(
            f"| {r['noise']} | {r['num_trials']} ({r['num_finished']} / {r['num_stopped_early']}) "
            f"| {p.get('jump.interval', '-')} | {p.get('model.semantic_dim', '-')} "
            f"| {_f(r['best_val_accuracy'])} | {_f(r['best_test_accuracy'])} "
            f"| {_f(r['max_test_accuracy'])} | {_f(r['val_spread_finished'])} "
            f"| {_f(r['test_spread_finished'])} | {_f(r['rho_val_all'], 2)} / "
            f"{_f(r['rho_val_finished'], 2)} | {_f(r['rho_consistency_all'], 2)} / "
            f"{_f(r['rho_consistency_finished'], 2)} | {r['wall_s']:.0f} "
            f"({r['load_before']:.1f}-{r['load_after']:.1f}) |"
        )
    return "\n".join(lines)


def _f(v: Any, digits: int = 4) -> str:
    return "-" if v is None or v != v else f"{v:.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--noise", nargs="+", default=["sym:0.4", "asym:0.4"])
    parser.add_argument("--limit", type=int, default=4000, help="training samples")
    parser.add_argument("--test-limit", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=6, help="per-trial budget")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--grace", type=int, default=2, help="ASHA grace period (epochs)")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--searcher", default="random")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench-tune"))
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    from jumpray.data.convert import write_fashion_mnist
    from jumpray.ray_utils import init_ray

    out = args.out.resolve()
    data = out / "data"
    if not (data / "test").is_dir():
        write_fashion_mnist(data / "test", split="test", limit=args.test_limit)
    init_ray()
    rows = [_sweep(args, noise, data, out) for noise in args.noise]
    (out / "tune_metric.json").write_text(
        json.dumps({"args": vars(args), "rows": rows}, indent=1, default=str)
    )
    print(_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``jumpray demo``: the README's main job on Fashion-MNIST with injected noise, on this machine.

Until the full clean pipeline lands (issue 6), the demo is a local single-process Jump-teaching run
on a Fashion-MNIST subset with 40 % symmetric noise, compared with plain cross-entropy trained the
same number of epochs, ending with a short summary.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from jumpray.config import load_config
from jumpray.jobs.local import LOCAL_DEFAULTS, noisy_fashion_mnist, run_config
from jumpray.log import get_logger
from jumpray.train.local import summarize_history

__all__ = ["add_arguments", "run"]

log = get_logger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", type=Path, default=Path("demo-out"), help="output folder (default ./demo-out)"
    )
    parser.add_argument("--limit", type=int, default=10000, help="training samples (default 10000)")
    parser.add_argument("--noise", default="sym:0.4", help="noise SPEC (default sym:0.4)")
    parser.add_argument("--epochs", type=int, default=8)


def run(args: argparse.Namespace) -> int:
    t0 = time.perf_counter()
    data = noisy_fashion_mnist(limit=args.limit, noise=args.noise, seed=0)
    rows = {}
    for name in ("jumpteaching", "ce"):
        cfg = load_config(
            None, {"method": {"name": name}, "train": {"epochs": args.epochs}}, base=LOCAL_DEFAULTS
        )
        log.info(
            "demo: training %s for %d epochs on %d samples (%s)",
            name,
            args.epochs,
            len(data.train),
            args.noise,
        )
        rows[name] = summarize_history(run_config(cfg, data).history)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "demo.json").write_text(json.dumps(rows, indent=2))
    jt, ce = rows["jumpteaching"], rows["ce"]
    print(
        f"\njumpray demo: Fashion-MNIST, {len(data.train)} samples, {args.noise} (realized {data.realized_rate:.3f})"
    )
    print(
        f"  {'method':<14}{'test acc':>10}{'sel. precision':>16}{'sel. recall':>13}{'s/epoch':>9}"
    )
    for name, r in rows.items():
        print(
            f"  {name:<14}{r['test_accuracy']:>10.4f}{r.get('precision', float('nan')):>16.3f}"
            f"{r.get('recall', float('nan')):>13.3f}{r['mean_epoch_time_s']:>9.1f}"
        )
    print(
        f"  Jump-teaching minus CE test accuracy: {jt['test_accuracy'] - ce['test_accuracy']:+.4f}"
    )
    print(f"  results: {args.out / 'demo.json'}   (total {time.perf_counter() - t0:.0f} s)")
    return 0

"""What Ray Train costs over the plain core loop, per epoch and once per run.

Writes Fashion-MNIST shards (noisy, sym:0.4) to a temporary folder, then in ONE run, on the same
rows, the same config and batch size, measures:

(a) the plain core loop (``jumpray.train.local.run_local``) on the rows held in memory, in this
    process with one intra-op thread (a Ray Train worker runs with ``OMP_NUM_THREADS=1``); the same
    with two threads is measured too, for context;
(b) ``jumpray.train.launch.fit`` with 1 Ray Train worker;
(c) ``fit`` with 2 Ray Train workers (DDP over gloo; 0.5 CPU each on a 2-core box).

Per-epoch time is the mean over epochs after the first, as each worker measures it (training,
flag all-gather, count all-reduce; the snapshot + checkpoint + report that follow are not in it),
and also end to end as the interval between two epochs' reports arriving on the driver. Start-up
is ``fit()`` wall minus the sum of its epoch times: caching the decoded rows in the object store,
the Train controller, placement group, worker start with the torch import, the process group, and
each epoch's snapshot + checkpoint + report (the final copy to OUT is not in the fit wall). The
shard scan (``read_shards``) and Ray's own start (``ray.init``) are timed apart.

    python benchmarks/train_overhead.py --limit 10000 --epochs 3 --out bench-train.json

Measured on the project's 2-core box (no GPU) while other jobs shared it (1-minute load 4.5 to 7),
two full runs, jumpteaching / cnn28, batch 128 per worker, rows cached in the object store:

=====================  ==============  ==============
                        run 1           run 2
=====================  ==============  ==============
(a) plain, 1 thread     11.4 s/epoch    14.8 s/epoch
plain, 2 threads        (not run)       58.1 s/epoch
(b) Ray Train, 1 wkr    11.6 s = 1.02x  10.1 s = 0.68x
(c) Ray Train, 2 wkrs    6.4 s = 0.57x   6.4 s = 0.43x
start-up (b) / (c)      17.1 / 20.5 s   19.7 / 18.9 s
=====================  ==============  ==============

Per epoch, Ray Train adds nothing measurable over the plain loop on the same thread budget (the
differences are the box's load); two workers on two cores finish an epoch in about half the time
of the 1-thread loop (final losses 0.351 / 0.353 / 0.351: the same learning). The price is a fixed
17 to 21 s per ``fit()``. Reports reach the driver on Ray Train's 2 s poll, so epochs shorter than
2 s are held to 2 s each (a worker's next report waits until the previous one was collected).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


def _rows(folder: Path):
    """The shards' rows in (shard, position) order, read without Ray, as an ArraySet."""
    from jumpray.data.shards import read_shard_rows, scan_folder
    from jumpray.train.local import ArraySet

    scan = scan_folder(folder)
    batches = [b for s in scan.shards for b, _ in read_shard_rows(s.path)]

    def cat(key: str) -> torch.Tensor:
        return torch.from_numpy(np.concatenate([b[key] for b in batches]))

    return scan, ArraySet(cat("image"), cat("given_label"), cat("idx"), cat("clean_label"))


def _after_first(values: list[float]) -> float:
    rest = values[1:] or values
    return statistics.fmean(rest)


def _plain(cfg, folder: Path, *, threads: int = 1) -> dict[str, Any]:
    from jumpray.data.decode import resolve_normalization
    from jumpray.train.local import run_local

    scan, data = _rows(folder)
    mean, std = resolve_normalization(
        None, None, channels=1, index_mean=scan.index.mean, index_std=scan.index.std
    )
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        t0 = time.perf_counter()
        result = run_local(cfg, data, num_classes=scan.num_classes, mean=list(mean), std=list(std))
        wall = time.perf_counter() - t0
    finally:
        torch.set_num_threads(before)
    times = [h["epoch_time_s"] for h in result.history]
    return {
        "threads": threads,
        "epoch_times_s": times,
        "mean_epoch_s": _after_first(times),
        "wall_s": wall,
        "final_loss": result.history[-1]["loss"],
    }


def _ray(cfg, folder: Path, out: Path) -> dict[str, Any]:
    from jumpray.data.shards import read_shards
    from jumpray.train.launch import fit

    t0 = time.perf_counter()
    source = read_shards(folder)
    read_s = time.perf_counter() - t0
    result = fit(cfg, train=source, out_dir=out)
    times = [h["epoch_time_s"] for h in result.history]
    arrivals = result.extra["report_times_s"]
    intervals = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    return {
        "epoch_times_s": times,
        "mean_epoch_s": _after_first(times),
        "report_intervals_s": intervals,
        "mean_report_interval_s": statistics.fmean(intervals) if intervals else float("nan"),
        "fit_wall_s": result.summary["fit_wall_s"],
        "startup_s": result.summary["startup_s"],
        "read_shards_s": read_s,
        "final_loss": result.history[-1]["loss"],
        "num_dummy_steps": sum(h["num_dummy_steps"] for h in result.history),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=10000, help="Fashion-MNIST samples")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--out", type=Path, default=Path("bench-train.json"))
    args = parser.parse_args(argv)

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    from jumpray.config import load_config
    from jumpray.data.convert import write_fashion_mnist
    from jumpray.log import setup_logging
    from jumpray.ray_utils import init_ray

    setup_logging()
    cfg = load_config(
        None,
        {
            "train": {"epochs": args.epochs, "batch_size": args.batch_size},
            "jump": {"warmup_epochs": 1},
            "tracking": {"enabled": False},
        },
    )
    report: dict[str, Any] = {
        "samples": args.limit,
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "method": cfg.method.name,
        "backbone": cfg.model.backbone,
        "cpu_count": os.cpu_count(),
        "load_avg_at_start": os.getloadavg(),
        "torch": torch.__version__,
    }
    with tempfile.TemporaryDirectory(prefix="jumpray-bench-train-") as tmp:
        tmp_path = Path(tmp)
        write_fashion_mnist(tmp_path / "shards", limit=args.limit, noise="sym:0.4", seed=0)
        report["plain"] = _plain(cfg, tmp_path / "shards", threads=1)
        # Context only: the same loop on both cores (2 intra-op threads).
        report["plain_2_threads"] = _plain(cfg, tmp_path / "shards", threads=2)
        t0 = time.perf_counter()
        init_ray(num_cpus=2, object_store_memory=1024**3, for_tests=True)
        report["ray_init_s"] = time.perf_counter() - t0
        for workers in (1, 2):
            run_cfg = cfg.model_copy(
                update={"scaling": cfg.scaling.model_copy(update={"num_workers": workers})}
            )
            report[f"ray_{workers}_worker"] = _ray(
                run_cfg, tmp_path / "shards", tmp_path / f"o{workers}"
            )
    report["load_avg_at_end"] = os.getloadavg()
    plain = report["plain"]["mean_epoch_s"]
    report["plain_2_threads"]["ratio_vs_plain"] = report["plain_2_threads"]["mean_epoch_s"] / plain
    for workers in (1, 2):
        r = report[f"ray_{workers}_worker"]
        r["ratio_epoch_vs_plain"] = r["mean_epoch_s"] / plain
        r["ratio_end_to_end_vs_plain"] = r["mean_report_interval_s"] / plain
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(_table(report))
    print(f"written: {args.out}")
    return 0


def _table(r: dict[str, Any]) -> str:
    lines = [
        f"{r['samples']} Fashion-MNIST samples, {r['epochs']} epochs, batch {r['batch_size']}, "
        f"{r['method']} / {r['backbone']}, {r['cpu_count']} cores",
        f"  (a) plain loop          {r['plain']['mean_epoch_s']:6.2f} s/epoch (1 thread)",
        f"      plain, 2 threads    {r['plain_2_threads']['mean_epoch_s']:6.2f} s/epoch "
        f"= {r['plain_2_threads']['ratio_vs_plain']:.2f}x (a)",
    ]
    for w, tag in ((1, "(b)"), (2, "(c)")):
        x = r[f"ray_{w}_worker"]
        lines.append(
            f"  {tag} Ray Train {w} worker{'s' if w > 1 else ' '} {x['mean_epoch_s']:6.2f} s/epoch "
            f"= {x['ratio_epoch_vs_plain']:.2f}x plain; end to end {x['mean_report_interval_s']:.2f} s "
            f"= {x['ratio_end_to_end_vs_plain']:.2f}x; start-up {x['startup_s']:.1f} s "
            f"(fit wall {x['fit_wall_s']:.1f} s)"
        )
    lines.append(f"  ray.init (not counted): {r['ray_init_s']:.1f} s")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

"""One training epoch over data several times the object store: peak memory flat in N.

The Clothing1M case: the decoded rows do not fit the object store, so ``fit`` streams them
through Ray Data every epoch instead of materializing them. One run does:

1. writes ``--sizes[-1]`` synthetic RGB images (3 x ``--image-size`` px, a class-dependent colour
   block plus noise, 10 classes, 20 % wrong labels) as shards of ``--per-shard`` samples, once,
   under ``--work`` (kept for later runs); each size is a folder of symlinks to its first shards
   (``score_scale.subset``), so every size reads the same bytes;
2. for each size, in a fresh local Ray with a ``--store-mib`` object store (2 CPUs), runs
   :func:`jumpray.train.launch.fit` for one epoch of ``--method``, 1 Ray Train worker,
   ``data.materialize`` on (the default), so the launcher itself decides to stream.
   Jump-teaching selects from the first epoch (``jump.warmup_epochs=0``), so its gate is still
   closed (the official initial flags): every sample is forwarded and gets its flag recorded,
   nothing is back-propagated; ``--method ce`` trains every sample. Every ``--every`` s it
   samples the memory of the whole process tree (driver, Ray daemons, Ray workers) with psutil:
   RSS and PSS per process, summed per process kind (RSS counts the object-store pages once per
   process that maps them; PSS splits them), and the object store's bytes in use and spilled
   (from the raylet).

Reported per size: samples/s of the epoch (the worker's ``epoch_time_s``) and of the whole
``fit``, the peak PSS and RSS sums (total and per kind), the peak object store use, and the
ratios of the largest size's peaks to the smallest's (flat = about 1 while N grows).

    flock /tmp/jumpray-ray.lock python benchmarks/streaming_epoch.py --out streaming.json

Measured figures: benchmarks/README.md, 'Streaming epoch'.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

C = 10
KINDS = ("driver", "train_worker", "ray_data", "other_ray_workers", "ray_daemons")


def _kind(proc: Any, me: int) -> str:
    """Which part of the run a process is, from its pid and the title Ray gives it."""
    if proc.pid == me:
        return "driver"
    try:
        title = " ".join(proc.cmdline())
    except Exception:
        return "other_ray_workers"
    if "TrainWorker" in title:
        return "train_worker"
    if any(s in title for s in ("Read", "Split", "MapBatches", "ray::Map")):
        return "ray_data"
    if title.startswith("ray::"):
        return "other_ray_workers"
    return "ray_daemons"  # raylet, gcs_server, dashboard, log monitor, ...


def _store_bytes() -> tuple[float, float]:
    """(object store bytes in use, bytes spilled so far), from the raylet; NaN when unknown."""
    try:
        from ray._private.internal_api import get_memory_info_reply, get_state_from_address

        stats = get_memory_info_reply(get_state_from_address(), timeout_seconds=5).store_stats
        return float(stats.object_store_bytes_used), float(stats.spilled_bytes_total)
    except Exception:  # a private API: the figure is optional
        return float("nan"), float("nan")


class TreeMemory:
    """Samples RSS and PSS of this process and its descendants, summed per kind, in a thread."""

    def __init__(self, every_s: float):
        self.every_s = every_s
        self.peak_pss: dict[str, float] = defaultdict(float)
        self.peak_rss: dict[str, float] = defaultdict(float)
        self.peak_store = self.spilled = 0.0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        import psutil

        me = psutil.Process()
        pss: dict[str, float] = defaultdict(float)
        rss: dict[str, float] = defaultdict(float)
        for p in [me, *me.children(recursive=True)]:
            try:
                info = p.memory_full_info()
                kind = _kind(p, me.pid)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            pss[kind] += getattr(info, "pss", info.rss) / 2**20
            rss[kind] += info.rss / 2**20
        pss["total"], rss["total"] = sum(pss.values()), sum(rss.values())
        for k in pss:
            self.peak_pss[k] = max(self.peak_pss[k], pss[k])
            self.peak_rss[k] = max(self.peak_rss[k], rss[k])
        self.samples += 1

    def _run(self) -> None:
        last_store = 0.0
        while not self._stop.is_set():
            self._sample()
            if time.monotonic() - last_store >= 1.0:  # a gRPC call: once a second is enough
                used, spilled = _store_bytes()
                if used == used:
                    self.peak_store = max(self.peak_store, used / 2**20)
                    self.spilled = max(self.spilled, spilled / 2**20)
                last_store = time.monotonic()
            self._stop.wait(self.every_s)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def write_big(folder: Path, n: int, size: int, per_shard: int) -> float:
    """Write the big folder once (chunked: one chunk of images in memory at a time)."""
    from jumpray.data.decode import encode_png
    from jumpray.data.schema import read_index
    from jumpray.data.writer import ShardWriter

    index = read_index(folder) if (folder / "index.json").is_file() else None
    if index is not None and index.num_samples >= n:
        return 0.0  # written by an earlier run: every size is a subset of it
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    colours = rng.integers(40, 192, (C, 3), dtype=np.uint8)  # + noise < 64: no wrap
    block = size // 2
    with ShardWriter(folder, prefix="syn", max_samples_per_shard=per_shard, total=n) as w:
        for start in range(0, n, 5_000):
            m = min(5_000, n - start)
            clean = rng.integers(0, C, m)
            images = rng.integers(0, 64, (m, size, size, 3), dtype=np.uint8)
            images[:, :block, :block] += colours[clean][:, None, None, :]
            given = clean.copy()
            flip = rng.random(m) < 0.2
            given[flip] = (given[flip] + rng.integers(1, C, int(flip.sum()))) % C
            for img, g, c in zip(images, given, clean, strict=True):
                w.write(
                    encode_png(img),
                    image_format="png",
                    given_label=int(g),
                    clean_label=int(c),
                    shape=(3, size, size),
                )
        w.close(
            num_classes=C,
            class_names=[f"block{i}" for i in range(C)],
            mean=[0.4, 0.4, 0.4],
            std=[0.25, 0.25, 0.25],
        )
    return time.perf_counter() - t0


def one_size(folder: Path, out: Path, cfg: Any, store_mib: int, every_s: float) -> dict[str, Any]:
    """One streamed epoch over ``folder`` in a fresh local Ray; speed and peak memory."""
    import ray

    from jumpray.data.shards import read_shards
    from jumpray.ray_utils import init_ray
    from jumpray.train.launch import fit

    t0 = time.perf_counter()
    init_ray(num_cpus=2, object_store_memory=store_mib * 2**20, for_tests=True)
    init_s = time.perf_counter() - t0
    try:
        with TreeMemory(every_s) as mem:
            t1 = time.perf_counter()
            source = read_shards(folder)
            streams = not source.fits_object_store()
            result = fit(cfg, train=source, out_dir=out)
            wall = time.perf_counter() - t1
            source.close()
            result.release()
    finally:
        ray.shutdown()
    n = source.info.num_samples
    epoch = result.history[-1]
    return {
        "samples": n,
        "decoded_mib": round(source.decoded_bytes() / 2**20, 1),
        "streams": streams,
        "rows_kept_in_worker": epoch.get("startup_load_rows_s", 0.0) > 0,
        "num_unique_seen": epoch["num_unique_seen"],
        "num_seen_multiple": epoch["num_seen_multiple"],
        "num_unseen": epoch["num_unseen"],
        "selected_fraction": epoch.get("selected_fraction", float("nan")),
        "epoch_s": round(epoch["epoch_time_s"], 1),
        "epoch_samples_per_s": round(n / epoch["epoch_time_s"], 1),
        "read_and_fit_wall_s": round(wall, 1),
        "ray_init_s": round(init_s, 1),
        "peak_pss_mib": {k: round(v, 1) for k, v in sorted(mem.peak_pss.items())},
        "peak_rss_mib": {k: round(v, 1) for k, v in sorted(mem.peak_rss.items())},
        "peak_object_store_mib": round(mem.peak_store, 1),
        "spilled_mib": round(mem.spilled, 1),
        "memory_samples": mem.samples,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[12_000, 24_000])
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--per-shard", type=int, default=1_000)
    parser.add_argument(
        "--store-mib",
        type=int,
        default=75,
        help="object store of each Ray, MiB (Ray allows no less)",
    )
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument(
        "--method",
        default="jumpteaching",
        help="jumpteaching: its first epoch, gate closed (forward passes and flag records, no "
        "backward); ce: every sample trained (forward + backward)",
    )
    parser.add_argument("--every", type=float, default=0.2, help="memory sampling period, s")
    parser.add_argument("--work", type=Path, default=Path("/tmp/jumpray-streaming"))
    parser.add_argument("--lock", type=Path, default=None, help="flock this file around Ray")
    parser.add_argument("--out", type=Path, default=Path("streaming-epoch.json"))
    args = parser.parse_args(argv)

    from _lock import ray_lock
    from score_scale import subset

    from jumpray.config import load_config
    from jumpray.log import setup_logging

    setup_logging()
    cfg = load_config(
        None,
        {
            "method": {"name": args.method},
            "train": {"epochs": 1, "batch_size": args.batch_size},
            "jump": {"warmup_epochs": 0},
            "scaling": {"num_workers": 1},
            "tracking": {"enabled": False},
        },
    )
    sizes = sorted(args.sizes)
    big = args.work / "shards-all"
    report: dict[str, Any] = {
        "sizes": sizes,
        "image": [3, args.image_size, args.image_size],
        "store_mib": args.store_mib,
        "method": cfg.method.name,
        "backbone": cfg.model.backbone,
        "batch_size": args.batch_size,
        "cpu_count": os.cpu_count(),
        "load_avg_at_start": [round(x, 1) for x in os.getloadavg()],
        "write_s": round(write_big(big, sizes[-1], args.image_size, args.per_shard), 1),
        "runs": [],
    }
    for n in sizes:
        folder = args.work / f"shards-{n}"
        subset(big, folder, n)
        with ray_lock(args.lock):
            run = one_size(folder, args.work / f"out-{n}", cfg, args.store_mib, args.every)
        report["runs"].append(run)
        print(json.dumps(run), flush=True)
    report["load_avg_at_end"] = [round(x, 1) for x in os.getloadavg()]
    small, large = report["runs"][0], report["runs"][-1]
    report["ratio_large_to_small"] = {
        "samples": round(large["samples"] / small["samples"], 2),
        "peak_pss_total": round(large["peak_pss_mib"]["total"] / small["peak_pss_mib"]["total"], 3),
        "peak_rss_total": round(large["peak_rss_mib"]["total"] / small["peak_rss_mib"]["total"], 3),
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(_table(report))
    print(f"written: {args.out}")
    return 0


def _table(r: dict[str, Any]) -> str:
    c, h, w = r["image"]
    lines = [
        f"one {r['method']} epoch, {r['backbone']}, 1 Ray Train worker, {c}x{h}x{w} uint8, "
        f"object store {r['store_mib']} MiB, {r['cpu_count']} cores, load "
        f"{r['load_avg_at_start'][0]} -> {r['load_avg_at_end'][0]}",
        f"{'samples':>8} {'decoded MiB':>11} {'x store':>7} {'streams':>7} {'epoch s':>7} "
        f"{'samples/s':>9} {'peak PSS MiB':>12} {'peak RSS MiB':>12} {'store MiB':>9} "
        + " ".join(f"{k:>{len(k)}}" for k in KINDS),
    ]
    for x in r["runs"]:
        kinds = " ".join(f"{x['peak_pss_mib'].get(k, 0.0):{len(k)}.0f}" for k in KINDS)
        lines.append(
            f"{x['samples']:8d} {x['decoded_mib']:11.0f} {x['decoded_mib'] / r['store_mib']:7.1f} "
            f"{x['streams']!s:>7} {x['epoch_s']:7.1f} {x['epoch_samples_per_s']:9.0f} "
            f"{x['peak_pss_mib']['total']:12.0f} {x['peak_rss_mib']['total']:12.0f} "
            f"{x['peak_object_store_mib']:9.0f} {kinds}"
        )
    q = r["ratio_large_to_small"]
    lines.append(
        f"largest / smallest: {q['samples']}x the samples, {q['peak_pss_total']}x peak PSS, "
        f"{q['peak_rss_total']}x peak RSS (per-kind columns: peak PSS MiB)"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

"""Decoded + augmented samples per second: the Ray Data pipeline against the plain reader.

Writes Fashion-MNIST shards to a temporary folder, then in one run measures, on the same shards,
cores and batch size:

(a) ``read_shards`` (metadata scan + Ray Data decode tasks) followed by ``map_batches`` of the
    weak/strong augmentation, iterated to the end in the driver;
(b) ``iter_plain``: the webdataset package in this one process, same decode and augmentation.

Ray start-up is measured separately and excluded; one untimed pass of each warms caches and
workers. Repeats are interleaved (a, b, a, b, ...) so drifting machine load hits both alike; the
report gives the median of each and the ratio (a) / (b).

    python benchmarks/data_throughput.py --samples 20000 --repeats 3 --out bench-data.json
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

import torch


def _ray_pass(folder: Path, params: dict, batch_size: int, epoch: int) -> tuple[int, float, float]:
    """(rows, seconds, of which the scan) for one full pass of the Ray Data pipeline."""
    from jumpray.data.augment import augment_batch
    from jumpray.data.shards import read_shards

    t0 = time.perf_counter()
    source = read_shards(folder, on_error="skip")
    scan_s = time.perf_counter() - t0
    ds = source.dataset.map_batches(
        augment_batch,
        batch_size=batch_size,
        batch_format="numpy",
        fn_kwargs={"augmenter": params, "seed": 0, "epoch": epoch},
    )
    rows = 0
    for batch in ds.iter_batches(batch_size=batch_size, batch_format="numpy", prefetch_batches=2):
        rows += len(batch["idx"])
    return rows, time.perf_counter() - t0, scan_s


def _plain_pass(folder: Path, params: dict, batch_size: int, epoch: int) -> tuple[int, float]:
    from jumpray.data.augment import make_augmenter
    from jumpray.data.plain_reader import iter_plain

    threads = torch.get_num_threads()
    # One intra-op thread, like the Ray workers (Ray sets OMP_NUM_THREADS=1 there). On a busy
    # 2-core box two spinning OpenMP threads made this pass up to 10x slower, which would flatter
    # the Ray figure.
    torch.set_num_threads(1)
    try:
        t0 = time.perf_counter()
        aug = make_augmenter(**params)
        generator = torch.Generator().manual_seed(epoch)
        rows = 0
        for batch in iter_plain(folder, batch_size=batch_size, augmenter=aug, generator=generator):
            rows += len(batch["idx"])
        return rows, time.perf_counter() - t0
    finally:
        torch.set_num_threads(threads)


def _augment_ms(batch: int = 256, side: int = 28, repeats: int = 9) -> float:
    """Median milliseconds of the weak + strong views of one uint8 batch on one thread (the
    augmentation's own cost, the figure a timed unit test used to assert)."""
    from jumpray.data.augment import make_augmenter

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        aug = make_augmenter(
            image_size=side, channels=1, mean=[0.5], std=[0.5], strong_magnitude=10
        )
        x = torch.randint(0, 256, (batch, 1, side, side), dtype=torch.uint8)
        g = torch.Generator().manual_seed(0)
        aug.train(x, g)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            aug.train(x, g)
            times.append(time.perf_counter() - t)
    finally:
        torch.set_num_threads(threads)
    return statistics.median(times) * 1000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--samples-per-shard", type=int, default=2500)
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON here")
    args = parser.parse_args(argv)

    from jumpray.data.convert import write_fashion_mnist
    from jumpray.data.schema import read_index
    from jumpray.log import setup_logging
    from jumpray.ray_utils import init_ray

    setup_logging("WARNING")
    with tempfile.TemporaryDirectory(prefix="jumpray-bench-") as tmp:
        folder = Path(tmp) / "fm"
        t0 = time.perf_counter()
        write_fashion_mnist(
            folder, limit=args.samples, max_samples_per_shard=args.samples_per_shard
        )
        write_s = time.perf_counter() - t0
        index = read_index(folder)
        params = {
            "image_size": 28,
            "channels": 1,
            "mean": index.mean,
            "std": index.std,
            "strong_magnitude": 5,
        }
        t0 = time.perf_counter()
        init_ray(object_store_memory=512 * 1024**2, include_dashboard=False, for_tests=True)
        ray_start_s = time.perf_counter() - t0

        _ray_pass(folder, params, args.batch_size, epoch=0)  # warm-up: workers, imports, caches
        _plain_pass(folder, params, args.batch_size, epoch=0)
        ray_s, plain_s, scan_s = [], [], []
        for rep in range(args.repeats):
            rows, seconds, scan = _ray_pass(folder, params, args.batch_size, epoch=rep + 1)
            assert rows == args.samples, f"ray pass gave {rows} rows"
            ray_s.append(seconds)
            scan_s.append(scan)
            rows, seconds = _plain_pass(folder, params, args.batch_size, epoch=rep + 1)
            assert rows == args.samples, f"plain pass gave {rows} rows"
            plain_s.append(seconds)

    ray_rate = args.samples / statistics.median(ray_s)
    plain_rate = args.samples / statistics.median(plain_s)
    result = {
        "samples": args.samples,
        "shards": len(index.shards),
        "batch_size": args.batch_size,
        "cpu_count": os.cpu_count(),
        "torch_threads_plain": 1,
        "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        "write_shards_s": round(write_s, 2),
        "ray_start_s": round(ray_start_s, 2),
        "ray_pass_s": [round(s, 3) for s in ray_s],
        "ray_scan_s": [round(s, 3) for s in scan_s],
        "plain_pass_s": [round(s, 3) for s in plain_s],
        "ray_samples_per_s": round(ray_rate, 1),
        "plain_samples_per_s": round(plain_rate, 1),
        "ratio_ray_over_plain": round(ray_rate / plain_rate, 3),
        "augment_256x28px_weak_strong_ms_1_thread": round(_augment_ms(), 2),
        "ray_samples_per_s_excluding_scan": round(
            args.samples / statistics.median([a - b for a, b in zip(ray_s, scan_s, strict=True)]), 1
        ),
    }
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

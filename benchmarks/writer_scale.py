"""The shard writer at scale: peak memory and time of ``from-list`` at 100k and 1M entries.

One run does:

1. writes, once, under ``--work``: 16 tiny 8x8 RGB PNGs (10 classes) and a list file of
   ``--max-entries`` lines ``img/k.png LABEL`` that references them over and over (the writer
   reads, verifies and stores each line's image as if it were its own file);
2. for each size and mode (``serial``, ``parallel2``), runs ``jumpray shards from-list`` in a
   fresh child process (the same code as the CLI: :func:`jumpray.jobs.shards.run`), and samples
   the resident memory (RSS) of that process tree (the child, and in parallel mode the Ray
   workers and daemons it started) every 0.2 s with psutil. The main figure is the peak RSS of
   the **child process alone** above its idle baseline (taken after the imports, before the
   conversion: ``ru_maxrss`` minus that), and, in parallel mode, the peak RSS of each Ray write
   task above its worker's RSS when the task started (the task's own ``ru_maxrss``, logged by
   the driver). Each child's stderr (the progress lines with their ETA) goes to
   ``--work/log-*.txt``.

Output: ``--out`` JSON and a short table. Ray runs (``parallel2``) take ``--lock`` (default
``/tmp/jumpray-ray.lock``)::

    python benchmarks/writer_scale.py --work /tmp/jumpray-writer --sizes 100000,1000000 \\
        --modes serial,parallel2 --out writer-scale.json

Measured figures: benchmarks/README.md, 'The shard writer at scale'.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

C = 10
IMAGES = 16


def _make_source(work: Path, entries: int) -> Path:
    """The tiny PNGs and a list file of ``entries`` lines; returns the list file."""
    import numpy as np
    from PIL import Image

    img = work / "root" / "img"
    img.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for k in range(IMAGES):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(img / f"{k}.png")
    path = work / f"list-{entries}.txt"
    if not path.is_file():
        with open(path, "w") as f:
            for i in range(entries):
                k = i % IMAGES
                f.write(f"img/{k}.png {(k + i // IMAGES) % C}\n")
    return path


def _rss_tree(pid: int) -> float:
    """RSS in MiB of process ``pid`` and its descendants."""
    import psutil

    total = 0
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    for p in procs:
        try:
            total += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total / 2**20


def _child(list_file: str, root: str, out: str, parallel: int, report: str) -> None:
    """Runs in the child: baseline RSS, then the CLI job; writes the figures to ``report``."""
    import logging

    import psutil

    from jumpray.cli import main  # imports what the CLI imports before the run
    from jumpray.data import convert  # noqa: F401

    parts: list[float] = []

    class PartPeaks(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("part ") and "MiB" in record.getMessage():
                parts.append(float(record.getMessage().split("task peak RSS ")[1].split()[0]))

    logging.getLogger("jumpray").addHandler(PartPeaks())
    base = psutil.Process().memory_info().rss
    args = ["shards", "from-list", list_file, "--root", root, "--out", out, "--overwrite"]
    if parallel > 1:
        args += ["--parallel", str(parallel)]
    t0 = time.perf_counter()
    rc = main(args)
    elapsed = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    index = json.loads((Path(out) / "index.json").read_text())
    Path(report).write_text(
        json.dumps(
            {
                "rc": rc,
                "seconds": round(elapsed, 1),
                "baseline_mib": round(base / 2**20, 1),
                "peak_above_baseline_mib": round((peak - base) / 2**20, 1),
                "num_samples": index["num_samples"],
                "num_shards": len(index["shards"]),
                "task_peak_rss_above_start_mib": parts or None,
            }
        )
    )


def _measure(list_file: Path, work: Path, parallel: int) -> dict[str, Any]:
    out = work / f"out-p{parallel}"
    report = work / "report.json"
    cmd = [
        sys.executable,
        __file__,
        "--child",
        json.dumps([str(list_file), str(work / "root"), str(out), parallel, str(report)]),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "JUMPRAY_LOG_LEVEL": "INFO"}
    with open(work / f"log-{list_file.stem}-p{parallel}.txt", "w") as log:
        proc = subprocess.Popen(cmd, env=env, stderr=log)
        tree_peak = 0.0
        while proc.poll() is None:
            tree_peak = max(tree_peak, _rss_tree(proc.pid))
            time.sleep(0.2)
    if proc.returncode:
        raise SystemExit(f"child failed with {proc.returncode}")
    result = json.loads(report.read_text())
    result["tree_peak_rss_mib"] = round(tree_peak, 1)
    shutil.rmtree(out, ignore_errors=True)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=Path("/tmp/jumpray-writer-scale"))
    p.add_argument("--sizes", default="100000,1000000", help="comma-separated entry counts")
    p.add_argument("--modes", default="serial,parallel2", help="serial, parallelN")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--lock", type=Path, default=Path("/tmp/jumpray-ray.lock"))
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        _child(*json.loads(args.child))
        return
    from benchmarks._lock import ray_lock

    sizes = [int(s) for s in args.sizes.split(",")]
    args.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in sizes:
        list_file = _make_source(args.work, n)
        for mode in args.modes.split(","):
            parallel = 1 if mode == "serial" else int(mode.removeprefix("parallel"))
            with ray_lock(args.lock if parallel > 1 else None):
                row = {"entries": n, "mode": mode, **_measure(list_file, args.work, parallel)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))
    print("\n| entries | mode | seconds | driver peak RSS above idle (MiB) | task peaks (MiB) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['entries']:,} | {r['mode']} | {r['seconds']} | "
            f"{r['peak_above_baseline_mib']} | {r['task_peak_rss_above_start_mib'] or '-'} |"
        )


if __name__ == "__main__":
    main()

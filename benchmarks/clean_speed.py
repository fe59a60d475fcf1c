"""The product path against the plain loop and cleanlab: ``jumpray clean`` end to end, in one run.

For each size N (default 10,000 and 60,000 Fashion-MNIST training samples, 40 % symmetric noise,
seed 0) the benchmark writes the shards once, then runs, one after the other and interleaved per
backbone, each in a fresh process:

- **clean**: ``jumpray clean --shards S --out O --config configs/fashion_mnist.yaml`` (tracking
  off, no test shards), timed from the outside (process start to exit: what a user waits for),
  with its parts read from ``summary.json``: ``ray.init``, the shard scan, decoding into the
  object store, the Ray Train start (controller, placement group, worker processes, process
  group), the worker's own start, loading its rows, the training epochs, teardown, scoring and
  the report; the whole process tree's peak memory (sum of PSS, sampled every second);
- **plain**: the core loop (:func:`jumpray.train.local.run_local`) on the same rows, held in
  memory, same config, torch's default thread count (as ``jumpray local``), no Ray;
- **cleanlab**: 4-fold cross-validation of a small CNN (2 conv layers + 1 hidden FC layer, about
  4.3M multiply-adds per 28x28 image; no augmentation; the same epochs, batch size, SGD settings
  and cosine schedule), out-of-fold softmax probabilities, then ``cleanlab.filter.
  find_label_issues``; wall time from the first fold to the issue mask (no retrain). Skipped, with
  a note, when cleanlab is not installed.

Then, training throughput on ``--throughput-size`` samples: ``jumpray train`` with 1 and with 2
Ray Train workers against the plain loop, repeated ``--repeats`` times in the order plain, 1
worker, 2 workers; the ratio is each Ray run's samples/s (mean epoch time after the first, as the
worker measures it) over the plain run's of the same repeat.

Every figure carries the 1-minute load average before and after its run (other programs on the
machine slow everything; ratios come from runs made side by side). Ray runs take ``--lock FILE``
(an exclusive ``flock``) when given, so several users of one machine never run two Rays at once;
the wait for the lock is not timed.

    python benchmarks/clean_speed.py --work /tmp/clean-speed --out clean-speed.json
    python benchmarks/clean_speed.py --sizes 10000 --epochs 8 --repeats 2 --lock /tmp/ray.lock

The measured table is in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from _lock import ray_lock

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "fashion_mnist.yaml"


# --------------------------------------------------------------------------------------------
# Small helpers


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _tree_pss_mib(pid: int) -> float:
    """Sum of PSS (MiB) of a process and all its descendants (RSS where PSS is unavailable)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for p in procs:
        try:
            info = p.memory_full_info()
            total += getattr(info, "pss", info.rss)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return total / 2**20


class _PeakTree:
    """Samples the memory of a process tree every ``every_s`` seconds; keeps the peak."""

    def __init__(self, pid: int, every_s: float = 1.0):
        self.pid, self.every_s, self.peak = pid, every_s, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _tree_pss_mib(self.pid))
            self._stop.wait(self.every_s)

    def __enter__(self) -> _PeakTree:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("RAY_AUTH_MODE", "disabled")
    env.setdefault("JUMPRAY_LOG_LEVEL", "WARNING")
    return env


def _run(cmd: list[str], *, log: Path, lock: Path | None = None) -> dict[str, Any]:
    """Run ``cmd`` in a fresh process; wall time, exit code, peak tree memory and load."""
    with ray_lock(lock):
        before = _load()
        start = time.perf_counter()
        with open(log, "w") as out:
            proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=_env())
            with _PeakTree(proc.pid) as mem:
                code = proc.wait()
        wall = time.perf_counter() - start
    if code != 0:
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed ({code}); log {log}:\n{tail}")
    return {
        "wall_s": round(wall, 2),
        "peak_pss_mib": round(mem.peak, 1),
        "load_before": before,
        "load_after": _load(),
    }


def _child(kind: str, spec: dict[str, Any], log: Path) -> dict[str, Any]:
    """This script as a child process (``--child KIND``); returns its JSON result + wall."""
    spec_path = log.with_suffix(".spec.json")
    spec_path.write_text(json.dumps(spec))
    result_path = log.with_suffix(".result.json")
    outer = _run(
        [sys.executable, __file__, "--child", kind, str(spec_path), str(result_path)], log=log
    )
    return json.loads(result_path.read_text()) | {"process": outer}


def _after_first(values: list[float]) -> float:
    return statistics.fmean(values[1:] or values)


# --------------------------------------------------------------------------------------------
# Data


def write_data(work: Path, n: int) -> dict[str, Path]:
    """Fashion-MNIST shards of the first ``n`` training images (sym:0.4, seed 0) and their rows."""
    from jumpray.data.convert import write_fashion_mnist
    from jumpray.data.scan import read_shard_rows, scan_folder

    folder = work / f"fm-{n}"
    rows = work / f"fm-{n}.npz"
    if not (folder / "index.json").is_file():
        write_fashion_mnist(folder, split="train", limit=n, noise="sym:0.4", seed=0)
    if not rows.is_file():
        scan = scan_folder(folder)
        parts = [b for s in scan.shards for b, _ in read_shard_rows(s.path)]
        np.savez(
            rows,
            **{
                k: np.concatenate([p[k] for p in parts])
                for k in ("image", "given_label", "idx", "clean_label")
            },
        )
    return {"shards": folder, "rows": rows}


def _array_set(path: Path):
    import torch

    from jumpray.train.local import ArraySet

    z = np.load(path)
    return ArraySet(
        torch.from_numpy(z["image"]),
        torch.from_numpy(z["given_label"]),
        torch.from_numpy(z["idx"]),
        torch.from_numpy(z["clean_label"]),
    )


def _config(spec: dict[str, Any]):
    from jumpray.config import load_config

    return load_config(spec["config"], spec["overrides"])


# --------------------------------------------------------------------------------------------
# Children: the plain loop and cleanlab


def child_plain(spec: dict[str, Any]) -> dict[str, Any]:
    """The core loop on the rows in memory (no Ray), torch's default thread count."""
    import torch

    from jumpray.data.decode import resolve_normalization
    from jumpray.data.schema import read_index
    from jumpray.train.local import run_local

    cfg = _config(spec)
    data = _array_set(Path(spec["rows"]))
    index = read_index(spec["shards"])
    mean, std = resolve_normalization(
        None, None, channels=1, index_mean=index.mean, index_std=index.std
    )
    start = time.perf_counter()
    result = run_local(cfg, data, num_classes=10, mean=list(mean), std=list(std))
    wall = time.perf_counter() - start
    h = result.history
    return {
        "wall_s": round(wall, 2),
        "torch_threads": torch.get_num_threads(),
        "epoch_times_s": [round(m["epoch_time_s"], 2) for m in h],
        "samples_per_s": round(len(data) / _after_first([m["train_time_s"] for m in h]), 1),
        "final_loss": h[-1]["loss"],
        "selection_f1": h[-1].get("f1"),
    }


def _small_cnn():
    """2 conv layers + 1 hidden FC layer: about 4.3M multiply-adds per 28x28 gray image."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )


def child_cleanlab(spec: dict[str, Any]) -> dict[str, Any]:
    """K-fold out-of-sample probabilities of the small CNN, then ``find_label_issues``."""
    import torch
    import torch.nn.functional as F
    from cleanlab.filter import find_label_issues
    from sklearn.model_selection import StratifiedKFold

    from jumpray.core import detection_metrics

    cfg = _config(spec)
    t = cfg.train
    z = np.load(spec["rows"])
    x_all = torch.from_numpy(z["image"]).float().div_(255.0).sub_(0.5).div_(0.5)
    given = z["given_label"]
    y_all = torch.from_numpy(given).long()
    probs = np.zeros((len(given), 10), dtype=np.float32)
    folds = int(spec["folds"])
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=cfg.seed)
    start = time.perf_counter()
    fold_times = []
    for k, (fit_rows, held_rows) in enumerate(splitter.split(np.zeros(len(given)), given)):
        t_fold = time.perf_counter()
        torch.manual_seed(cfg.seed + k)
        net = _small_cnn()
        opt = torch.optim.SGD(
            net.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay
        )
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t.epochs, eta_min=t.eta_min)
        fit_idx = torch.from_numpy(fit_rows)
        g = torch.Generator().manual_seed(cfg.seed + k)
        for _ in range(t.epochs):
            net.train()
            order = fit_idx[torch.randperm(len(fit_idx), generator=g)]
            for b in range(0, len(order), t.batch_size):
                sel = order[b : b + t.batch_size]
                loss = F.cross_entropy(net(x_all[sel]), y_all[sel])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            sched.step()
        net.eval()
        with torch.no_grad():
            held = torch.from_numpy(held_rows)
            for b in range(0, len(held), 1024):
                sel = held[b : b + 1024]
                probs[sel.numpy()] = torch.softmax(net(x_all[sel]), dim=1).numpy()
        fold_times.append(round(time.perf_counter() - t_fold, 2))
    is_issue = find_label_issues(given, probs, n_jobs=1)
    wall = time.perf_counter() - start
    det = detection_metrics(is_issue, given, z["clean_label"])
    return {
        "wall_s": round(wall, 2),
        "folds": folds,
        "fold_times_s": fold_times,
        "torch_threads": torch.get_num_threads(),
        "precision": round(det["precision"], 4),
        "recall": round(det["recall"], 4),
        "f1": round(det["f1"], 4),
        "num_flagged": int(det["num_flagged"]),
    }


# --------------------------------------------------------------------------------------------
# Ray runs through the CLI


CLEAN_PARTS = (
    "startup_ray_init_s",
    "startup_scan_s",
    "startup_materialize_s",
    "startup_trainer_s",
    "startup_worker_s",
    "startup_load_rows_s",
    "teardown_s",
    "scoring_first_block_s",
    "scoring_wall_s",
    "report_s",
    "torch_threads",
)


def _jumpray(*args: str) -> list[str]:
    return [
        sys.executable,
        "-c",
        "import sys; from jumpray.cli import main; sys.exit(main())",
        *args,
    ]


def run_clean(spec: dict[str, Any], out: Path, lock: Path | None) -> dict[str, Any]:
    cmd = _jumpray(
        "clean",
        "--shards",
        str(spec["shards"]),
        "--out",
        str(out),
        "--overwrite",  # a re-run of the benchmark replaces its own earlier output
        "--config",
        str(spec["config"]),
        "tracking.enabled=false",
        *(f"{k}={v}" for k, v in _flat(spec["overrides"]).items()),
    )
    outer = _run(cmd, log=out.with_suffix(".log"), lock=lock)
    s = json.loads((out / "summary.json").read_text())
    t = json.loads((out / "train_summary.json").read_text())
    epochs = [h["epoch_time_s"] for h in _history(out)]
    parts = {k: s[k] for k in CLEAN_PARTS if k in s}
    parts["train_epochs_s"] = round(sum(epochs), 2)
    return {
        "wall_s": outer["wall_s"],
        "peak_pss_mib": outer["peak_pss_mib"],
        "load_before": outer["load_before"],
        "load_after": outer["load_after"],
        "parts": parts,
        "train_samples_per_s": round(t["num_samples"] / _after_first(_train_times(out)), 1),
        "precision": s.get("precision"),
        "recall": s.get("recall"),
        "f1": s.get("f1"),
        "num_label_issues": s.get("num_label_issues"),
    }


def _history(out: Path) -> list[dict[str, float]]:
    import torch

    state = torch.load(out / "checkpoint" / "state.pt", map_location="cpu", weights_only=True)
    return list(state["history"])


def _train_times(out: Path) -> list[float]:
    return [h["train_time_s"] for h in _history(out)]


def run_train(spec: dict[str, Any], out: Path, lock: Path | None, workers: int) -> dict[str, Any]:
    cmd = _jumpray(
        "train",
        "--shards",
        str(spec["shards"]),
        "--out",
        str(out),
        "--overwrite",
        "--config",
        str(spec["config"]),
        "tracking.enabled=false",
        f"scaling.num_workers={workers}",
        *(f"{k}={v}" for k, v in _flat(spec["overrides"]).items()),
    )
    outer = _run(cmd, log=out.with_suffix(".log"), lock=lock)
    t = json.loads((out / "train_summary.json").read_text())
    times = _train_times(out)
    return outer | {
        "workers": workers,
        "samples_per_s": round(t["num_samples"] / _after_first(times), 1),
        "train_times_s": [round(x, 2) for x in times],
        "torch_threads": t.get("torch_threads"),
        "startup": {k: v for k, v in t.items() if k.startswith(("startup_", "teardown_s"))},
        "fit_wall_s": round(t["fit_wall_s"], 2),
    }


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= _flat(v, f"{prefix}{k}.")
        else:
            out[f"{prefix}{k}"] = v
    return out


# --------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("child_args", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", default="10000,60000", help="comma-separated N")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument(
        "--backbones",
        default="tiny_cnn",
        help="comma-separated; each gets a clean and a plain row (default: the schema's)",
    )
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument(
        "--skip", default="", help="comma-separated: plain,cleanlab,clean,throughput"
    )
    parser.add_argument("--throughput-size", type=int, default=10000)
    parser.add_argument("--throughput-epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1, help="throughput repeats")
    parser.add_argument("--work", type=Path, default=Path("clean-speed-work"))
    parser.add_argument("--lock", type=Path, default=None, help="flock this file around Ray runs")
    parser.add_argument("--out", type=Path, default=Path("clean-speed.json"))
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))

    if args.child:
        spec = json.loads(Path(args.child_args[0]).read_text())
        fn = {"plain": child_plain, "cleanlab": child_cleanlab}[args.child]
        Path(args.child_args[1]).write_text(json.dumps(fn(spec)))
        return 0

    import platform

    import torch

    skip = set(filter(None, args.skip.split(",")))
    try:
        import cleanlab  # noqa: F401
    except ImportError:
        skip.add("cleanlab")
        print("cleanlab is not installed: its rows are skipped", flush=True)
    args.work.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__,
        },
        "epochs": args.epochs,
        "config": args.config.name,
        "load_at_start": _load(),
        "sizes": {},
    }

    def save() -> None:
        args.out.write_text(json.dumps(report, indent=1) + "\n")

    for n in (int(x) for x in args.sizes.split(",")):
        paths = write_data(args.work, n)
        rows: dict[str, Any] = {}
        report["sizes"][str(n)] = rows
        for backbone in args.backbones.split(","):
            spec = {
                "shards": str(paths["shards"]),
                "rows": str(paths["rows"]),
                "config": str(args.config),
                "overrides": {"train": {"epochs": args.epochs}, "model": {"backbone": backbone}},
                "folds": args.folds,
            }
            tag = f"{n}-{backbone}"
            if "plain" not in skip:
                rows[f"plain/{backbone}"] = _child("plain", spec, args.work / f"plain-{tag}.log")
                print(tag, "plain", json.dumps(rows[f"plain/{backbone}"]), flush=True)
                save()
            if "clean" not in skip:
                out = args.work / f"clean-{tag}"
                rows[f"clean/{backbone}"] = run_clean(spec, out, args.lock)
                print(tag, "clean", json.dumps(rows[f"clean/{backbone}"]), flush=True)
                save()
        if "cleanlab" not in skip:
            rows["cleanlab"] = _child("cleanlab", spec, args.work / f"cleanlab-{n}.log")
            print(n, "cleanlab", json.dumps(rows["cleanlab"]), flush=True)
            save()
        _ratios(rows)
        save()

    if "throughput" not in skip:
        n = args.throughput_size
        paths = write_data(args.work, n)
        spec = {
            "shards": str(paths["shards"]),
            "rows": str(paths["rows"]),
            "config": str(args.config),
            "overrides": {"train": {"epochs": args.throughput_epochs}},
        }
        runs: list[dict[str, Any]] = []
        report["throughput"] = {"samples": n, "epochs": args.throughput_epochs, "repeats": runs}
        for r in range(args.repeats):
            rep: dict[str, Any] = {"plain": _child("plain", spec, args.work / f"tp-plain-{r}.log")}
            for w in (1, 2):
                rep[f"ray_{w}"] = run_train(spec, args.work / f"tp-ray{w}-{r}", args.lock, w)
                rep[f"ratio_ray_{w}_vs_plain"] = round(
                    rep[f"ray_{w}"]["samples_per_s"] / rep["plain"]["samples_per_s"], 3
                )
            runs.append(rep)
            print("throughput", json.dumps(rep), flush=True)
            save()
    report["load_at_end"] = _load()
    save()
    print(table(report))
    print(f"written: {args.out}")
    return 0


def _ratios(rows: dict[str, Any]) -> None:
    lab = rows.get("cleanlab")
    for key, row in rows.items():
        if not key.startswith("clean/"):
            continue
        backbone = key.split("/", 1)[1]
        if lab:
            row["ratio_wall_vs_cleanlab"] = round(row["wall_s"] / lab["wall_s"], 3)
        plain = rows.get(f"plain/{backbone}")
        if plain:
            row["ratio_train_throughput_vs_plain"] = round(
                row["train_samples_per_s"] / plain["samples_per_s"], 3
            )


def table(r: dict[str, Any]) -> str:
    """The report as Markdown tables (benchmarks/README.md has a measured one)."""
    lines = [
        f"{r['date']}, {r['machine']['cpus']} cores ({r['machine']['processor']}), torch "
        f"{r['machine']['torch']}, {r['epochs']} epochs, {r['config']}",
        "",
        "| N | run | wall s | parts | F1 | peak PSS MiB | load before/after |",
        "|---|---|---|---|---|---|---|",
    ]
    for n, rows in r["sizes"].items():
        for key, row in rows.items():
            parts = ""
            if "parts" in row:
                p = row["parts"]
                parts = ", ".join(f"{k.replace('startup_', '')} {v}" for k, v in p.items())
            f1 = row.get("f1")
            lines.append(
                f"| {n} | {key} | {row['wall_s']} | {parts} | "
                f"{'' if f1 is None else f'{f1:.3f}'} | "
                f"{row.get('peak_pss_mib', row.get('process', {}).get('peak_pss_mib', ''))} | "
                f"{row.get('load_before', row.get('process', {}).get('load_before', ''))}/"
                f"{row.get('load_after', row.get('process', {}).get('load_after', ''))} |"
            )
    if "throughput" in r:
        lines += ["", "| repeat | plain samples/s | 1 worker | 2 workers |", "|---|---|---|---|"]
        for i, rep in enumerate(r["throughput"]["repeats"]):
            lines.append(
                f"| {i} | {rep['plain']['samples_per_s']} | {rep['ray_1']['samples_per_s']} "
                f"({rep['ratio_ray_1_vs_plain']}x) | {rep['ray_2']['samples_per_s']} "
                f"({rep['ratio_ray_2_vs_plain']}x) |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())

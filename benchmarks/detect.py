"""Product-path detection benchmark: ``jumpray clean`` (defaults) against cleanlab (issue 12).

For every task of :mod:`detect_defaults` (``sym:0.2``, ``sym:0.4``, ``pairflip:0.45``,
``asym:0.4``, ``instance:0.4`` on the first 10,000 Fashion-MNIST training images, noise seed 0,
and the held-out ``confusion`` noise on images 20,000-29,999), on the same shards and one after
another:

1. **jumpray**: the real ``jumpray clean --shards ... --test-shards ...`` with the schema defaults
   (no ``--config``; only ``train.epochs`` and ``tracking.enabled=false`` are set), in a fresh
   process on a local Ray. Its precision / recall / F1, test accuracy and wall time come from
   its ``summary.json``; the wall time is also taken around the process (Python and Ray start-up
   included). With ``--ray-lock FILE`` the process waits for that lock first (the wait is not
   timed).
2. **cleanlab** with a small CNN of the kind its tutorials use (``small_cnn``: 2 conv layers + 1
   hidden FC, no augmentation), K-fold cross-validation (``--folds``, default 4) with the same
   optimiser, learning rate and epochs, then ``cleanlab.filter.find_label_issues`` with its
   defaults (``prune_by_noise_rate``); its test accuracy is that of the same network retrained
   on the samples it keeps (cleanlab's ``CleanLearning`` recipe; the retrain is timed apart).
3. **cleanlab** the same way with jumpray's default backbone (``model.backbone`` of the schema).
4. **plain CE**: the default backbone trained with cross-entropy on all the noisy labels (the
   plain local loop, the default augmentation, same epochs): the test accuracy that cleaning must
   beat.

cleanlab runs in this process with ``torch`` threads = the CPU count, as a user would run it.

Writes ``OUT/detect.json`` (every row, the machine, the load) and ``OUT/detect.md`` (the table
with the ratios jumpray / cleanlab). One run::

    python benchmarks/detect.py --work /tmp/jr-detect --out detect-out --epochs 8 \\
        --ray-lock /tmp/jumpray-ray.lock
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import detect_defaults as dd  # noqa: E402
import torch  # noqa: E402
from _lock import ray_lock  # noqa: E402

from jumpray.config import load_config  # noqa: E402
from jumpray.core import detection_metrics  # noqa: E402

REPO = dd.REPO


def write_task_shards(task: str, work: Path, cache: Path) -> tuple[Path, Path, dict[str, Any]]:
    """The task's training shards (given + clean labels) and the test shards, written once."""
    from jumpray.data.convert import write_arrays, write_fashion_mnist
    from jumpray.data.fashion_mnist import FASHION_MNIST_CLASSES

    data = dd.load_task(task, cache)
    train = work / f"train-{task.replace(':', '')}"
    test = work / "test"
    if not (train / "index.json").is_file():
        write_arrays(
            train,
            data["images"],
            data["given"],
            clean_labels=data["clean"],
            num_classes=dd.NUM_CLASSES,
            class_names=list(FASHION_MNIST_CLASSES),
            prefix="train",
            overwrite=True,
        )
    if not (test / "index.json").is_file():
        write_fashion_mnist(test, split="test", overwrite=True)
    return train, test, data


def run_jumpray_clean(
    train: Path, test: Path, out: Path, *, epochs: int, lock: Path | None, extra: list[str]
) -> dict[str, Any]:
    """``jumpray clean`` with the defaults in a fresh process; its summary + the process wall."""
    cmd = [
        sys.executable,
        "-m",
        "jumpray.cli",
        "clean",
        "--shards",
        str(train),
        "--test-shards",
        str(test),
        "--out",
        str(out),
        "--overwrite",  # a re-run of the benchmark replaces its own earlier output
        f"train.epochs={epochs}",
        "tracking.enabled=false",
        *extra,
    ]
    env = os.environ | {"PYTHONPATH": str(REPO)}
    with ray_lock(lock):
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, check=False, capture_output=True, text=True)
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise RuntimeError(f"jumpray clean failed on {train} (exit {proc.returncode})")
    s = json.loads((out / "summary.json").read_text())
    return {
        "method": "jumpray clean (defaults)",
        "precision": s["precision"],
        "recall": s["recall"],
        "f1": s["f1"],
        "test_accuracy": s.get("test_accuracy"),
        "wall_s": round(wall, 1),
        "job_wall_s": s.get("total_wall_s"),
        "load_average": [round(load, 2), round(os.getloadavg()[0], 2)],
    }


def run_cleanlab(
    data: dict[str, Any], *, backbone: str, epochs: int, folds: int, seed: int = 0
) -> dict[str, Any]:
    """K-fold CV + ``find_label_issues`` (defaults), then a retrain on the kept samples."""
    from cleanlab.filter import find_label_issues
    from sklearn.model_selection import StratifiedKFold

    cfg = dd.run_config(
        ["method.name=ce", f"model.backbone={backbone}", "data.augment=none"], epochs=epochs
    )
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"num_threads": None})})
    given, clean, images = data["given"], data["clean"], data["images"]
    mean, std = data["mean"], data["std"]
    oos = np.zeros((len(given), dd.NUM_CLASSES), dtype=np.float32)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    for fit_rows, held_rows in splitter.split(np.zeros(len(given)), given):
        fold = dd.to_arrays(images[fit_rows], given[fit_rows], clean[fit_rows])
        res = dd.train_local(cfg, fold, mean=mean, std=std, record=False, keep=1)
        oos[held_rows] = dd.predict(res.method.eval_model(), images[held_rows], mean, std)
    issue = find_label_issues(given, oos)
    find_s = time.perf_counter() - t0
    kept = np.flatnonzero(~issue)
    t1 = time.perf_counter()
    res = dd.train_local(
        cfg, dd.to_arrays(images[kept], given[kept], clean[kept]), mean=mean, std=std, record=False
    )
    retrain_s = time.perf_counter() - t1
    test_p = dd.predict(res.method.eval_model(), data["test_images"], mean, std)
    m = detection_metrics(issue, given, clean)
    return {
        "method": f"cleanlab {folds}-fold, {backbone}",
        "precision": float(m["precision"]),
        "recall": float(m["recall"]),
        "f1": float(m["f1"]),
        "test_accuracy": float((test_p.argmax(1) == data["test_labels"]).mean()),
        "wall_s": round(find_s, 1),
        "retrain_s": round(retrain_s, 1),
        "load_average": [round(load, 2), round(os.getloadavg()[0], 2)],
    }


def run_plain_ce(data: dict[str, Any], *, backbone: str, epochs: int) -> dict[str, Any]:
    """Cross-entropy on every noisy label: the test accuracy to beat."""
    cfg = dd.run_config(["method.name=ce", f"model.backbone={backbone}"], epochs=epochs)
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"num_threads": None})})
    t0 = time.perf_counter()
    res = dd.train_local(
        cfg,
        dd.to_arrays(data["images"], data["given"], data["clean"]),
        mean=data["mean"],
        std=data["std"],
        record=False,
    )
    wall = time.perf_counter() - t0
    test_p = dd.predict(res.method.eval_model(), data["test_images"], data["mean"], data["std"])
    return {
        "method": f"plain CE, {backbone}",
        "precision": None,
        "recall": None,
        "f1": None,
        "test_accuracy": float((test_p.argmax(1) == data["test_labels"]).mean()),
        "wall_s": round(wall, 1),
    }


def machine() -> dict[str, Any]:
    cpu = platform.machine()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    import cleanlab

    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__.split("+")[0],
        "cleanlab": cleanlab.__version__,
        "python": platform.python_version(),
    }


def ratios(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per task: jumpray / cleanlab (small CNN) for F1 and wall time; jumpray - CE accuracy."""
    out: dict[str, dict[str, float]] = {}
    for task in dict.fromkeys(r["task"] for r in rows):
        mine = [r for r in rows if r["task"] == task]
        jr = [r for r in mine if r["method"].startswith("jumpray")]
        cl = [r for r in mine if r["method"].endswith("small_cnn")]
        ce = [r for r in mine if r["method"].startswith("plain CE")]
        if not (jr and cl and ce):
            continue
        jr_row, cl_row, ce_row = jr[0], cl[0], ce[0]
        out[task] = {
            "f1_ratio": round(jr_row["f1"] / cl_row["f1"], 3),
            "f1_diff": round(jr_row["f1"] - cl_row["f1"], 4),
            "wall_ratio": round(jr_row["wall_s"] / cl_row["wall_s"], 3),
            "acc_minus_ce": round(jr_row["test_accuracy"] - ce_row["test_accuracy"], 4),
        }
    return out


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"Detection benchmark, {report['date']}, {report['machine']['cpu']} "
        f"({report['machine']['cpu_count']} CPUs), torch {report['machine']['torch']}, "
        f"cleanlab {report['machine']['cleanlab']}; {report['settings']['epochs']} epochs, "
        f"{dd.N_TRAIN} training samples per task, 10,000 test images.",
        "",
        "| noise | method | precision | recall | F1 | test acc | wall s | load |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]

    def num(v: Any, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    for r in report["rows"]:
        load = r.get("load_average")
        lines.append(
            f"| {r['task']} | {r['method']} | {num(r['precision'], '.3f')} | "
            f"{num(r['recall'], '.3f')} | {num(r['f1'], '.3f')} | "
            f"{num(r['test_accuracy'], '.4f')} | {num(r['wall_s'], '.0f')} | "
            f"{'-' if not load else f'{load[0]:.1f}-{load[1]:.1f}'} |"
        )
    lines += [
        "",
        "| noise | F1 jumpray / cleanlab | F1 difference | wall jumpray / cleanlab "
        "| test acc jumpray - plain CE |",
        "|---|---:|---:|---:|---:|",
    ]
    for task, q in report["ratios"].items():
        lines.append(
            f"| {task} | {q['f1_ratio']:.3f} | {q['f1_diff']:+.4f} | {q['wall_ratio']:.2f} | "
            f"{q['acc_minus_ce']:+.4f} |"
        )
    return "\n".join(lines) + "\n"


def run_task(task: str, train: Path, test: Path, data: dict[str, Any], args, default_backbone: str):
    """The task's rows, one method after another (generator: each row as soon as it is done)."""
    if "clean" not in args.skip:
        out = args.work / f"clean-{task.replace(':', '')}"
        yield run_jumpray_clean(
            train, test, out, epochs=args.epochs, lock=args.ray_lock, extra=args.overrides
        )
    if "cleanlab" not in args.skip:
        yield run_cleanlab(data, backbone="small_cnn", epochs=args.epochs, folds=args.folds)
    if "default" not in args.skip and default_backbone != "small_cnn":
        yield run_cleanlab(data, backbone=default_backbone, epochs=args.epochs, folds=args.folds)
    if "ce" not in args.skip:
        yield run_plain_ce(data, backbone=default_backbone, epochs=args.epochs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="shards and clean outputs")
    parser.add_argument("--out", type=Path, required=True, help="detect.json and detect.md here")
    parser.add_argument("--cache", type=Path, default=REPO / ".cache" / "detect")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--tasks", nargs="+", default=list(dd.TASKS))
    parser.add_argument("--ray-lock", type=Path, default=None, help="flock this file around Ray")
    parser.add_argument(
        "--skip", nargs="*", default=[], help="parts to leave out: clean, cleanlab, default, ce"
    )
    parser.add_argument("overrides", nargs="*", help="extra overrides for jumpray clean only")
    args = parser.parse_args(argv)
    from jumpray.log import setup_logging

    setup_logging("WARNING")
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    default_backbone = load_config(None).model.backbone
    report: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "settings": {
            "epochs": args.epochs,
            "folds": args.folds,
            "default_backbone": default_backbone,
            "clean_overrides": args.overrides,
        },
        "rows": [],
    }
    t_all = time.perf_counter()
    for task in args.tasks:
        train, test, data = write_task_shards(task, args.work, args.cache)
        rate = float((data["given"] != data["clean"]).mean())
        for row in run_task(task, train, test, data, args, default_backbone):
            row = {"task": task, "noise_rate": round(rate, 4)} | row
            report["rows"].append(row)
            print(json.dumps(row), flush=True)
        report["ratios"] = ratios(report["rows"])
        report["total_wall_s"] = round(time.perf_counter() - t_all, 1)
        (args.out / "detect.json").write_text(json.dumps(report, indent=1))
        (args.out / "detect.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

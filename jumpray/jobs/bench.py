"""``jumpray bench``: Jump-teaching against CE, Co-teaching, JoCoR and cleanlab, in one run.

For every noise setting of the profile, each method trains on the same Fashion-MNIST samples
with the same backbone, epochs, batch size, learning rate and seed, one after another (settings
interleaved, so machine drift touches every method alike). Each run is a fresh process
(:mod:`jumpray.jobs._bench_worker`), which makes the CPU peak-memory figures comparable. Writes
``bench.json`` (docs/contract.md), ``bench.md`` and ``bench.png`` (:mod:`jumpray.jobs._bench_report`).

One run of a (method, noise) gives its accuracy and F1 (deterministic on CPU) but not a speed
that holds from run to run: on a shared machine a row's samples/s moves by a third. So the speed
and memory goals are read from a separate *timing phase* after the quality runs: each trainer's
step loop (Jump-teaching, CE, Co-teaching, JoCoR; cleanlab trains with CE's step) runs a fixed
number of steps after discarded warm-up steps, in a fresh process, in rounds interleaved
A B C D A B C D ...; ratios are taken pair by pair within a round, and a goal is met, missed or
undecided by the spread of those ratios (:func:`jumpray.jobs._bench_report.summarize_timing`).

The yardstick is the paper's claim (docs/method.md, 'Reported results'): about 2.5x the training
speed and half the peak memory of two-network methods, at better accuracy.

Examples::

    jumpray bench --profile quick --out bench-out
    jumpray bench --profile full --out bench-full --device cuda model.backbone=preact_resnet18
    jumpray bench --profile paper --out bench-paper          # on a GPU: the paper's comparison
    jumpray bench --profile quick --out bench-t --timing-only  # the timing phase alone
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jumpray.config import RunConfig, load_config, merge_settings, parse_overrides
from jumpray.errors import ConfigError, JumprayError
from jumpray.files import write_text
from jumpray.jobs._bench_report import (
    DISTURBED_CORES,
    check_goals,
    compute_ratios,
    format_markdown,
    plot_report,
    summarize_timing,
)
from jumpray.jobs.local import LOCAL_DEFAULTS, noisy_fashion_mnist
from jumpray.log import get_logger

__all__ = ["add_arguments", "run", "PROFILES", "METHODS", "bench_configs", "run_bench"]

log = get_logger(__name__)

METHODS = ("jumpteaching", "ce", "coteaching", "jocor", "cleanlab")
# The trainers the timing phase times: cleanlab's trainings are CE's step loop.
TIMED = ("jumpteaching", "ce", "coteaching", "jocor")

# Every profile's settings, in one place. limit/test_limit: first N samples (None = all).
# warmup_epochs is also the Co-teaching/JoCoR ramp (num_gradual): every selecting method starts
# selecting on the same schedule. Expected times are on the 2-core development box, CPU.
# timing: the timing phase's rounds; per round one speed run (every method in one process, taking
# turns of `block` timed steps until each has run `steps`, after `warmup_steps` discarded ones)
# and one memory run per method (`memory_steps` steps after the warm-up, alone in a process).
# overrides: dotted config values of the profile, applied below the user's.
PROFILES: dict[str, dict[str, Any]] = {
    "tiny": {  # the test's profile: seconds per run, checks mechanics only
        "limit": 1000,
        "test_limit": 1000,
        "noises": ("sym:0.4",),
        "epochs": 3,
        "batch_size": 32,  # enough steps (cleanlab retrains on about half) to beat chance
        "warmup_epochs": 1,
        "folds": 2,
        "timing": {"rounds": 2, "steps": 5, "block": 2, "warmup_steps": 2, "memory_steps": 3},
    },
    "quick": {  # quality runs under 15 minutes on 2 cores, then the timing phase
        "limit": 8000,
        "test_limit": 5000,
        "noises": ("sym:0.4", "pairflip:0.45", "instance:0.4"),
        "epochs": 6,
        "batch_size": 128,
        "warmup_epochs": 2,
        "folds": 3,
        "timing": {"rounds": 5, "steps": 60, "block": 10, "warmup_steps": 5, "memory_steps": 10},
    },
    # the whole training set: 7.5x the samples, 3.3x the epochs, 4/3 the settings of quick, so
    # about 33x its training work: about 8 hours on the 2-core box (quick: about 14.5 minutes)
    "full": {
        "limit": None,
        "test_limit": None,
        "noises": ("sym:0.4", "pairflip:0.45", "instance:0.4", "sym:0.8"),
        "epochs": 20,
        "batch_size": 128,
        "warmup_epochs": 5,
        "folds": 3,
        "timing": {"rounds": 7, "steps": 80, "block": 10, "warmup_steps": 5, "memory_steps": 10},
    },
    # The seed's efficiency comparison as far as our baselines go: one backbone (the official
    # CIFAR code's PreAct-ResNet-18) and batch 128 for every method, and on CUDA the GPU path of
    # every method alike: bf16 autocast and channels-last. On Fashion-MNIST (the data the bench
    # has offline), not CIFAR. Meant for a GPU (days on 2 cores).
    "paper": {
        "limit": None,
        "test_limit": None,
        "noises": ("sym:0.4", "pairflip:0.45", "instance:0.4", "sym:0.8"),
        "epochs": 20,
        "batch_size": 128,
        "warmup_epochs": 5,
        "folds": 3,
        "timing": {"rounds": 7, "steps": 100, "block": 10, "warmup_steps": 10, "memory_steps": 20},
        "overrides": (
            "model.backbone=preact_resnet18",
            "train.amp=bf16",
            "train.channels_last=true",
        ),
    },
}


class BenchRunError(JumprayError, RuntimeError):
    """One (method, noise) worker process failed."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from jumpray.cli import add_config_arguments

    parser.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default="quick",
        help="quick (default), full, paper (the seed's efficiency comparison, for a GPU), tiny",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument(
        "--methods",
        default=",".join(METHODS),
        help=f"comma-separated subset of {','.join(METHODS)} (default all)",
    )
    parser.add_argument("--folds", type=int, default=None, help="cleanlab's K (default: profile's)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads per run (default: CPU count)"
    )
    parser.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="S",
        help="on a shared machine: before each run, wait up to S seconds until other programs "
        f"keep fewer than {DISTURBED_CORES} cores busy (default 0: start at once)",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=0,
        metavar="N",
        help="on a shared machine: run a (method, noise) again, up to N times, when other "
        f"programs kept more than {DISTURBED_CORES} cores busy during it (timings only change)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        metavar="N",
        help="timing phase: interleaved rounds (default: the profile's; 0 = no timing phase)",
    )
    parser.add_argument(
        "--timing-only",
        action="store_true",
        help="run the timing phase alone (speed and memory), without the quality runs",
    )
    add_config_arguments(parser)


def _parse_methods(text: str) -> list[str]:
    names = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in METHODS]
    if unknown or not names:
        raise ConfigError(
            f"--methods: unknown {unknown or text!r}; choose from {', '.join(METHODS)}"
        )
    if "cleanlab" in names and importlib.util.find_spec("cleanlab") is None:
        raise ConfigError(
            "--methods: cleanlab is not installed; install the bench extra "
            "(pip install 'jumpray[bench]', or pip install 'cleanlab>=2.6'), "
            "or leave it out with --methods jumpteaching,ce,coteaching,jocor"
        )
    return [m for m in METHODS if m in names]


def bench_configs(
    profile: str,
    methods: list[str],
    *,
    config_path: str | None = None,
    overrides: list[str] = (),  # type: ignore[assignment]
    threads: int | None = None,
) -> dict[str, RunConfig]:
    """One resolved config per method: local defaults, the profile, the file, the overrides.

    The profile gives the budget and its ``overrides`` (the paper profile's backbone and GPU
    path), below the user's file and overrides. The method name is set last, so nothing but the
    method differs between the runs; cleanlab uses the CE config (a single-head network trained
    with plain cross-entropy).

    Raises:
        ConfigError: a bad file or override (every problem listed), or fewer than 2 epochs.
    """
    p = PROFILES[profile]
    base = {
        "train": dict(LOCAL_DEFAULTS["train"])
        | {
            "epochs": p["epochs"],
            "batch_size": p["batch_size"],
            "num_threads": threads,
        },
        "jump": {"warmup_epochs": p["warmup_epochs"]},
        "method": {"num_gradual": p["warmup_epochs"]},
        "tracking": {"enabled": False},
    }
    # The profile's own values sit below the user's file and overrides, as its budget does.
    base = merge_settings(base, parse_overrides(p.get("overrides", ())))
    out = {}
    for name in methods:
        trainer = "ce" if name == "cleanlab" else name
        out[name] = load_config(config_path, [*overrides, f"method.name={trainer}"], base=base)
    epochs = next(iter(out.values())).train.epochs
    if epochs < 2:
        raise ConfigError(f"train.epochs: the bench needs at least 2, got {epochs}")
    return out


def _write_data(noise: str, *, profile: dict[str, Any], seed: int, folder: Path) -> Path:
    """Make the noisy training set once per setting; every method's process reads this file."""
    data = noisy_fashion_mnist(
        limit=profile["limit"], noise=noise, seed=seed, test_limit=profile["test_limit"]
    )
    path = folder / f"data-{noise.replace(':', '_')}.npz"
    assert data.train.clean_label is not None
    np.savez(
        path,
        image=data.train.image.numpy(),
        given_label=data.train.given_label.numpy(),
        clean_label=data.train.clean_label.numpy(),
        test_image=data.test.image.numpy(),
        test_label=data.test.given_label.numpy(),
        realized_rate=np.float64(data.realized_rate),
    )
    log.info(
        "bench: %s, %d samples, realized noise %.3f", noise, len(data.train), data.realized_rate
    )
    return path


def run_worker(spec: dict[str, Any], *, threads: int) -> dict[str, Any]:
    """Run one (method, noise) in a fresh process; returns its row.

    Raises:
        BenchRunError: the process failed or printed no JSON row.
    """
    env = os.environ | {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "jumpray.jobs._bench_worker", json.dumps(spec)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, env=env, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise BenchRunError(
            f"{spec['method']} on {spec['noise']}: worker exited with {proc.returncode} "
            "(its log is above)"
        )
    return json.loads(lines[-1])


def _machine(threads: int, device: str) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": threads,
        "torch": torch.__version__.split("+")[0],
        "python": platform.python_version(),
    }
    if device.startswith("cuda"):
        info["gpu"] = torch.cuda.get_device_name(0)
    if importlib.util.find_spec("cleanlab") is not None:
        import cleanlab

        info["cleanlab"] = cleanlab.__version__
    return info


def run_bench(
    profile: str,
    out: Path,
    *,
    methods: list[str],
    configs: dict[str, RunConfig],
    device: str,
    threads: int,
    folds: int,
    wait_idle: float = 0.0,
    retries: int = 0,
    rounds: int | None = None,
    quality: bool = True,
) -> dict[str, Any]:
    """Run every (noise, method) of ``profile``, then the timing phase; write the outputs.

    Args:
        rounds: the timing phase's rounds (None: the profile's; 0: no timing phase).
        quality: run the quality runs (False: the timing phase alone).

    Returns:
        The report (the content of bench.json / bench.md / bench.png).
    """
    p = PROFILES[profile]
    cfg = next(iter(configs.values()))
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    report: dict[str, Any] = {
        "profile": profile,
        "device": device,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": _machine(threads, device),
        "settings": {
            "dataset": "fashion-mnist",
            "num_train": p["limit"] or 60000,
            "num_test": p["test_limit"] or 10000,
            "noises": list(p["noises"]),
            "methods": methods,
            "backbone": cfg.model.backbone,
            "epochs": cfg.train.epochs,
            "batch_size": cfg.train.batch_size,
            "lr": cfg.train.lr,
            "seed": cfg.seed,
            "warmup_epochs": cfg.jump.warmup_epochs,
            "num_gradual": cfg.method.num_gradual,
            "folds": folds,
        },
        "rows": [],
    }
    rounds = p["timing"]["rounds"] if rounds is None else rounds
    with tempfile.TemporaryDirectory(prefix=".bench-data-", dir=out) as tmp:
        for noise in p["noises"] if quality else ():
            data = _write_data(noise, profile=p, seed=cfg.seed, folder=Path(tmp))
            for name in methods:
                spec = {
                    "method": name,
                    "noise": noise,
                    "data": str(data),
                    "config": configs[name].model_dump(),
                    "device": device,
                    "folds": folds,
                }
                try:
                    row = _measure(spec, threads=threads, wait_idle=wait_idle, retries=retries)
                except BenchRunError as exc:
                    log.error("bench: %s", exc)
                    row = {"method": name, "noise": noise, "error": str(exc)}
                report["rows"].append(row)
                _log_row(row)
            _finish(report, out, t0, plot=False)  # partial results survive a later failure
        timed = [m for m in methods if m in TIMED]
        if rounds > 0 and timed:
            report["timing"] = run_timing(
                profile,
                configs,
                methods=timed,
                folder=Path(tmp),
                device=device,
                threads=threads,
                rounds=rounds,
                wait_idle=wait_idle,
            )
    _finish(report, out, t0, plot=True)
    return report


def run_timing(
    profile: str,
    configs: dict[str, RunConfig],
    *,
    methods: list[str],
    folder: Path,
    device: str,
    threads: int,
    rounds: int,
    wait_idle: float = 0.0,
) -> dict[str, Any]:
    """The timing phase: ``rounds`` rounds, each one speed run then one memory run per method.

    The speed run (:func:`jumpray.jobs._bench_worker.run_speed_spec`) is one fresh process in
    which the methods take turns of ``block`` timed steps; each memory run
    (:func:`jumpray.jobs._bench_worker.run_timing_spec`) is a fresh process of one method. All on
    the profile's first noise setting, the same data for every method. A failed run is kept as a
    row with its ``error``; its round gives no ratio for that method (no speed ratio at all when
    the speed run failed).

    Returns:
        ``{"settings", "rows", "summary", "load_average"}``: the rows per (round, method): the
        memory run's row with the speed run's figures for that method
        (``samples_per_s``, ``mean_samples_per_s``, ``samples_per_cpu_s``, ``step_ms``,
        ``num_samples``; the memory run's own speed kept as ``alone_samples_per_s``),
        :func:`~jumpray.jobs._bench_report.summarize_timing` of them, and the 1-minute load
        average before and after the phase.
    """
    from jumpray.jobs._bench_worker import load_average, selecting_epoch

    p = PROFILES[profile]
    t = p["timing"]
    cfg = configs[methods[0]]
    noise = p["noises"][0]
    data = _write_data(noise, profile=p, seed=cfg.seed, folder=folder)
    load_before = load_average()
    rows = []
    for r in range(rounds):
        if wait_idle > 0:
            _wait_for_idle(wait_idle)
        base = {
            "noise": noise,
            "round": r,
            "data": str(data),
            "device": device,
            "warmup_steps": t["warmup_steps"],
        }
        speed = _timing_run(
            base
            | {"phase": "speed", "method": "+".join(methods), "steps": t["steps"]}
            | {"block": t["block"], "configs": {m: configs[m].model_dump() for m in methods}},
            threads=threads,
        )
        for name in methods:
            if wait_idle > 0:
                _wait_for_idle(wait_idle)
            memory = _timing_run(
                base
                | {"phase": "timing", "method": name, "steps": t["memory_steps"]}
                | {"config": configs[name].model_dump()},
                threads=threads,
            )
            row = _merge_speed(memory, speed)
            rows.append(row)
            if row.get("error") is None:
                # The round's speed (from the speed run; None when it failed), not the memory
                # run's own.
                sps = row["samples_per_s"]
                log.info(
                    "bench timing: round %d/%d %s: %s samples/s, peak %.0f MB",
                    r + 1,
                    rounds,
                    name,
                    "–" if sps is None else f"{sps:.0f}",
                    row["peak_memory_mb"],
                )
    first = next((row for row in rows if row.get("error") is None), {})
    return {
        "settings": {
            "rounds": rounds,
            "steps": t["steps"],
            "block": t["block"],
            "warmup_steps": t["warmup_steps"],
            "memory_steps": t["memory_steps"],
            "methods": methods,
            "noise": noise,
            "batch_size": cfg.train.batch_size,
            "backbone": cfg.model.backbone,
            "epoch": selecting_epoch(cfg),
            "device": device,
            "torch_threads": first.get("torch_threads", threads),
            "amp": first.get("amp"),
            "channels_last": first.get("channels_last"),
        },
        "rows": rows,
        "summary": summarize_timing(rows),
        "load_average": [load_before, load_average()],
    }


def _timing_run(spec: dict[str, Any], *, threads: int) -> dict[str, Any]:
    """One run of the timing phase in a fresh process; ``{"round", "method", "error"}`` when it
    failed (the round then gives no ratio for what it measured)."""
    try:
        return run_worker(spec, threads=threads)
    except BenchRunError as exc:
        log.error("bench timing: round %d: %s", spec["round"] + 1, exc)
        return {"round": spec["round"], "method": spec["method"], "error": str(exc)}


SPEED_FIELDS = (
    "samples_per_s",
    "mean_samples_per_s",
    "samples_per_cpu_s",
    "step_ms",
    "num_samples",
)


def _merge_speed(row: dict[str, Any], speed: dict[str, Any]) -> dict[str, Any]:
    """A method's timing row: its memory run's row with the round's speed run's figures.

    A round whose speed run failed keeps the memory row's figures for memory only: its speed is
    an ``error`` (the ratios then leave the round out).
    """
    if row.get("error") is not None:
        return row
    out = dict(row)
    out["alone_samples_per_s"] = out.pop("samples_per_s", None)
    out["memory_steps"] = out.pop("steps", None)
    mine = speed.get("methods", {}).get(row["method"])
    if speed.get("error") is not None or mine is None:
        out["speed_error"] = speed.get("error", "no speed figures for this method")
        out["samples_per_s"] = None
        return out
    out.update({key: mine[key] for key in SPEED_FIELDS})
    out["steps"] = speed["steps"]
    out["speed_other_cpu_cores"] = speed.get("other_cpu_cores")
    return out


def _measure(
    spec: dict[str, Any], *, threads: int, wait_idle: float, retries: int
) -> dict[str, Any]:
    """One (method, noise); on a shared machine, run it again when other programs disturbed it.

    Seeds are fixed, so an attempt differs from another only in its timings: the row whose run
    saw the least CPU use by other programs is kept, and ``attempts`` says how many ran.
    """
    best: dict[str, Any] | None = None
    for attempt in range(1, retries + 2):
        if wait_idle > 0:
            _wait_for_idle(wait_idle)
        log.info("bench: %s on %s (attempt %d)", spec["method"], spec["noise"], attempt)
        row = run_worker(spec, threads=threads)
        others = row.get("other_cpu_cores") or 0.0
        if best is None or others < (best.get("other_cpu_cores") or 0.0):
            best = row
        if others <= DISTURBED_CORES:
            break
        log.warning(
            "bench: other programs used %.2f cores during %s on %s%s",
            others,
            spec["method"],
            spec["noise"],
            "; running it again" if attempt <= retries else "",
        )
    assert best is not None
    return best | {"attempts": attempt}


def _wait_for_idle(limit_s: float, *, max_busy_cores: float = DISTURBED_CORES) -> None:
    """Wait (up to ``limit_s``) until other programs keep fewer than ``max_busy_cores`` busy.

    Between runs the bench itself is idle, so the system-wide CPU use over 2 s is other work.
    """
    import psutil

    start = time.perf_counter()
    while True:
        busy = psutil.cpu_percent(interval=2.0) / 100 * (os.cpu_count() or 1)
        waited = time.perf_counter() - start
        if busy < max_busy_cores or waited >= limit_s:
            if waited > 3:
                log.info(
                    "bench: waited %.0f s for the machine (others use %.1f cores)", waited, busy
                )
            return


def _log_row(row: dict[str, Any]) -> None:
    if row.get("error"):
        return
    log.info(
        "bench: %s %s: test acc %.4f, F1 %s, %.0f samples/s, peak %.0f MB, wall %.0f s",
        row["method"],
        row["noise"],
        row["test_accuracy"],
        "-" if row["f1"] is None else f"{row['f1']:.3f}",
        row["samples_per_s"],
        row["peak_memory_mb"],
        row["wall_s"],
    )


def _finish(report: dict[str, Any], out: Path, t0: float, *, plot: bool) -> None:
    report["ratios"] = compute_ratios(report["rows"])
    timing = report.get("timing", {}).get("summary")
    report["goals"] = check_goals(report["rows"], report["ratios"], timing)
    report["total_wall_s"] = time.perf_counter() - t0
    write_text(out / "bench.json", json.dumps(report, indent=2))
    write_text(out / "bench.md", format_markdown(report))
    if plot:
        plot_report(report, out / "bench.png")


def run(args: argparse.Namespace) -> int:
    methods = _parse_methods(args.methods)
    threads = args.threads or os.cpu_count() or 1
    configs = bench_configs(
        args.profile, methods, config_path=args.config, overrides=args.overrides, threads=threads
    )
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.rounds is not None and args.rounds < 0:
        raise ConfigError(f"--rounds: 0 (no timing phase) or more, got {args.rounds}")
    if args.timing_only and args.rounds == 0:
        raise ConfigError("--timing-only with --rounds 0 runs nothing; give --rounds N >= 1")
    if args.profile == "paper" and device == "cpu":
        log.warning(
            "bench: the paper profile trains PreAct-ResNet-18 on all 60,000 samples: hours to "
            "days on CPU; it is meant for a GPU (--device cuda)"
        )
    folds = args.folds or PROFILES[args.profile]["folds"]
    if folds < 2:
        raise ConfigError(f"--folds: cleanlab's cross-validation needs at least 2, got {folds}")
    report = run_bench(
        args.profile,
        args.out,
        methods=methods,
        configs=configs,
        device=device,
        threads=threads,
        folds=folds,
        wait_idle=args.wait_idle,
        retries=args.retries,
        rounds=args.rounds,
        quality=not args.timing_only,
    )
    print(format_markdown(report))
    print(f"bench: {args.out / 'bench.json'}, {args.out / 'bench.md'}, {args.out / 'bench.png'}")
    failed = [f"{r['method']} on {r['noise']}" for r in report["rows"] if r.get("error")]
    if failed:
        print(f"bench: {len(failed)} run(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0

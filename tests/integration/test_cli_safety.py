"""Issue 11 end to end, through the ``jumpray`` console script in a subprocess (as a user runs it):
Ctrl-C during training and during scoring (defect 3), resuming by re-running the same command,
mixed image sizes (2), outputs published whole and never merged (4), useless-model warnings (9),
a quiet console with Ray's output in OUT/logs (10), and a worker's data error reported once in
one paragraph instead of retried (8).

The subprocesses join the session's Ray (``RAY_ADDRESS``): one Ray instance on the machine.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from jumpray.data.convert import write_from_folder

pytestmark = pytest.mark.integration

ROOT = Path(__file__).parents[2]
_spec = importlib.util.spec_from_file_location(
    "_data_build", Path(__file__).parents[1] / "unit" / "data" / "_build.py"
)
build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build)

TINY = [
    "--config",
    str(ROOT / "configs" / "smoke.yaml"),
    "train.batch_size=32",
    "snapshots.keep=2",
    "score.num_snapshots=2",
    "tracking.enabled=false",
]


def _env(ray_cluster) -> dict[str, str]:
    env = dict(os.environ)
    env["RAY_ADDRESS"] = ray_cluster.get_runtime_context().gcs_address
    env["PYTHONPATH"] = str(ROOT)
    return env


def _start(args: list[str], env: dict[str, str], logs: Path) -> tuple[subprocess.Popen, Path]:
    """Run ``jumpray ARGS`` with stdout/stderr in files (returned: the process, stderr's file)."""
    logs.mkdir(parents=True, exist_ok=True)
    n = len(list(logs.glob("*.err")))
    out, err = logs / f"{n}.out", logs / f"{n}.err"
    cmd = [sys.executable, "-m", "jumpray.cli", *args]
    with open(out, "w") as o, open(err, "w") as e:
        proc = subprocess.Popen(cmd, stdout=o, stderr=e, env=env, cwd=logs)
    return proc, err


def _wait_for(path: Path, text: str, proc: subprocess.Popen, timeout: float = 240) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if text in path.read_text():
            return
        if proc.poll() is not None:
            pytest.fail(f"exited {proc.returncode} before {text!r}:\n{path.read_text()}")
        time.sleep(0.2)
    proc.kill()
    pytest.fail(f"no {text!r} within {timeout} s:\n{path.read_text()}")


def _interrupt(proc: subprocess.Popen, err: Path) -> float:
    """Ctrl-C; returns the seconds until the process exited (it must exit 130)."""
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=60)
    took = time.monotonic() - t0
    text = err.read_text()
    assert proc.returncode == 130, text
    assert "interrupted; re-run the same command to resume" in text and "Traceback" not in text
    return took


def _mixed_shards(folder: Path) -> Path:
    """60 random RGB images of 20..44 pixels a side in 3 class folders, as shards."""
    rng = np.random.default_rng(0)
    src = folder / "photos"
    for c in ("a", "b", "c"):
        (src / c).mkdir(parents=True)
        for i in range(20):
            h, w = rng.integers(20, 45, 2)
            image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
            Image.fromarray(image).save(src / c / f"{i}.png")
    write_from_folder(src, out=folder / "shards")
    return folder / "shards"


def test_ctrl_c_resume_and_a_whole_quiet_run(tmp_path, ray_cluster):
    shards, out = _mixed_shards(tmp_path), tmp_path / "out"
    env, logs = _env(ray_cluster), tmp_path / "console"
    command = ["clean", "--shards", str(shards), "--out", str(out), "--write-shards", *TINY]
    command += ["train.epochs=6"]

    # 1. Ctrl-C during training: exit 130 within seconds, nothing published.
    proc, err = _start(command, env, logs)
    _wait_for(err, "epoch 1/6", proc)
    assert _interrupt(proc, err) < 30
    marker = json.loads((out / "jumpray_run.json").read_text())
    assert marker["state"] == "interrupted" and marker["command"] == "clean"
    for name in ("labels.parquet", "summary.json", "checkpoint", "clean-shards", "report.html"):
        assert not (out / name).exists(), name
    assert not list(out.glob(".staging-*"))

    # 2. The same command resumes the training; Ctrl-C during scoring stops it too.
    proc, err = _start(command, env, logs)
    _wait_for(err, "scoring ", proc)
    assert _interrupt(proc, err) < 30
    assert "resuming the earlier `jumpray clean` run" in err.read_text()
    assert not (out / "summary.json").exists()

    # 3. The same command again finishes (training was complete: straight to scoring).
    proc, err = _start(command, env, logs)
    assert proc.wait(timeout=300) == 0, err.read_text()
    stdout, stderr = (logs / "2.out").read_text(), err.read_text()
    summary = json.loads((out / "summary.json").read_text())
    # Mixed sizes: one size chosen from the data, said in the summary and on the console.
    assert "chosen from the data" in summary["image_size_choice"]
    assert summary["image_size"][0] == summary["image_size"][1] and "chosen from the data" in stdout
    assert summary["num_samples"] == 60 and summary["num_quarantined"] == 0
    # Random images: the model is useless, and it says so.
    assert summary["warnings"] and "CAUTION" in stdout
    assert "Caution" in (out / "report.html").read_text()
    # Outputs published whole: the training resumed, paths point to OUT, no staging left.
    assert summary["checkpoint"] == str(out / "checkpoint") and (out / "clean-shards").is_dir()
    assert not list(out.glob(".staging-*"))
    assert json.loads((out / "jumpray_run.json").read_text())["state"] == "done"
    # The console: jumpray's lines only; Ray's output in the log file named in the summary.
    log_file = Path(summary["log_file"])
    assert log_file.parent == out / "logs" and str(log_file) in stdout
    for noise in ("streaming_executor", "core_worker", "Execution plan", "\x1b["):
        assert noise not in stderr and noise not in stdout
    assert len(stderr.splitlines()) <= 20, stderr
    ray_log = "".join(p.read_text() for p in (out / "logs").glob("*.log"))
    assert "Execution plan" in ray_log and "\x1b[" not in ray_log  # no colour codes in files

    # 4. A finished run is not merged into: refused before anything starts.
    proc, err = _start(command, env, logs)
    assert proc.wait(timeout=120) == 2
    assert "finished `jumpray clean` run; pass --overwrite" in err.read_text()
    # --out on the shards themselves is refused, the shards untouched.
    before = sorted(p.name for p in shards.iterdir())
    proc, err = _start([*command[:3], "--out", str(shards), "--overwrite", *TINY], env, logs)
    assert proc.wait(timeout=120) == 2 and "the source" in err.read_text()
    assert sorted(p.name for p in shards.iterdir()) == before


def test_a_data_error_in_a_worker_is_one_paragraph_and_not_retried(tmp_path, ray_cluster):
    folder = tmp_path / "shards"
    folder.mkdir()
    images = build.tiny_images(40, size=16, seed=4)
    samples = [
        build.sample(f"k{i:02d}", image=build.png_bytes(images[i]), cls=i % 2) for i in range(40)
    ]
    # A PNG whose header reads (so the folder's size probe passes) but whose pixels do not.
    broken = build.png_bytes(images[0])[:60] + b"\x00" * 40
    samples[30] = build.sample("k30", image=broken, cls=0)
    build.write_tar(folder / "a-000000.tar", samples)
    out = tmp_path / "out"
    args = ["train", "--shards", str(folder), "--out", str(out), *TINY]
    args += ["data.materialize=false", "scaling.max_failures=2"]  # decoded in the worker
    proc, err = _start(args, _env(ray_cluster), tmp_path / "console")
    assert proc.wait(timeout=300) == 2
    text = err.read_text()
    assert "sample k30" in text and "image does not decode" in text
    assert "Traceback" not in text and "config problem" not in text
    log = "".join(p.read_text() for p in (out / "logs").glob("*.log"))
    assert log.count("Error in training function") <= 1  # aborted, not retried twice
    assert not (out / "train_summary.json").exists()


def test_sigterm_stops_a_run_within_seconds_leaves_no_ray_of_its_own_and_resumes(
    tmp_path, ray_cluster
):
    """The drill of issue 17: a scheduler (or ``kill``) stops the driver with SIGTERM. The
    command started its own Ray here (no RAY_ADDRESS): every process it started must be gone.
    The same command then resumes in the session's Ray (a restart need not be on the same
    Ray; this saves a Ray start)."""
    import psutil

    shards, out = _mixed_shards(tmp_path), tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("RAY_ADDRESS", None)
    command = ["train", "--shards", str(shards), "--out", str(out), *TINY, "train.epochs=8"]
    command += ["scaling.num_workers=1", "scaling.cpus_per_worker=0.5"]
    proc, err = _start(command, env, tmp_path / "console")
    _wait_for(err, "epoch 1/8", proc)
    started = psutil.Process(proc.pid).children(recursive=True)  # its Ray: gcs, raylet, workers
    assert started
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 143, err.read_text()
    assert time.monotonic() - t0 < 30
    text = err.read_text()
    assert "terminated (SIGTERM); re-run the same command to resume" in text
    assert "Traceback" not in text
    _gone, alive = psutil.wait_procs(started, timeout=30)
    assert not alive, [p.info if hasattr(p, "info") else p.pid for p in alive]
    marker = json.loads((out / "jumpray_run.json").read_text())
    assert marker["state"] == "interrupted"
    assert not (out / "train_summary.json").exists() and not list(out.glob(".staging-*"))
    # The same command resumes and finishes.
    proc, err = _start(command, _env(ray_cluster), tmp_path / "console")
    assert proc.wait(timeout=400) == 0, err.read_text()
    assert "resuming the earlier `jumpray train` run" in err.read_text()
    assert json.loads((out / "jumpray_run.json").read_text())["state"] == "done"

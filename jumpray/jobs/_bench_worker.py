"""One (method, noise) run of ``jumpray bench``, alone in a fresh process.

Run as ``python -m jumpray.jobs._bench_worker '<json spec>'``; it prints exactly one JSON line (the
result row) on stdout, and its progress log on stderr. A fresh process per run is what makes the
CPU peak-memory figure comparable between methods: the peak anonymous resident memory during
training is measured above this process's own idle baseline (imports done, data loaded, torch's
runtime warmed up: :func:`warm_runtime`), so no run inherits another's allocator state. On a GPU the figure is ``torch.cuda.max_memory_allocated`` instead.

The bench's timing phase runs here too. Its speed run (``"phase": "speed"``,
:func:`run_speed_spec`) times every method's training steps in one process, the methods taking
turns; its memory runs (``"phase": "timing"``, :func:`run_timing_spec`) measure one method's peak
memory over a few steps, each in its own fresh process.

Spec keys: ``method`` (``jumpteaching``, ``ce``, ``coteaching``, ``jocor`` or ``cleanlab``),
``noise`` (SPEC, for the row), ``data`` (the ``.npz`` written by the bench), ``config`` (a resolved
:class:`~jumpray.config.RunConfig` as a dict), ``device``, ``folds`` (cleanlab's K).

What "kept" means, for every method alike: a sample is kept when its gradient counted at its visit
in the last epoch (``StepOutput.selected``). Detection of wrong labels is ``is_issue = ~kept``
against ``given_label != clean_label`` (:func:`jumpray.core.detection_metrics`). cleanlab's flags
are its ``find_label_issues`` mask over K-fold out-of-sample predicted probabilities (Northcutt et
al., JAIR 2021); its test accuracy is that of a model retrained on the samples it keeps (the
``CleanLearning`` recipe), and its wall time includes the K trainings, the search and the retrain.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch

from jumpray.config import RunConfig
from jumpray.core import JumpFlags, detection_metrics, selection_metrics
from jumpray.data.augment import Augmenter, build_augmenter
from jumpray.log import get_logger, setup_logging
from jumpray.models import build_model
from jumpray.train.local import ArraySet, LocalResult, iter_batches, run_local
from jumpray.train.loop import evaluate, train_epoch
from jumpray.train.methods import Batch, Method, StepOutput, build_method
from jumpray.train.seeds import VIEW_STREAM, epoch_generator, plain_order_generator

__all__ = [
    "main",
    "run_spec",
    "run_timing_spec",
    "run_speed_spec",
    "TimedMethod",
    "selecting_epoch",
    "load_arrays",
    "PeakMemory",
    "KeptRecorder",
    "anonymous_rss",
    "warm_runtime",
    "OtherCpu",
    "load_average",
    "StepClock",
]

log = get_logger(__name__)

NUM_CLASSES = 10
SELECTING = ("jumpteaching", "coteaching", "jocor")


def load_arrays(path: str | Path) -> tuple[ArraySet, ArraySet, float]:
    """Read the bench's ``.npz`` data file.

    Returns:
        (train with given and clean labels, clean test set, realized noise rate).
    """
    with np.load(path) as z:
        n = len(z["given_label"])
        train = ArraySet(
            image=torch.from_numpy(z["image"]),
            given_label=torch.from_numpy(z["given_label"]),
            idx=torch.arange(n),
            clean_label=torch.from_numpy(z["clean_label"]),
        )
        test = ArraySet(
            image=torch.from_numpy(z["test_image"]),
            given_label=torch.from_numpy(z["test_label"]),
            idx=torch.arange(len(z["test_label"])),
        )
        return train, test, float(z["realized_rate"])


class PeakMemory:
    """Peak memory of the training part of this process, above its idle baseline, in MiB.

    CPU: the process's *anonymous* resident memory (``RssAnon``: heap, tensors, stacks), sampled
    every ``interval_s`` by a thread. File-backed pages are left out on purpose: they are
    mostly libtorch's code, paged in as kernels first run, the same for every method and no
    part of what a method needs. GPU: ``torch.cuda.max_memory_allocated`` after a reset.
    """

    def __init__(self, device: torch.device, *, interval_s: float = 0.01):
        self.device = device
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.baseline = self.peak = 0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline = torch.cuda.memory_allocated(self.device)
            return self
        self.baseline = self.peak = anonymous_rss()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, anonymous_rss())

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
            return
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        self.peak = max(self.peak, anonymous_rss())

    @property
    def above_baseline_mb(self) -> float:
        return max(self.peak - self.baseline, 0) / 2**20


def anonymous_rss() -> int:
    """Resident anonymous memory of this process in bytes (Linux ``RssAnon``; else all RSS)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return psutil.Process().memory_info().rss


def warm_runtime(cfg: RunConfig, data: ArraySet, *, device: torch.device) -> None:
    """Two SGD steps of a throwaway network on two images, before the baseline is taken.

    The first backward of a process sets up torch's CPU runtime (thread pools, oneDNN caches,
    allocator arenas: about 90 MB here, the same for every method). Counting it would be like
    counting the CUDA context on a GPU, so it goes into the idle baseline instead.
    """
    net = build_model(
        backbone=cfg.model.backbone,
        num_classes=NUM_CLASSES,
        num_bits=0,
        in_channels=int(data.image.shape[1]),
    ).to(device)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    x = _augmenter(cfg, data).test(data.image[:2].to(device))
    for _ in range(2):
        opt.zero_grad(set_to_none=True)
        net(x)[0].sum().backward()
        opt.step()
    del net, opt, x
    gc.collect()


class KeptRecorder:
    """Per ``idx``: did the sample's gradient count at its latest visit? (N,) bool.

    Pass :meth:`on_batch` as :func:`~jumpray.train.local.run_local`'s ``on_batch``: every step
    records ``StepOutput.selected``. Every sample is visited every epoch, so after the run the
    table holds the last epoch's decisions.
    """

    def __init__(self, num_samples: int):
        self.kept = torch.zeros(num_samples, dtype=torch.bool)

    def on_batch(self, batch: Batch, out: StepOutput) -> None:
        if not batch.dummy:
            self.kept[batch.idx.cpu()] = out.selected.detach().cpu()


def _augmenter(cfg: RunConfig, data: ArraySet) -> Augmenter:
    """The views :func:`run_local` makes (its defaults), for prediction and test accuracy."""
    return build_augmenter(
        cfg.data, channels=int(data.image.shape[1]), image_hw=tuple(data.image.shape[-2:])
    )


def _throughput(histories: list[list[dict[str, float]]]) -> float:
    """Training samples/s over the epochs after the first of each training (no evaluation)."""
    samples = seconds = 0.0
    for history in histories:
        for h in history[1:] or history:
            samples += h["num_samples"]
            seconds += h["train_time_s"]
    return samples / max(seconds, 1e-9)


@torch.no_grad()
def _predict_probs(
    model: torch.nn.Module, data: ArraySet, *, aug: Augmenter, batch_size: int, device: torch.device
) -> np.ndarray:
    """(N, C) float32 softmax of the classifier head on the test view of ``data``."""
    was_training = model.training
    model.eval()
    out = []
    for image, *_ in iter_batches(data, batch_size=batch_size):
        logits, _ = model(aug.test(image.to(device)).float())
        out.append(torch.softmax(logits.float(), dim=1).cpu())
    model.train(was_training)
    return torch.cat(out).numpy()


def _subset(data: ArraySet, rows: np.ndarray | torch.Tensor) -> ArraySet:
    return data.select(torch.as_tensor(rows, dtype=torch.long))


def _train_selecting(
    cfg: RunConfig, train: ArraySet, *, noise_rate: float, device: torch.device
) -> tuple[LocalResult, torch.Tensor, dict[str, Any]]:
    """One of the four methods; returns the result, the (N,) kept mask and extra row fields."""
    if cfg.train.epochs < 2:
        raise ValueError("the bench needs train.epochs >= 2 (the kept set is read from the last)")
    recorder = KeptRecorder(len(train))
    result = run_local(
        cfg,
        train,
        None,
        num_classes=NUM_CLASSES,
        noise_rate=noise_rate,
        device=device,
        on_batch=recorder.on_batch,
    )
    return result, recorder.kept, {"samples_per_s": _throughput([result.history])}


def _train_cleanlab(
    cfg: RunConfig, train: ArraySet, *, folds: int, device: torch.device
) -> tuple[LocalResult, torch.Tensor, dict[str, Any]]:
    """K-fold out-of-sample probabilities, ``find_label_issues``, then a retrain on the kept."""
    from cleanlab.filter import find_label_issues
    from sklearn.model_selection import StratifiedKFold

    labels = train.given_label.numpy()
    probs = np.zeros((len(train), NUM_CLASSES), dtype=np.float32)
    aug = _augmenter(cfg, train)
    histories = []
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=cfg.seed)
    for k, (fit_rows, held_rows) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
        log.info("cleanlab: fold %d/%d, training on %d samples", k + 1, folds, len(fit_rows))
        fold = run_local(
            cfg, _subset(train, fit_rows), None, num_classes=NUM_CLASSES, device=device
        )
        histories.append(fold.history)
        probs[held_rows] = _predict_probs(
            fold.method.eval_model(),
            _subset(train, held_rows),
            aug=aug,
            batch_size=cfg.train.batch_size,
            device=device,
        )
    # n_jobs=1: the bench owns the cores; cleanlab's default forks one process per core.
    is_issue = find_label_issues(labels, probs, n_jobs=1)
    kept = torch.from_numpy(~is_issue)
    log.info("cleanlab: %d label issues; retraining on the %d kept", is_issue.sum(), kept.sum())
    final = run_local(
        cfg,
        _subset(train, torch.nonzero(kept).flatten()),
        None,
        num_classes=NUM_CLASSES,
        device=device,
    )
    histories.append(final.history)
    extra = {"samples_per_s": _throughput(histories), "folds": folds}
    return final, kept, extra


def run_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one (method, noise) and return its bench row (see the module docstring)."""
    cfg = RunConfig.model_validate(spec["config"])
    device = torch.device(spec.get("device") or "cpu")
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    train, test, noise_rate = load_arrays(spec["data"])
    method = spec["method"]
    if method == "cleanlab":
        # Imported before the baseline is taken: library imports are not training memory.
        import cleanlab.filter  # noqa: F401
        import sklearn.model_selection  # noqa: F401
    warm_runtime(cfg, train, device=device)
    load_before = load_average()
    others = OtherCpu()
    with PeakMemory(device) as mem:
        t0 = time.perf_counter()
        if method == "cleanlab":
            result, kept, extra = _train_cleanlab(
                cfg, train, folds=int(spec.get("folds", 3)), device=device
            )
        else:
            result, kept, extra = _train_selecting(cfg, train, noise_rate=noise_rate, device=device)
        wall_s = time.perf_counter() - t0
    aug = _augmenter(cfg, train)
    ev = evaluate(
        result.method.eval_model(),
        iter_batches(test, batch_size=cfg.train.eval_batch_size),
        device=device,
        test_view=aug.test,
    )
    row = {
        "method": method,
        "noise": spec["noise"],
        "test_accuracy": ev["accuracy"],
        **_detection_fields(method, kept, train),
        "samples_per_s": extra.pop("samples_per_s"),
        "peak_memory_mb": mem.above_baseline_mb,
        "wall_s": wall_s,
        "realized_noise_rate": noise_rate,
        "num_train": len(train),
        "num_test": len(test),
        "epochs": cfg.train.epochs,
        "torch_threads": torch.get_num_threads(),
        "baseline_memory_mb": mem.baseline / 2**20,
        # The machine's 1-minute load average around the run: timings taken while other work
        # ran are slower, and the reader should be able to see that.
        "load_average": [load_before, load_average()],
        "other_cpu_cores": others.cores(),
        **extra,
    }
    return row


def selecting_epoch(cfg: RunConfig) -> int:
    """The first epoch in which every method selects at its full rate (the timing phase's).

    Jump-teaching's warm-up ends at ``jump.warmup_epochs``; Co-teaching/JoCoR's forget rate
    reaches its full value at ``method.num_gradual``.
    """
    return max(cfg.jump.warmup_epochs, cfg.method.num_gradual)


class TimedMethod:
    """One method set up for the timing phase: built, gates open, in its selecting epoch.

    Its batches are drawn from the data by the seed (the same batches for every method) and its
    steps run through the training loop's own :func:`~jumpray.train.loop.train_epoch` (views,
    transfer, step). :meth:`steps` may be called again and again: each call goes on where the
    last one stopped.
    """

    def __init__(self, cfg: RunConfig, train: ArraySet, *, noise_rate: float, device: torch.device):
        self.device = device
        self.epoch = selecting_epoch(cfg)
        self.method = build_method(
            cfg,
            num_classes=NUM_CLASSES,
            num_samples=len(train),
            in_channels=int(train.image.shape[1]),
            device=device,
            noise_rate=noise_rate,
        )
        _open_gates(self.method, cfg)
        self.method.begin_epoch(self.epoch)
        self._aug = _augmenter(cfg, train)
        self._views = epoch_generator(cfg.seed, epoch=self.epoch, stream=VIEW_STREAM)
        self._batches = _endless_batches(train, batch_size=cfg.train.batch_size, seed=cfg.seed)

    def steps(self, num_steps: int, clock: StepClock | None = None) -> dict[str, float]:
        """Run ``num_steps`` training steps; ``clock`` times each. Returns their counts."""
        counts = train_epoch(
            self.method,
            self._batches,
            epoch=self.epoch,
            device=self.device,
            views=lambda x: self._aug.train(x, self._views),
            max_batches=num_steps,
            on_batch=clock.on_batch if clock else None,
        )
        _synchronize(self.device)
        return counts


def run_timing_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The memory run of one method: its peak memory over a few steps, alone in this process.

    The steps run in the selecting phase (:func:`selecting_epoch`; :class:`TimedMethod`).
    Jump-teaching's gates start open (every sample as if flagged clean at its previous visit), so
    its steps do the work of a real selecting step and none is skipped for want of a flag. Peak
    memory is measured as in :func:`run_spec`, over the network's build, the discarded and the
    timed steps. Speed is read from :func:`run_speed_spec` instead: a process's own speed moves
    by a fifth from one fresh process to the next on a quiet machine (the CPU time per step moves
    with it), which no ratio between two processes can cancel.

    Spec keys: ``phase`` (``timing``), ``method`` (not ``cleanlab``: it trains with CE's step),
    ``round``, ``data``, ``config``, ``device``, ``steps``, ``warmup_steps``.

    Returns:
        The memory row: ``peak_memory_mb``, ``baseline_memory_mb``, ``selected_fraction``, this
        process's own ``samples_per_s`` (kept as ``alone_samples_per_s`` by the bench), the load
        and the layout actually used (``amp``, ``channels_last``).
    """
    cfg = RunConfig.model_validate(spec["config"])
    device = torch.device(spec.get("device") or "cpu")
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    train, _, noise_rate = load_arrays(spec["data"])
    steps, warmup_steps = int(spec["steps"]), int(spec["warmup_steps"])
    warm_runtime(cfg, train, device=device)
    load_before = load_average()
    others = OtherCpu()
    with PeakMemory(device) as mem:
        timed = TimedMethod(cfg, train, noise_rate=noise_rate, device=device)
        timed.steps(warmup_steps)
        clock = StepClock(device)
        counts = timed.steps(steps, clock)
    return {
        "phase": "timing",
        "round": int(spec["round"]),
        "method": spec["method"],
        "steps": steps,
        "warmup_steps": warmup_steps,
        "epoch": timed.epoch,
        "num_samples": int(counts["num_samples"]),
        "samples_per_s": clock.median_samples_per_s(),
        "selected_fraction": counts["num_selected"] / max(counts["num_samples"], 1),
        "peak_memory_mb": mem.above_baseline_mb,
        "baseline_memory_mb": mem.baseline / 2**20,
        "torch_threads": torch.get_num_threads(),
        "amp": str(timed.method.amp_dtype).removeprefix("torch.")
        if timed.method.amp_dtype
        else "off",
        "channels_last": _is_channels_last(timed.method.nets[0]),
        "load_average": [load_before, load_average()],
        "other_cpu_cores": others.cores(),
    }


def run_speed_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The speed run of one round: every method's steps in this one process, taking turns.

    Every method is built here (:class:`TimedMethod`, same data, same batches), runs its
    discarded warm-up steps, then the methods take turns of ``block`` timed steps each until
    each has run ``steps``; the order of a turn rotates so that no method always follows the
    same one. Whatever makes one process faster than another (measured on the 2-core box: a
    fifth from one fresh process to the next, in CPU time per step as much as in wall time) is
    then shared by every method of the round, and so is a burst of other work, which lands in a
    turn or two of each.

    Spec keys: ``phase`` (``speed``), ``round``, ``data``, ``configs`` (method name -> resolved
    config), ``device``, ``steps``, ``warmup_steps``, ``block``.

    Returns:
        ``{"phase", "round", "methods": {method: {"samples_per_s" (median of each timed step's
        samples per second), "mean_samples_per_s", "samples_per_cpu_s", "step_ms",
        "num_samples"}}, "load_average", "other_cpu_cores", "torch_threads"}``.
    """
    configs = {name: RunConfig.model_validate(c) for name, c in spec["configs"].items()}
    first = next(iter(configs.values()))
    device = torch.device(spec.get("device") or "cpu")
    if first.train.num_threads:
        torch.set_num_threads(first.train.num_threads)
    train, _, noise_rate = load_arrays(spec["data"])
    steps, warmup_steps = int(spec["steps"]), int(spec["warmup_steps"])
    block = max(int(spec["block"]), 1)
    warm_runtime(first, train, device=device)
    timed = {
        name: TimedMethod(cfg, train, noise_rate=noise_rate, device=device)
        for name, cfg in configs.items()
    }
    for t in timed.values():
        t.steps(warmup_steps)
    names = list(timed)
    clocks = {name: StepClock(device) for name in names}
    done = dict.fromkeys(names, 0)
    samples = dict.fromkeys(names, 0)
    wall = dict.fromkeys(names, 0.0)
    cpu = dict.fromkeys(names, 0.0)
    load_before = load_average()
    others = OtherCpu()
    turn = 0
    while any(done[name] < steps for name in names):
        k = turn % len(names)
        for name in names[k:] + names[:k]:
            n = min(block, steps - done[name])
            if n <= 0:
                continue
            clocks[name].restart()
            wall0, cpu0 = time.perf_counter(), time.process_time()
            counts = timed[name].steps(n, clocks[name])
            wall[name] += time.perf_counter() - wall0
            cpu[name] += time.process_time() - cpu0
            samples[name] += int(counts["num_samples"])
            done[name] += n
        turn += 1
    return {
        "phase": "speed",
        "round": int(spec["round"]),
        "steps": steps,
        "block": block,
        "methods": {
            name: {
                "samples_per_s": clocks[name].median_samples_per_s(),
                "mean_samples_per_s": samples[name] / max(wall[name], 1e-9),
                "samples_per_cpu_s": samples[name] / max(cpu[name], 1e-9),
                "step_ms": 1000 * wall[name] / max(steps, 1),
                "num_samples": samples[name],
            }
            for name in names
        },
        "torch_threads": torch.get_num_threads(),
        "load_average": [load_before, load_average()],
        "other_cpu_cores": others.cores(),
    }


class StepClock:
    """Wall time of each training step: pass :meth:`on_batch` as ``train_epoch``'s hook.

    The hook runs after each step's update; the step's loss was read to a float before it, so
    on a GPU the step's kernels are done (synchronized again here to be sure).
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.start = self._last = time.perf_counter()
        self.rates: list[float] = []  # samples/s of each step

    def restart(self) -> None:
        """The next step is timed from now (after another method's turn, say)."""
        self.start = self._last = time.perf_counter()

    def on_batch(self, batch: Batch, out: StepOutput) -> None:
        _synchronize(self.device)
        now = time.perf_counter()
        self.rates.append(len(batch.given_label) / max(now - self._last, 1e-9))
        self._last = now

    def median_samples_per_s(self) -> float:
        return float(np.median(self.rates)) if self.rates else 0.0


def _open_gates(method: Method, cfg: RunConfig) -> None:
    """Jump-teaching: every gate open, as after a visit that flagged every sample clean."""
    flags = getattr(method, "flags", None)
    if isinstance(flags, JumpFlags):
        method.flags = JumpFlags(flags.num_samples, cfg.jump.interval, initial=True)


def _endless_batches(data: ArraySet, *, batch_size: int, seed: int):
    """Shuffled passes over ``data``, one after another, for as many steps as asked."""
    order = plain_order_generator(seed)
    while True:
        yield from iter_batches(data, batch_size=batch_size, generator=order)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _is_channels_last(net: torch.nn.Module) -> bool:
    """Some 4-D weight is laid out channels-last and not contiguous (the GPU path's layout).

    A weight with one input channel or a 1x1 kernel is contiguous in both layouts, so only the
    weights where the layouts differ tell.
    """
    return any(
        p.dim() == 4
        and p.is_contiguous(memory_format=torch.channels_last)
        and not p.is_contiguous()
        for p in net.parameters()
    )


class OtherCpu:
    """How many cores other processes kept busy, on average, since this object was made.

    System-wide busy CPU time minus this process's own, over the wall time: 0.0 on an idle
    machine; 1.0 means another program used a whole core the whole time (timings then read low).
    """

    def __init__(self) -> None:
        self._t0 = time.perf_counter()
        self._busy0 = _system_busy_s()
        self._own0 = _own_cpu_s()

    def cores(self) -> float:
        wall = time.perf_counter() - self._t0
        other = (_system_busy_s() - self._busy0) - (_own_cpu_s() - self._own0)
        return round(max(other, 0.0) / max(wall, 1e-9), 2)


def _system_busy_s() -> float:
    t = psutil.cpu_times()._asdict()
    # guest time is already inside user time on Linux; iowait is idle waiting.
    skip = ("idle", "iowait", "guest", "guest_nice")
    return sum(v for k, v in t.items() if k not in skip)


def _own_cpu_s() -> float:
    t = psutil.Process().cpu_times()
    return t.user + t.system


def load_average() -> float | None:
    """The machine's 1-minute load average (None where the platform has none)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:  # not available on this platform
        return None


def _detection_fields(method: str, kept: torch.Tensor, train: ArraySet) -> dict[str, Any]:
    """Detection precision/recall/F1 of ``~kept`` and the clean fraction of the kept samples."""
    assert train.clean_label is not None
    sel = selection_metrics(kept, train.given_label, train.clean_label)
    fields: dict[str, Any] = {
        "selection_precision": sel["precision"],
        "kept_fraction": sel["selected_fraction"],
    }
    if method in SELECTING or method == "cleanlab":
        det = detection_metrics(~kept, train.given_label, train.clean_label)
        return fields | {k: det[k] for k in ("precision", "recall", "f1")}
    # CE keeps every sample: it flags nothing, so detection is undefined, not zero.
    return fields | {"precision": None, "recall": None, "f1": None, "note": "keeps all samples"}


def _exit_with_parent() -> None:
    """Stop when the bench that started this process dies (killed, not just interrupted)."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(3)

    threading.Thread(target=watch, daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    """Entry point: one JSON spec argument in, one JSON row line out."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        sys.stderr.write("usage: python -m jumpray.jobs._bench_worker '<json spec>'\n")
        return 2
    _exit_with_parent()
    setup_logging()
    spec = json.loads(argv[0])
    phase = spec.get("phase")
    if phase == "speed":
        row = run_speed_spec(spec)
    elif phase == "timing":
        row = run_timing_spec(spec)
    else:
        row = run_spec(spec)
    sys.stdout.write(json.dumps(row) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())

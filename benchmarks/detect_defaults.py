"""Explore Jump-teaching's training defaults and decisions for wrong-label detection (issue 12).

Trains with the plain local loop (:func:`jumpray.train.local.run_local`: no Ray, one process) on
a fixed Fashion-MNIST task, scores every training sample with the product scorer
(:class:`jumpray.score.scorer.Scorer`) on the last R epoch snapshots, and caches per-sample
arrays, so that many decisions can be evaluated offline without training again:

- ``given``, ``clean``: (N,) labels; ``snap_logp``: (R, N, C) log-probabilities at T = 1 of the
  last R snapshots (softmax(logp / T) gives any temperature); ``snap_rule``: (R, N) the training
  clean rule under each snapshot;
- ``train_logp``: (E, N, C) float16 log-probabilities at T = 1 of each sample's *training*
  forward in epoch e (the in-training history, recorded by a forward hook: no extra forward);
- ``flags``: (E, N) the committed clean flags after each epoch (Jump-teaching only);
- the model's test accuracy on the 10,000 test images, wall time, settings.

Tasks (``TASKS``): the first 10,000 training images with ``sym:0.2``, ``sym:0.4``,
``pairflip:0.45``, ``asym:0.4`` (the Fashion-MNIST look-alike map) and ``instance:0.4``, noise
seed 0, labels drawn exactly as ``jumpray shards`` draws them (so the Ray benchmark sees the same
labels); and ``confusion``, a structured noise used only for reporting, never for choosing: on
training images 20,000-29,999, each sample flips to a look-alike class with probability
proportional to a plain CE model's probability of that class (CE trained on the clean images
40,000-49,999; look-alike = test-set confusion >= 2 %), scaled to 20 % of the samples, plus 5 %
uniform noise (about 25 % wrong in all).

Subcommands::

    python benchmarks/detect_defaults.py run --task sym:0.4 --epochs 8 selection.temperature=1
    python benchmarks/detect_defaults.py grid --stage screen --part 0/2   # cached runs skipped
    python benchmarks/detect_defaults.py cleanlab --task asym:0.4 --epochs 8 --backbone small_cnn
    python benchmarks/detect_defaults.py eval --out detect-defaults.json

``--cache`` (default ``.cache/detect``) holds one ``.npz`` + ``.json`` per run, named by a hash
of its settings. Every run uses 1 torch thread, so its figures do not depend on the load.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from jumpray.config import RunConfig, load_config  # noqa: E402
from jumpray.core import detection_metrics  # noqa: E402
from jumpray.data.convert import apply_array_noise  # noqa: E402
from jumpray.data.decode import PixelStats  # noqa: E402
from jumpray.data.fashion_mnist import load_fashion_mnist  # noqa: E402

NUM_CLASSES = 10
N_TRAIN = 10_000
NOISES = ("sym:0.2", "sym:0.4", "pairflip:0.45", "asym:0.4", "instance:0.4")
HELD_OUT_TASK = "confusion"
TASKS: dict[str, tuple[int, str]] = {n: (0, n) for n in NOISES} | {HELD_OUT_TASK: (20_000, "")}
CONFUSION_REF = (40_000, 50_000)  # clean images the look-alike reference CE model trains on
CONFUSION_SEED = 20_261_125
KEEP = 3  # R, the snapshots the product scores with

# ---------------------------------------------------------------------------------------------
# Data


def pixel_stats(images: np.ndarray) -> tuple[list[float], list[float]]:
    """Mean and std on the 0..1 scale exactly as the shard writer computes them (every k-th image)."""
    stats = PixelStats(1)
    for i in range(0, len(images), max(1, len(images) // 2000)):
        stats.add(images[i][None])
    mean, std = stats.result()
    assert mean is not None and std is not None
    return mean, std


def noisy_labels(images: np.ndarray, clean: np.ndarray, spec: str, *, seed: int = 0) -> np.ndarray:
    """The given labels ``jumpray shards`` / :func:`jumpray.data.convert.write_arrays` draws."""
    given, _ = apply_array_noise(
        images, clean, spec=spec, num_classes=NUM_CLASSES, seed=seed, asym_map="fashion_mnist"
    )
    return given


def load_task(name: str, cache: Path) -> dict[str, Any]:
    """Images (N, 28, 28) uint8, clean and given labels, test split, normalisation."""
    start, spec = TASKS[name]
    images, labels = load_fashion_mnist("train")
    images, clean = images[start : start + N_TRAIN], labels[start : start + N_TRAIN]
    given = confusion_labels(cache) if name == HELD_OUT_TASK else noisy_labels(images, clean, spec)
    test_images, test_labels = load_fashion_mnist("test")
    mean, std = pixel_stats(images)
    return {
        "images": images,
        "clean": clean.astype(np.int64),
        "given": given.astype(np.int64),
        "test_images": test_images,
        "test_labels": test_labels.astype(np.int64),
        "mean": mean,
        "std": std,
    }


def confusion_labels(cache: Path) -> np.ndarray:
    """The held-out structured noise (module docstring), drawn once and cached."""
    path = cache / "confusion-labels.npz"
    if path.is_file():
        with np.load(path) as z:
            return z["given"]
    images, labels = load_fashion_mnist("train")
    lo, hi = CONFUSION_REF
    ref_cfg = run_config(["method.name=ce"], epochs=6)
    ref = to_arrays(images[lo:hi], labels[lo:hi], labels[lo:hi])
    mean, std = pixel_stats(images[lo:hi])
    result = train_local(ref_cfg, ref, mean=mean, std=std, record=False)
    net = result.method.eval_model()
    test_images, test_labels = load_fashion_mnist("test")
    test_p = predict(net, test_images, mean, std)
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES))
    np.add.at(confusion, (test_labels, test_p.argmax(1)), 1)
    confusion /= confusion.sum(1, keepdims=True)
    lookalike = (confusion >= 0.02) & ~np.eye(NUM_CLASSES, dtype=bool)
    start = TASKS[HELD_OUT_TASK][0]
    clean = labels[start : start + N_TRAIN]
    p = predict(net, images[start : start + N_TRAIN], mean, std).astype(np.float64)
    allowed = lookalike[clean] * p  # (N, C) mass on the look-alike classes of the true class
    mass = allowed.sum(1)
    rng = np.random.default_rng(CONFUSION_SEED)
    # Flip probability s * mass, s set so that 20 % of the samples flip on average.
    lo_s, hi_s = 0.0, 1e3
    for _ in range(60):
        s = 0.5 * (lo_s + hi_s)
        lo_s, hi_s = (s, hi_s) if np.minimum(s * mass, 0.95).mean() < 0.20 else (lo_s, s)
    flip = rng.random(N_TRAIN) < np.minimum(s * mass, 0.95)
    given = clean.copy()
    for i in np.flatnonzero(flip):
        given[i] = rng.choice(NUM_CLASSES, p=allowed[i] / allowed[i].sum())
    # Plus 5 % uniform noise among the samples not flipped yet.
    rest = rng.choice(np.flatnonzero(~flip), size=round(0.05 * N_TRAIN), replace=False)
    given[rest] = (clean[rest] + rng.integers(1, NUM_CLASSES, size=len(rest))) % NUM_CLASSES
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, given=given, confusion=confusion, lookalike=lookalike)
    print(
        f"confusion noise: {float((given != clean).mean()):.4f} wrong; look-alike pairs "
        f"{[(int(a), int(b)) for a, b in zip(*np.nonzero(lookalike), strict=True)]}"
    )
    return given


# ---------------------------------------------------------------------------------------------
# Training and caching


# The schema defaults this study started from (the official code's selection, cnn28): every run
# is these + its overrides, so a cached run keeps its meaning after the schema defaults changed
# to the settings this study chose (configs/official.yaml holds the official ones).
STUDY_BASE = (
    "model.backbone=cnn28",
    "selection.temperature=2",
    "selection.blend=true",
    "selection.class_floor=0",
)
# What the study chose (the schema defaults since issue 12), for the later stages.
CHOSEN = (
    "model.backbone=tiny_cnn",
    "selection.blend=false",
    "selection.class_floor=1.2",
    "selection.temperature=1",
)


def run_config(
    overrides: Iterable[str], *, epochs: int, warmup_frac: float | None = None
) -> RunConfig:
    """:data:`STUDY_BASE` + the overrides + this harness's fixed settings (1 thread, no
    tracking)."""
    items = [
        *STUDY_BASE,
        f"train.epochs={epochs}",
        "tracking.enabled=false",
        "train.num_threads=1",
        *overrides,
    ]
    if warmup_frac is not None:
        items.append(f"jump.warmup_epochs={max(1, round(warmup_frac * epochs))}")
    return load_config(None, items)


def to_arrays(images: np.ndarray, given: np.ndarray, clean: np.ndarray):
    from jumpray.train.local import ArraySet

    n = len(given)
    return ArraySet(
        image=torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1),
        given_label=torch.from_numpy(np.asarray(given, dtype=np.int64)),
        idx=torch.arange(n),
        clean_label=torch.from_numpy(np.asarray(clean, dtype=np.int64)),
    )


class HistoryRecorder:
    """Per epoch: each sample's training-forward log-probabilities (T = 1) and committed flags.

    A forward hook on the network keeps the logits of the step in flight; :meth:`on_batch`
    (run_local's ``on_batch``, called after each step) files them under the batch's ``idx``. No
    extra forward pass.
    """

    def __init__(self, num_samples: int, epochs: int):
        self.logp = np.zeros((epochs, num_samples, NUM_CLASSES), dtype=np.float16)
        self.flags = np.zeros((epochs, num_samples), dtype=bool)
        self._logits: torch.Tensor | None = None
        self._epoch = 0  # the epoch in flight: on_epoch moves it on

    def install(self, method) -> None:
        net = method.nets[0]
        net.register_forward_hook(lambda mod, inp, out: setattr(self, "_logits", out[0]))

    def on_batch(self, batch, out) -> None:
        if not batch.dummy and self._logits is not None:
            lp = torch.log_softmax(self._logits.detach().float(), dim=1)
            self.logp[self._epoch, batch.idx.numpy()] = lp.cpu().numpy().astype(np.float16)

    def on_epoch(self, epoch: int, method) -> None:
        flags = getattr(method, "flags", None)
        if flags is not None:
            self.flags[epoch] = flags.current().numpy()
        self._epoch = epoch + 1


def train_local(cfg: RunConfig, train, *, mean, std, record: bool = True, keep: int = KEEP):
    """run_local with the recorder and the last ``keep`` snapshots; returns LocalResult + extras."""
    import jumpray.train.local as local

    recorder = HistoryRecorder(len(train), cfg.train.epochs) if record else None
    snapshots: list[dict[str, torch.Tensor]] = []
    real_build = local.build_method

    def build(*args, **kwargs):
        method = real_build(*args, **kwargs)
        if recorder is not None:
            recorder.install(method)
        return method

    def on_epoch(epoch: int, metrics: dict, method) -> None:
        if recorder is not None:
            recorder.on_epoch(epoch, method)
        net = method.eval_model()
        snapshots.append({k: v.detach().clone() for k, v in net.state_dict().items()})
        del snapshots[:-keep]

    local.build_method = build
    try:
        result = local.run_local(
            cfg,
            train,
            None,
            num_classes=NUM_CLASSES,
            mean=mean,
            std=std,
            on_epoch=on_epoch,
            on_batch=recorder.on_batch if recorder is not None else None,
        )
    finally:
        local.build_method = real_build
    result.snapshots = snapshots  # type: ignore[attr-defined]
    result.recorder = recorder  # type: ignore[attr-defined]
    return result


@torch.no_grad()
def predict(net, images: np.ndarray, mean, std, *, batch: int = 1000) -> np.ndarray:
    """(N, C) softmax at T = 1 of ``net`` on the test view of uint8 (N, 28, 28) images."""
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    net.eval()
    out = []
    for i in range(0, len(images), batch):
        x = torch.from_numpy(images[i : i + batch]).unsqueeze(1).float() / 255.0
        out.append(torch.softmax(net((x - m) / s)[0].float(), dim=1))
    return torch.cat(out).numpy()


def _score_snapshots(cfg: RunConfig, snapshots, task: dict[str, Any]) -> dict[str, np.ndarray]:
    """The product scorer (T = 1) on every training sample: (R, N, C) log-probs, (R, N) rule."""
    from jumpray.score.scorer import Scorer, ScorerSpec

    method_bits = cfg.model.semantic_dim if cfg.method.name == "jumpteaching" else 0
    spec = ScorerSpec(
        model_args={
            "backbone": cfg.model.backbone,
            "num_classes": NUM_CLASSES,
            "num_bits": method_bits,
            "in_channels": 1,
            "semantic_hidden": cfg.model.semantic_hidden,
            "dropout": cfg.model.dropout,
        },
        image_size=28,
        channels=1,
        mean=tuple(task["mean"]),
        std=tuple(task["std"]),
        temperature=1.0,
        rule=cfg.selection.rule,
        tau=cfg.selection.tau,
        max_mean_bit_loss=cfg.selection.max_mean_bit_loss,
        code_clamp=cfg.selection.code_clamp,
    )
    scorer = Scorer(snapshots, spec, device="cpu")
    logp, rule = [], []
    images, given = task["images"], task["given"]
    for i in range(0, len(given), 1000):
        s = scorer.score_snapshots(images[i : i + 1000, None], given[i : i + 1000])
        logp.append(np.log(np.clip(s.probs, 1e-30, None)))
        rule.append(s.per_snapshot["clean"] > 0.5)
    return {"snap_logp": np.concatenate(logp, 1), "snap_rule": np.concatenate(rule, 1)}


def run_key(task: str, method: str, epochs: int, overrides: Iterable[str]) -> str:
    text = json.dumps([task, method, epochs, sorted(overrides)])
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def cache_path(cache: Path, task: str, key: str) -> Path:
    return cache / task.replace(":", "_") / key


def train_and_cache(
    task_name: str, overrides: list[str], *, epochs: int, cache: Path, method: str = "jumpteaching"
) -> Path:
    """One training run (cached): writes ``<key>.npz`` and ``<key>.json``; returns the stem."""
    overrides = [*overrides, f"method.name={method}"]
    stem = cache_path(cache, task_name, run_key(task_name, method, epochs, overrides))
    if stem.with_suffix(".json").is_file():
        return stem
    torch.set_num_threads(1)
    cfg = run_config(overrides, epochs=epochs)
    task = load_task(task_name, cache)
    train = to_arrays(task["images"], task["given"], task["clean"])
    t0 = time.perf_counter()
    result = train_local(cfg, train, mean=task["mean"], std=task["std"])
    train_s = time.perf_counter() - t0
    net = result.method.eval_model()
    test_p = predict(net, task["test_images"], task["mean"], task["std"])
    test_acc = float((test_p.argmax(1) == task["test_labels"]).mean())
    t1 = time.perf_counter()
    scores = _score_snapshots(cfg, result.snapshots, task)
    score_s = time.perf_counter() - t1
    rec = result.recorder
    stem.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        stem.with_suffix(".npz"),
        given=task["given"],
        clean=task["clean"],
        train_logp=rec.logp,
        flags=rec.flags,
        **scores,
    )
    meta = {
        "task": task_name,
        "method": method,
        "epochs": epochs,
        "overrides": overrides,
        "temperature": cfg.selection.temperature,
        "warmup_epochs": cfg.jump.warmup_epochs,
        "backbone": cfg.model.backbone,
        "test_accuracy": test_acc,
        "train_s": round(train_s, 1),
        "score_s": round(score_s, 1),
        "realized_noise_rate": float((task["given"] != task["clean"]).mean()),
        "load_average": os.getloadavg()[0],
    }
    stem.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    print(f"{task_name} {method} {epochs}ep {overrides}: test {test_acc:.4f}, {train_s:.0f} s")
    return stem


def cleanlab_cv(task_name: str, *, epochs: int, backbone: str, cache: Path, folds: int = 4) -> Path:
    """cleanlab's recipe: K-fold out-of-sample probabilities of a plain CE network, cached.

    No augmentation (``data.augment=none``), as cleanlab's tutorials; the same optimiser, lr and
    epochs as the Jump-teaching runs. Stores ``oos_p`` (N, C) float32.
    """
    from sklearn.model_selection import StratifiedKFold

    overrides = ["method.name=ce", f"model.backbone={backbone}", "data.augment=none"]
    stem = cache_path(
        cache, task_name, "cleanlab-" + run_key(task_name, f"cv{folds}", epochs, overrides)
    )
    if stem.with_suffix(".json").is_file():
        return stem
    torch.set_num_threads(1)
    cfg = run_config(overrides, epochs=epochs)
    task = load_task(task_name, cache)
    given = task["given"]
    oos = np.zeros((len(given), NUM_CLASSES), dtype=np.float32)
    t0 = time.perf_counter()
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=cfg.seed)
    for fit_rows, held_rows in splitter.split(np.zeros(len(given)), given):
        fold = to_arrays(task["images"][fit_rows], given[fit_rows], task["clean"][fit_rows])
        res = train_local(cfg, fold, mean=task["mean"], std=task["std"], record=False, keep=1)
        oos[held_rows] = predict(
            res.method.eval_model(), task["images"][held_rows], task["mean"], task["std"]
        )
    wall = time.perf_counter() - t0
    stem.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(stem.with_suffix(".npz"), given=given, clean=task["clean"], oos_p=oos)
    meta = {
        "task": task_name,
        "method": "cleanlab",
        "epochs": epochs,
        "backbone": backbone,
        "folds": folds,
        "cv_s": round(wall, 1),
        "load_average": os.getloadavg()[0],
    }
    stem.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    print(f"{task_name} cleanlab {backbone} {epochs}ep: {wall:.0f} s")
    return stem


# ---------------------------------------------------------------------------------------------
# Decisions (offline, over the cached arrays)


def softmax_t(logp: np.ndarray, temperature: float) -> np.ndarray:
    z = logp.astype(np.float64) / temperature
    z -= z.max(-1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(-1, keepdims=True)


def confident_issues(
    given: np.ndarray, probs: np.ndarray, filter_by: str = "prune_by_noise_rate"
) -> np.ndarray:
    """jumpray's confident-learning decision (:mod:`jumpray.score.confident`) on (N, C) probs."""
    from jumpray.score.confident import find_label_issues

    return find_label_issues(given, probs, filter_by=filter_by)


def cleanlab_issues(given: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """cleanlab's own ``find_label_issues`` with its defaults (the reference detector)."""
    from cleanlab.filter import find_label_issues

    return find_label_issues(given, probs, n_jobs=1)


def decisions(z: dict[str, np.ndarray], meta: dict[str, Any]) -> dict[str, np.ndarray]:
    """Every decision this study compares: name -> (N,) bool is_label_issue.

    ``thr``: the old default (mean p(given) over the R snapshots < 0.1); ``cl_*``: confident
    learning (prune by noise rate) on ``snap`` = the mean of the R snapshots' probabilities,
    ``hist`` = the mean of the training forward's probabilities from the first selection epoch
    on (``hist0``: from epoch 0), ``both`` = the average of snap and hist (``score.source``);
    ``pbc_snap``: prune by class; ``flag_frac``: clean flag in under half the selection epochs.
    All at the training temperature T, as the product computes them.
    """
    given = z["given"]
    # CE trains plain cross-entropy: its probabilities are at T = 1 whatever selection.temperature
    t = meta["temperature"] if meta["method"] == "jumpteaching" else 1.0
    rows = np.arange(len(given))
    snap = softmax_t(z["snap_logp"], t).mean(0)  # (N, C) at the training temperature
    out = {
        "thr": snap[rows, given] < 0.1,
        "cl_snap": confident_issues(given, snap),
        "pbc_snap": confident_issues(given, snap, "prune_by_class"),
    }
    warm = int(meta.get("warmup_epochs", 0)) if meta["method"] == "jumpteaching" else 0
    hist_all = z["train_logp"]
    if hist_all.shape[0] > warm and np.any(hist_all[-1]):
        hist = softmax_t(hist_all[warm:], t).mean(0)
        out["cl_hist"] = confident_issues(given, hist)
        hist0 = softmax_t(hist_all, t).mean(0)
        out["cl_hist0"] = confident_issues(given, hist0)
        out["cl_both"] = confident_issues(given, 0.5 * (hist + snap))
        out["cl_both0"] = confident_issues(given, 0.5 * (hist0 + snap))
        out["pbc_hist"] = confident_issues(given, hist, "prune_by_class")
        if z["flags"][warm:].any():
            out["flag_frac"] = z["flags"][warm:].mean(0) < 0.5
    return out


def detection(issue: np.ndarray, given: np.ndarray, clean: np.ndarray) -> dict[str, float]:
    m = detection_metrics(issue, given, clean)
    return {k: round(float(m[k]), 4) for k in ("precision", "recall", "f1")}


def evaluate_cache(cache: Path) -> list[dict[str, Any]]:
    """One row per (cached run, decision)."""
    rows = []
    for meta_path in sorted(cache.glob("*/*.json")):
        meta = json.loads(meta_path.read_text())
        with np.load(meta_path.with_suffix(".npz")) as npz:
            z = {k: npz[k] for k in npz.files}
        base = {k: meta[k] for k in ("task", "method", "epochs") if k in meta}
        base["settings"] = settings_name(meta)
        if meta["method"] == "cleanlab":
            for name, issue in (
                ("cleanlab", cleanlab_issues(z["given"], z["oos_p"])),
                ("cl_oos", confident_issues(z["given"], z["oos_p"])),
            ):
                rows.append(
                    base
                    | {"decision": name, "test_accuracy": None, "wall_s": meta["cv_s"]}
                    | detection(issue, z["given"], z["clean"])
                )
            continue
        for name, issue in decisions(z, meta).items():
            rows.append(
                base
                | {
                    "decision": name,
                    "test_accuracy": meta["test_accuracy"],
                    "wall_s": meta["train_s"] + meta["score_s"],
                }
                | detection(issue, z["given"], z["clean"])
            )
    return rows


def settings_name(meta: dict[str, Any]) -> str:
    if meta["method"] == "cleanlab":
        return f"cleanlab/{meta['backbone']}"
    keep = [o for o in meta["overrides"] if not o.startswith("method.name=")]
    short = [o.replace("selection.", "").replace("jump.", "").replace("model.", "") for o in keep]
    name = ",".join(sorted(short)) or "schema-defaults"
    return name if meta["method"] == "jumpteaching" else f"{meta['method']}:{name}"


# ---------------------------------------------------------------------------------------------
# Grids (screen on one budget, confirm the short list on two)

AXES = {
    "temperature": ["selection.temperature=1", "selection.temperature=2"],
    "blend": ["selection.blend=true", "selection.blend=false"],
    "floor": ["selection.class_floor=0", "selection.class_floor=1.0", "selection.class_floor=1.2"],
}


def grid(stage: str, base: list[str] = ()) -> list[tuple[str, str, list[str], int]]:
    """(method, task, overrides, epochs) of a named stage; ``cleanlab``'s overrides name its
    backbone. Cheap runs first, so the first figures come early. ``base``: the settings the
    later stages vary around (the screen's short list)."""
    jobs: list[tuple[str, str, list[str], int]] = []
    profile = ["selection.class_floor=1.2", "selection.temperature=1", "selection.blend=false"]
    if stage == "backbone":
        # today's two selection settings (schema defaults, Fashion-MNIST profile) x backbone
        for backbone in ("tiny_cnn", "small_cnn", "cnn28"):
            bb = f"model.backbone={backbone}"
            for noise in NOISES:
                jobs.append(("ce", noise, [bb], 8))
                jobs.append(("jumpteaching", noise, [bb], 8))
                jobs.append(("jumpteaching", noise, [bb, *profile], 8))
            if backbone == "small_cnn":
                jobs += [("cleanlab", task, ["small_cnn"], 8) for task in TASKS]
    elif stage == "screen":
        # selection settings on the cheapest backbone, one budget (8 epochs); the most telling
        # first (the schema defaults T=2 / blend / floor 0 ran in the backbone stage)
        bb = "model.backbone=tiny_cnn"
        combos = [(t, b, f) for t in ("1",) for b in ("false", "true") for f in ("0", "1.0", "1.2")]
        combos += [("1", "false", "1.5"), ("1", "false", "2.0")]
        # T = 2 at the best floor and without one (the machine was too loaded for the rest)
        combos += [("2", "false", "1.2"), ("2", "false", "0")]
        for temp, blend, floor in combos:
            sel = [
                f"selection.temperature={temp}",
                f"selection.blend={blend}",
                f"selection.class_floor={floor}",
            ]
            jobs += [("jumpteaching", noise, [bb, *sel], 8) for noise in NOISES]
    elif stage == "schedule":
        # warm-up length and jump interval around ``base``, at both budgets
        for epochs, warmups in ((8, ("1", "2", "3")), (16, ("2", "4", "6"))):
            for warm in warmups:
                jobs += [
                    ("jumpteaching", n, [*base, f"jump.warmup_epochs={warm}"], epochs)
                    for n in NOISES
                ]
            jobs += [
                (
                    "jumpteaching",
                    n,
                    [*base, "jump.interval=2", f"jump.warmup_epochs={warmups[1]}"],
                    epochs,
                )
                for n in NOISES
            ]
    elif stage == "budget16":
        # the second budget: the chosen settings, the study's starting point and plain CE
        bb = "model.backbone=tiny_cnn"
        for n in NOISES:
            jobs.append(("jumpteaching", n, list(CHOSEN), 16))
            jobs.append(("jumpteaching", n, [bb], 16))
            jobs.append(("ce", n, [bb], 16))
    elif stage == "cleanlab16":
        jobs += [("cleanlab", task, ["small_cnn"], 16) for task in NOISES]
    else:
        raise SystemExit(f"unknown stage {stage!r}")
    return jobs


def run_job(job: tuple[str, str, list[str], int], cache: Path) -> None:
    method, task, overrides, epochs = job
    if method == "cleanlab":
        cleanlab_cv(task, epochs=epochs, backbone=overrides[0], cache=cache)
    else:
        train_and_cache(task, overrides, epochs=epochs, cache=cache, method=method)


# ---------------------------------------------------------------------------------------------
# CLI


def _split(jobs: list, part: str) -> list:
    i, n = (int(x) for x in part.split("/"))
    return jobs[i::n]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=REPO / ".cache" / "detect")
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_run = sub.add_parser("run", help="one cached training run")
    p_run.add_argument("--task", required=True, choices=sorted(TASKS))
    p_run.add_argument("--epochs", type=int, default=8)
    p_run.add_argument("--method", default="jumpteaching")
    p_run.add_argument("overrides", nargs="*")
    p_grid = sub.add_parser("grid", help="every run of a stage (cached ones are skipped)")
    p_grid.add_argument("--stage", required=True)
    p_grid.add_argument("--part", default="0/1", help="I/N: this process runs jobs I, I+N, ...")
    p_grid.add_argument("--base", default="", help="comma-separated overrides later stages vary")
    p_cl = sub.add_parser("cleanlab", help="cleanlab's K-fold CV on a task (cached)")
    p_cl.add_argument("--task", nargs="+", default=list(TASKS))
    p_cl.add_argument("--epochs", type=int, default=8)
    p_cl.add_argument("--backbone", default="small_cnn")
    p_cl.add_argument("--folds", type=int, default=4)
    p_cl.add_argument("--part", default="0/1")
    p_eval = sub.add_parser("eval", help="evaluate every cached run's decisions")
    p_eval.add_argument("--out", type=Path, default=None)
    p_eval.add_argument("--decision", nargs="+", default=["thr", "cl_snap", "cl_hist", "cl_both"])
    p_eval.add_argument("--epochs", type=int, default=None)
    p_eval.add_argument("--choose", action="store_true", help="leave-one-noise-out choice")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from jumpray.log import setup_logging

    setup_logging("WARNING")
    if args.cmd == "run":
        train_and_cache(
            args.task,
            list(args.overrides),
            epochs=args.epochs,
            cache=args.cache,
            method=args.method,
        )
    elif args.cmd == "grid":
        base = [b for b in args.base.split(",") if b]
        for job in _split(grid(args.stage, base), args.part):
            run_job(job, args.cache)
    elif args.cmd == "cleanlab":
        for task in _split(list(args.task), args.part):
            cleanlab_cv(
                task, epochs=args.epochs, backbone=args.backbone, cache=args.cache, folds=args.folds
            )
    elif args.cmd == "eval":
        rows = evaluate_cache(args.cache)
        if args.out:
            args.out.write_text(json.dumps(rows, indent=1))
        if args.choose:
            result = choose(rows, epochs=args.epochs or 8)
            print_choice(result)
            if args.out:
                args.out.with_suffix(".choice.json").write_text(json.dumps(result, indent=1))
            return 0
        for decision in args.decision:
            print_rows(rows, decision=decision, epochs=args.epochs)
            print()
    return 0


def backbone_of(settings: str) -> str:
    for part in settings.split(":")[-1].split(","):
        if part.startswith("backbone="):
            return part.split("=", 1)[1]
    return "cnn28"


def choose(
    rows: list[dict[str, Any]], *, epochs: int, decisions_: Iterable[str] | None = None
) -> dict[str, Any]:
    """Leave-one-noise-out choice of (training settings, decision).

    Candidates: every Jump-teaching settings with a cached run on all of :data:`NOISES` at
    ``epochs``, crossed with every decision. Objective on a noise: F1 + test accuracy. For each
    held-out noise the candidate with the best mean objective over the other four is chosen and
    its figures on the held-out noise are reported next to the best any candidate reached there
    (in hindsight) and the candidate chosen on all five (in-sample). cleanlab's F1 and plain CE's
    test accuracy (same backbone and epochs) are the goals' yardsticks.
    """
    table: dict[tuple[str, str], dict[str, tuple[float, float]]] = {}
    ref_f1: dict[str, float] = {}
    ce_acc: dict[tuple[str, str], float] = {}
    for r in rows:
        if r["epochs"] != epochs:
            continue
        if r["decision"] == "cleanlab":
            ref_f1[r["task"]] = r["f1"]
        elif r["settings"].startswith("ce:"):
            ce_acc[(backbone_of(r["settings"]), r["task"])] = r["test_accuracy"]
        elif r["settings"].startswith("cleanlab/"):
            continue
        elif decisions_ is None or r["decision"] in decisions_:
            table.setdefault((r["settings"], r["decision"]), {})[r["task"]] = (
                r["f1"],
                r["test_accuracy"],
            )
    full = {k: v for k, v in table.items() if all(n in v for n in NOISES)}

    def score(cand, noises):
        return float(np.mean([sum(full[cand][n]) for n in noises]))

    best_all = max(full, key=lambda c: score(c, NOISES))
    folds = []
    for held in NOISES:
        others = [n for n in NOISES if n != held]
        pick = max(full, key=lambda c: score(c, others))
        oracle = max(full, key=lambda c: sum(full[c][held]))
        folds.append(
            {
                "held_out": held,
                "chosen": list(pick),
                "held_out_f1": full[pick][held][0],
                "held_out_acc": full[pick][held][1],
                "in_sample_f1": full[best_all][held][0],
                "in_sample_acc": full[best_all][held][1],
                "oracle": list(oracle),
                "oracle_f1": full[oracle][held][0],
                "oracle_acc": full[oracle][held][1],
                "cleanlab_f1": ref_f1.get(held),
                "ce_acc": ce_acc.get((backbone_of(pick[0]), held)),
            }
        )
    ranking = sorted(full, key=lambda c: -score(c, NOISES))
    return {
        "epochs": epochs,
        "chosen_on_all": list(best_all),
        "folds": folds,
        "top": [
            {
                "settings": c[0],
                "decision": c[1],
                "objective": round(score(c, NOISES), 4),
                "f1": {n: full[c][n][0] for n in NOISES},
                "acc": {n: full[c][n][1] for n in NOISES},
            }
            for c in ranking[:15]
        ],
    }


def print_choice(result: dict[str, Any]) -> None:
    print(
        f"leave-one-noise-out at {result['epochs']} epochs; chosen on all five: "
        f"{result['chosen_on_all']}"
    )
    print(
        f"{'held out':<14}{'chosen on the other four':<72}{'F1':>7}{'acc':>8}"
        f"{'in-s F1':>9}{'in-s acc':>9}{'best F1':>8}{'best acc':>9}{'cl F1':>7}{'CE acc':>8}"
    )
    for f in result["folds"]:
        ce = f["ce_acc"]
        print(
            f"{f['held_out']:<14}{' / '.join(f['chosen'])[:71]:<72}{f['held_out_f1']:>7.3f}"
            f"{f['held_out_acc']:>8.4f}{f['in_sample_f1']:>9.3f}{f['in_sample_acc']:>9.4f}"
            f"{f['oracle_f1']:>8.3f}{f['oracle_acc']:>9.4f}{f['cleanlab_f1'] or float('nan'):>7.3f}"
            f"{ce if ce is not None else float('nan'):>8.4f}"
        )
    print("top candidates (mean F1 + acc over the five noises):")
    for t in result["top"]:
        f1 = " ".join(f"{t['f1'][n]:.3f}" for n in NOISES)
        acc = " ".join(f"{t['acc'][n]:.3f}" for n in NOISES)
        print(
            f"  {t['objective']:.4f}  {t['settings'][:60]:<60} {t['decision']:<10} F1 {f1} | acc {acc}"
        )


def print_rows(rows: list[dict[str, Any]], *, decision: str, epochs: int | None) -> None:
    """A pivot: one line per settings, F1 (and test accuracy) per task, means over NOISES."""
    tasks = [t for t in TASKS if any(r["task"] == t for r in rows)]
    cells: dict[tuple[str, int], dict[str, dict[str, Any]]] = {}
    for r in rows:
        if epochs is not None and r["epochs"] != epochs:
            continue
        wanted = decision if r["decision"] != "cleanlab" else "cleanlab"
        if r["decision"] != wanted and not r["settings"].startswith("ce:"):
            continue
        if r["settings"].startswith("ce:") and r["decision"] != decision:
            continue
        cells.setdefault((r["settings"], r["epochs"]), {})[r["task"]] = r
    head = "".join(f"{t[:11]:>12}" for t in tasks)
    print(f"decision {decision}: F1 per task, then test accuracy per task")
    print(f"{'settings':<58}{'ep':>3}{head}{'meanF1':>8} |{head}{'meanAcc':>8}")
    for (name, ep), by_task in sorted(cells.items()):
        f1 = [by_task[t]["f1"] if t in by_task else None for t in tasks]
        acc = [by_task[t]["test_accuracy"] if t in by_task else None for t in tasks]
        main_f1 = [v for t, v in zip(tasks, f1, strict=True) if v is not None and t in NOISES]
        main_acc = [v for t, v in zip(tasks, acc, strict=True) if v is not None and t in NOISES]

        def fmt(v):
            return f"{v:>12.3f}" if v is not None else f"{'-':>12}"

        mf = f"{np.mean(main_f1):>8.3f}" if len(main_f1) == len(NOISES) else f"{'-':>8}"
        ma = f"{np.mean(main_acc):>8.4f}" if len(main_acc) == len(NOISES) else f"{'-':>8}"
        print(f"{name[:58]:<58}{ep:>3}{''.join(map(fmt, f1))}{mf} |{''.join(map(fmt, acc))}{ma}")


if __name__ == "__main__":
    sys.exit(main())

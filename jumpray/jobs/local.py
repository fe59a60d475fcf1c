"""``jumpray local``: a single-process run on Fashion-MNIST with injected label noise (no Ray).

Example::

    jumpray local --limit 10000 --noise sym:0.4 train.epochs=8 method.name=coteaching
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from jumpray.config import FASHION_MNIST_CONFIG, RunConfig, load_config, load_yaml
from jumpray.core import make_noisy_labels, parse_noise_spec
from jumpray.data.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist
from jumpray.log import get_logger
from jumpray.train.local import ArraySet, LocalResult, run_local, summarize_history

__all__ = [
    "NoisyArrays",
    "noisy_fashion_mnist",
    "add_arguments",
    "run",
    "run_config",
    "LOCAL_DEFAULTS",
]

log = get_logger(__name__)

# The schema defaults (chosen by measurement across noise types, README "Detection") at a budget
# that fits a few CPU minutes on Fashion-MNIST. Written once, in configs/fashion_mnist.yaml (which
# ships with the package); `jumpray local`, the demo and the bench start from it.
LOCAL_DEFAULTS: dict[str, Any] = load_yaml(FASHION_MNIST_CONFIG)


@dataclass
class NoisyArrays:
    """Fashion-MNIST with injected noise, as in-memory tensors."""

    train: ArraySet
    test: ArraySet
    realized_rate: float
    noise: str
    class_names: list[str]


def noisy_fashion_mnist(
    *, limit: int | None, noise: str, seed: int, test_limit: int | None = None
) -> NoisyArrays:
    """Load Fashion-MNIST, keep the first ``limit`` training samples, inject ``noise`` with ``seed``.

    Returns:
        Train images (N, 1, 28, 28) uint8 with noisy ``given_label`` and the true ``clean_label``;
        the clean test split.
    """
    images, clean = load_fashion_mnist("train", limit=limit)
    kind, rate = parse_noise_spec(noise)
    features = None
    if kind == "instance":
        features = (images.reshape(len(images), -1).astype(np.float32) / 255.0 - 0.5) / 0.5
    result = make_noisy_labels(
        clean,
        num_classes=10,
        kind=kind,
        rate=rate,
        rng=np.random.default_rng(seed),
        features=features,
        asym_map="fashion_mnist",
    )
    test_images, test_labels = load_fashion_mnist("test", limit=test_limit)
    n = len(clean)
    train = ArraySet(
        image=torch.from_numpy(images).unsqueeze(1),
        given_label=torch.from_numpy(result.given_label),
        idx=torch.arange(n),
        clean_label=torch.from_numpy(clean.astype(np.int64)),
    )
    test = ArraySet(
        image=torch.from_numpy(test_images).unsqueeze(1),
        given_label=torch.from_numpy(test_labels.astype(np.int64)),
        idx=torch.arange(len(test_labels)),
    )
    return NoisyArrays(train, test, result.realized_rate, noise, list(FASHION_MNIST_CLASSES))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from jumpray.cli import add_config_arguments

    parser.add_argument(
        "--limit", type=int, default=10000, help="first N training samples (default 10000)"
    )
    parser.add_argument(
        "--test-limit", type=int, default=None, help="first N test samples (default all 10000)"
    )
    parser.add_argument(
        "--noise",
        default="sym:0.4",
        help="noise SPEC: sym:0.4, pairflip:0.45, asym:0.4, instance:0.4, none",
    )
    parser.add_argument("--out", type=Path, default=None, help="write metrics.json here")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    add_config_arguments(parser)


def run_config(cfg: RunConfig, data: NoisyArrays, *, device: str | None = None) -> LocalResult:
    """Run one method on prepared arrays (also used by the benchmark)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    return run_local(
        cfg, data.train, data.test, num_classes=10, noise_rate=data.realized_rate, device=device
    )


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config, args.overrides, base=LOCAL_DEFAULTS)
    if cfg.train.num_threads is None and os.cpu_count():
        torch.set_num_threads(os.cpu_count() or 1)
    data = noisy_fashion_mnist(
        limit=args.limit, noise=args.noise, seed=cfg.seed, test_limit=args.test_limit
    )
    log.info(
        "Fashion-MNIST: %d train samples, noise %s (realized %.3f), %d test samples; method %s",
        len(data.train),
        args.noise,
        data.realized_rate,
        len(data.test),
        cfg.method.name,
    )
    result = run_config(cfg, data, device=args.device)
    summary = summarize_history(result.history) | {
        "method": cfg.method.name,
        "noise": args.noise,
        "realized_noise_rate": data.realized_rate,
        "num_train": len(data.train),
        "wall_s": result.wall_s,
    }
    print(_summary_text(summary))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "metrics.json").write_text(
            json.dumps({"summary": summary, "history": result.history}, indent=2)
        )
        print(f"metrics: {args.out / 'metrics.json'}")
    return 0


def _summary_text(s: dict[str, Any]) -> str:
    lines = [
        f"method {s['method']} on Fashion-MNIST ({s['num_train']} samples, {s['noise']}, realized {s['realized_noise_rate']:.3f})",
        f"  test accuracy        {s.get('test_accuracy', float('nan')):.4f}",
    ]
    if "precision" in s:
        lines.append(
            f"  last-epoch selection precision {s['precision']:.3f}  recall {s['recall']:.3f}  "
            f"(data is {s['data_clean_fraction']:.3f} clean)"
        )
    lines.append(
        f"  {s['mean_epoch_time_s']:.1f} s/epoch, {s['samples_per_s']:.0f} samples/s, wall {s['wall_s']:.0f} s"
    )
    return "\n".join(lines)

"""Sizing figures for docs/operations.md: what a run holds per sample and per snapshot.

Measured, not estimated from code:

- the per-sample training state of Jump-teaching (``JumpFlags`` with interval J, and the
  ``SampleHistory`` the scorer reads), bytes per sample, by allocating it for N samples;
- one snapshot's bytes in the object store (the ``state_dict`` of each registered backbone with
  its two heads) for C classes and K bits;
- the metadata scan's Python memory per sample (``tracemalloc`` peak over ``scan_folder`` of a
  Fashion-MNIST shard folder), the driver-side cost of listing a folder before training.

    python benchmarks/sizing.py --samples 20000 --out sizing.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import tracemalloc
from pathlib import Path

import torch


def _tensor_bytes(obj: object) -> int:
    return sum(v.numel() * v.element_size() for v in vars(obj).values() if torch.is_tensor(v))


def state_bytes_per_sample(n: int, *, interval: int, num_classes: int, top_k: int) -> dict:
    from jumpray.core.flags import JumpFlags
    from jumpray.core.history import SampleHistory

    flags = JumpFlags(n, interval)
    history = SampleHistory(n, num_classes, top_k=top_k)
    return {
        "jump_flags_bytes_per_sample": _tensor_bytes(flags) / n,
        "history_bytes_per_sample": _tensor_bytes(history) / n,
    }


def snapshot_bytes(num_classes: int, num_bits: int) -> dict[str, int]:
    from jumpray.models import build_model
    from jumpray.models.backbones import list_backbones

    sizes = {}
    for name in list_backbones():
        channels = 1 if name in ("cnn28", "tiny_cnn", "small_cnn") else 3
        model = build_model(
            backbone=name, num_classes=num_classes, num_bits=num_bits, in_channels=channels
        )
        sizes[name] = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    return sizes


def scan_bytes_per_sample(samples: int) -> float:
    from jumpray.data.convert import write_fashion_mnist
    from jumpray.data.scan import scan_folder

    with tempfile.TemporaryDirectory(prefix="jumpray-sizing-") as tmp:
        folder = Path(tmp) / "fm"
        write_fashion_mnist(folder, limit=samples, max_samples_per_shard=5000)
        tracemalloc.start()
        scan = scan_folder(folder)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert scan.rows_in == samples
    return peak / samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    result = {
        "state_J2_C14": state_bytes_per_sample(10**6, interval=2, num_classes=14, top_k=10),
        "state_J2_C1000": state_bytes_per_sample(10**6, interval=2, num_classes=1000, top_k=10),
        "snapshot_bytes_C14_K32": snapshot_bytes(14, 32),
        "snapshot_bytes_C1000_K64": snapshot_bytes(1000, 64),
        "scan_bytes_per_sample": round(scan_bytes_per_sample(args.samples), 1),
        "scan_samples": args.samples,
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

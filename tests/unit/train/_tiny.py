"""Tiny synthetic data and configs shared by the train unit tests (no Ray, no files)."""

from __future__ import annotations

from typing import Any

import torch

from jumpray.config import RunConfig, load_config
from jumpray.train.methods import build_method

C, K, N, B = 4, 4, 12, 4


def tiny_config(**sections: dict[str, Any]) -> RunConfig:
    """cnn28 on 1x8x8 images, C=4, K=4, no dropout, constant lr, the official selection (T 2,
    blend, no class floor: the reference semantics these tests pin; the floor has its own
    tests); sections override."""
    base: dict[str, Any] = {
        "model": {"backbone": "cnn28", "semantic_dim": K, "dropout": 0.0},
        "train": {"epochs": 4, "batch_size": B, "scheduler": "none", "lr": 0.1},
        "jump": {"interval": 1, "warmup_epochs": 1},
        "selection": {"temperature": 2.0, "blend": True, "class_floor": 0.0},
    }
    for name, values in sections.items():
        base[name] = base.get(name, {}) | values
    return load_config(None, base)


def tiny_data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, 1, 8, 8) float32 images, given labels, idx 0..N-1, clean labels (3 of 12 wrong)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(N, 1, 8, 8, generator=g)
    clean = torch.arange(N) % C
    given = clean.clone()
    given[[1, 5, 9]] = (given[[1, 5, 9]] + 1) % C
    return images, given, torch.arange(N), clean


def tiny_batches(order: torch.Tensor | None = None, *, seed: int = 0) -> list[tuple]:
    """Batches ``(image, given_label, idx, clean_label)`` of size B in ``order`` (default 0..N-1)."""
    images, given, idx, clean = tiny_data(seed)
    order = torch.arange(N) if order is None else order
    return [
        (images[s], given[s], idx[s], clean[s])
        for s in (order[i : i + B] for i in range(0, len(order), B))
    ]


def tiny_method(cfg: RunConfig, **kwargs: Any):
    return build_method(cfg, num_classes=C, num_samples=N, in_channels=1, **kwargs)


def params(method, net: int = 0) -> list[torch.Tensor]:
    """Copies of one network's trainable parameters (not BN buffers)."""
    return [p.detach().clone() for p in method.nets[net].parameters()]

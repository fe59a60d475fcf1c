"""One epoch body: the plain loop and the worker (without Ray Train) train alike; the worker spec."""

from __future__ import annotations

import dataclasses
import pickle

import numpy as np
import pytest
import torch

from jumpray.checkpoint import load_checkpoint
from jumpray.train.local import ArraySet, run_local
from jumpray.train.rows import DatasetBatches
from jumpray.train.seeds import shuffle_seed
from jumpray.train.spec import FaultInjection, WorkerSpec
from jumpray.train.worker import run_worker

from ._tiny import C, N, tiny_config, tiny_data


def _uint8_rows(seed: int = 0) -> ArraySet:
    _, given, idx, clean = tiny_data(seed)
    g = torch.Generator().manual_seed(seed)
    image = torch.randint(0, 256, (N, 1, 8, 8), generator=g, dtype=torch.uint8)
    return ArraySet(image, given, idx, clean)


class _Blocks:
    """A Ray Dataset stand-in: numpy blocks in an arrival order that is not the idx order."""

    def __init__(self, rows: ArraySet):
        self.rows = rows

    def iter_batches(self, **kwargs):
        order = torch.arange(len(self.rows)).flip(0)
        for part in order.split(5):
            sel = self.rows.select(part)
            cols = {"image": sel.image, "given_label": sel.given_label, "idx": sel.idx}
            if sel.clean_label is not None:
                cols["clean_label"] = sel.clean_label
            yield {k: v.numpy() for k, v in cols.items()}


class _Ctx(DatasetBatches):
    """A one-rank worker context without Ray Train, its rows in memory."""

    rank, world_size, entered_at = 0, 1, 0.0
    device = torch.device("cpu")

    def __init__(self, cfg, datasets: dict[str, ArraySet]):
        super().__init__(cfg, in_memory=True)
        self.datasets = datasets
        self.state = None

    def source(self, name):
        return _Blocks(self.datasets[name]) if name in self.datasets else None

    def prepare_model(self, net):
        return net

    def checkpoint(self):
        return None

    def report(self, metrics, checkpoint_dir):
        if checkpoint_dir:
            self.state = load_checkpoint(checkpoint_dir)


def _spec(cfg, **kwargs) -> WorkerSpec:
    return WorkerSpec(
        config=cfg, num_classes=C, num_samples=N, channels=1, image_hw=(8, 8), **kwargs
    )


def test_the_plain_loop_and_a_worker_draw_and_train_alike():
    # The worker keeps its rows in the order they arrive (shuffle_buffer 0): idx N-1..0; blend
    # views and a test set; the plain loop gets the rows in that order.
    cfg = tiny_config(train={"epochs": 3}, data={"shuffle_buffer": 0})
    train, test = _uint8_rows(0), _uint8_rows(1)
    spec = _spec(cfg, mean=(0.4,), std=(0.3,), has_test=True)
    ctx = _Ctx(cfg, {"train": train, "test": test})
    run_worker(spec, ctx)
    arrived = train.select(torch.arange(N).flip(0))
    plain = run_local(cfg, arrived, test, num_classes=C, mean=[0.4], std=[0.3], shuffle=False)
    worker_flags, plain_flags = ctx.state["method"]["flags"], plain.method.flags.state_dict()
    assert torch.equal(worker_flags["slots"], plain_flags["slots"])
    assert torch.equal(worker_flags["visits"], plain_flags["visits"])
    for w, p in zip(ctx.state["history"], plain.history, strict=True):
        for key in ("loss", "selected_fraction", "test_accuracy", "num_samples", "epoch"):
            assert w[key] == p[key], key
    weights = ctx.state["model"]
    for name, value in plain.method.eval_model().state_dict().items():
        assert torch.equal(weights[name], value), name


def test_the_epoch_order_depends_on_seed_epoch_and_rank_only():
    a = shuffle_seed(3, epoch=1, rank=0)
    assert a == shuffle_seed(3, epoch=1, rank=0) and 0 <= a < 2**32
    assert len({a, shuffle_seed(3, epoch=2), shuffle_seed(3, epoch=1, rank=1)}) == 3


def test_the_worker_spec_is_frozen_and_pickles():
    spec = _spec(tiny_config(), mean=(0.5,), std=(0.5,), fault=FaultInjection(1, "m"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.num_classes = 3  # type: ignore[misc]
    back = pickle.loads(pickle.dumps(spec))
    assert back == spec and back.config.model_dump() == spec.config.model_dump()
    assert np.isclose(back.mean[0], 0.5) and back.fault == FaultInjection(1, "m", rank=0, batch=1)

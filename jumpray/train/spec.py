"""What the launcher hands every training worker: a typed, frozen :class:`WorkerSpec`.

Ray Train passes ``train_loop_config`` (a dict) to every worker; jumpray puts one
:class:`WorkerSpec` in it under :data:`SPEC_KEY`. The spec pickles (Ray ships it to the worker
processes): plain values, the run config, and two actor handles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jumpray.config import RunConfig

__all__ = ["WorkerSpec", "FaultInjection", "SPEC_KEY"]

# The key of the spec in Ray Train's train_loop_config.
SPEC_KEY = "spec"


@dataclass(frozen=True)
class FaultInjection:
    """Test-only: SIGKILL the worker of ``rank`` once, at its ``batch``-th batch of ``epoch``.

    Attributes:
        marker: a file written just before the kill; while it exists the fault does not fire again.
    """

    epoch: int
    marker: str
    rank: int = 0
    batch: int = 1


@dataclass(frozen=True)
class WorkerSpec:
    """The loop settings of one training run, the same on every worker.

    Attributes:
        config: the resolved run configuration.
        num_classes: C.
        num_samples: N, the size of the per-sample tables (max idx + 1).
        channels: C of the images; image_hw: their (H, W).
        mean, std: the resolved per-channel normalisation (one value per channel).
        shards: the training folder (recorded in the checkpoint for scoring), or None.
        noise_rate: the data's noise rate when known (Co-teaching / JoCoR forget rate).
        has_test, has_val: a ``test`` / ``val`` dataset is given.
        snapshot_store: the run's snapshot store actor, or None.
        fault: test-only fault injection, or None.
        progress_queue: the driver's queue for a data or config error, or None.
        in_memory: every dataset was materialized: workers keep their split in memory.
        submitted_at: ``time.time()`` when the driver submitted the run (start-up timing).
    """

    config: RunConfig
    num_classes: int
    num_samples: int
    channels: int
    image_hw: tuple[int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    shards: str | None = None
    noise_rate: float | None = None
    has_test: bool = False
    has_val: bool = False
    snapshot_store: Any = None
    fault: FaultInjection | None = None
    progress_queue: Any = None
    in_memory: bool = False
    submitted_at: float | None = None

"""Driver-side progress: one line per epoch, MLflow metrics, and the selection-curve plot.

Ray Train V2 calls a :class:`ray.train.UserCallback`'s ``after_report`` on its controller process
(not on the driver) once every worker has reported. :class:`EpochForwarder` forwards rank 0's
metrics from there into a small queue actor; :class:`DriverProgress`, a thread in the driver, takes
them out, prints the progress line (:func:`jumpray.train.lines.format_epoch_line`, with an ETA) and
logs them to the tracker. So MLflow is only ever called from the driver, and a tracking failure
can at most warn (the tracker never raises unless strict).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from ray.train import UserCallback

from jumpray.log import get_logger
from jumpray.tracking import NoopTracker
from jumpray.train.lines import format_epoch_line

__all__ = ["EpochForwarder", "DriverProgress", "make_queue"]

log = get_logger(__name__)


def make_queue() -> Any:
    """An unbounded Ray queue actor that holds no CPU (it must not starve Ray Data on 2 cores)."""
    from ray.util.queue import Queue

    return Queue(actor_options={"num_cpus": 0})


class EpochForwarder(UserCallback):
    """Runs on the Train controller: puts each report's rank-0 metrics into ``queue``."""

    def __init__(self, queue: Any):
        self.queue = queue

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any):
        if not metrics:
            return
        try:
            self.queue.put_nowait(dict(metrics[0]))
        except Exception as exc:  # progress must never stop training
            log.warning("progress forwarding failed: %s", exc)


class DriverProgress:
    """A driver thread that turns forwarded metrics into progress lines and tracker metrics.

    Args:
        queue: the queue :class:`EpochForwarder` fills.
        epochs: the run's total epochs (for the ETA).
        tracker: where metrics go (``step`` = epoch).
        label: prefix of each line (the method name).
        on_epoch: optional callback with each epoch's metrics (after logging).
    """

    def __init__(
        self,
        queue: Any,
        *,
        epochs: int,
        tracker: NoopTracker,
        label: str,
        on_epoch: Callable[[dict[str, float]], None] | None = None,
    ):
        self.queue, self.epochs, self.tracker, self.label = queue, epochs, tracker, label
        self.on_epoch = on_epoch
        # A worker's data or config error (jumpray.errors), and what to do when one arrives.
        self.user_error: Exception | None = None
        self.on_user_error: Callable[[Exception], None] | None = None
        self.history: dict[int, dict[str, float]] = {}
        self.arrivals: list[int] = []  # epochs in report order (a restart shows as a repeat/jump)
        self.arrival_times: list[float] = []  # time.perf_counter() at each arrival
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="jumpray-progress", daemon=True)

    def start(self) -> DriverProgress:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread after the queue is drained."""
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        from ray.util.queue import Empty

        while True:
            try:
                item = self.queue.get(block=True, timeout=0.5)
            except Empty:
                if self._stop.is_set():
                    return
                continue
            except Exception as exc:  # the queue actor died with the cluster: nothing more to show
                log.debug("progress queue closed: %s", exc)
                return
            self.handle(item)

    def handle(self, metrics: dict[str, Any]) -> None:
        """Log one epoch's line and metrics (or record a worker's reported error)."""
        if "user_error" in metrics:
            if self.user_error is None:
                self.user_error = metrics["user_error"]
                if self.on_user_error is not None:
                    self.on_user_error(self.user_error)
            return
        epoch = int(metrics.get("epoch", len(self.history)))
        self.history[epoch] = metrics
        self.arrivals.append(epoch)
        self.arrival_times.append(time.perf_counter())
        times = [m["epoch_time_s"] for e, m in sorted(self.history.items()) if e > 0]
        mean = sum(times) / len(times) if times else metrics.get("epoch_time_s", 0.0)
        eta = mean * max(self.epochs - epoch - 1, 0)
        try:
            log.info("%s: %s", self.label, format_epoch_line(epoch, self.epochs, metrics, eta))
        except KeyError:
            log.info("%s: epoch %d: %s", self.label, epoch + 1, metrics)
        self.tracker.log_metrics(metrics, step=epoch)
        if self.on_epoch is not None:
            self.on_epoch(metrics)

"""Prior-model snapshots in the Ray object store, owned by a long-lived actor (docs/architecture.md).

At every epoch end rank 0 sends the evaluation network's weights to a :class:`SnapshotStore`
actor created by the driver. The actor ``ray.put``s them itself, so *it* owns the objects: they
outlive the training workers (which come and go with failures and with the end of ``fit()``) and
live as long as the driver keeps the actor. The last R epochs are kept (``snapshots.keep``,
R >= J + 1: scoring with the model state of J visits ago needs it); older ones are released.

Scoring (the next step of the clean job) reads ``store.list()`` -> ``[(epoch, ObjectRef)]`` and
``ray.get``s the refs. The same weights are also saved inside every checkpoint, so a new driver can
rebuild the store from a checkpoint (:func:`restore_snapshots`).
"""

from __future__ import annotations

from typing import Any

import ray

from jumpray.log import get_logger

__all__ = [
    "SnapshotStore",
    "create_snapshot_store",
    "get_snapshot_store",
    "store_name",
    "restore_snapshots",
    "NAMESPACE",
]

log = get_logger(__name__)

NAMESPACE = "jumpray"


@ray.remote(num_cpus=0, max_restarts=0)
class SnapshotStore:
    """Keeps the last ``keep`` snapshots as object refs the actor owns.

    Args:
        keep: R, how many epochs' weights to keep.
    """

    def __init__(self, keep: int):
        if keep < 1:
            raise ValueError(f"snapshots.keep must be >= 1, got {keep}")
        self.keep = int(keep)
        self._items: list[tuple[int, ray.ObjectRef]] = []

    def put(self, epoch: int, weights: dict[str, Any]) -> list[int]:
        """Store one epoch's weights (a state dict of CPU tensors); replaces that epoch if present.

        Returns:
            The epochs now kept, oldest first.
        """
        # ray.put from inside the actor makes the actor the owner (not the calling worker).
        ref = ray.put(weights)
        self._items = [(e, r) for e, r in self._items if e != epoch] + [(int(epoch), ref)]
        self._items.sort(key=lambda item: item[0])
        # Dropping the last reference releases the object (unless a borrower still holds it).
        self._items = self._items[-self.keep :]
        return self.epochs()

    def list(self) -> list[tuple[int, ray.ObjectRef]]:
        """``[(epoch, ObjectRef)]``, oldest first; ``ray.get(ref)`` is the state dict."""
        return list(self._items)

    def epochs(self) -> list[int]:
        """The kept epochs, oldest first."""
        return [e for e, _ in self._items]

    def get(self, epoch: int) -> dict[str, Any]:
        """The weights of one kept epoch.

        Raises:
            KeyError: the epoch is not (or no longer) kept; the message lists the kept ones.
        """
        for e, ref in self._items:
            if e == epoch:
                return ray.get(ref)
        raise KeyError(f"no snapshot for epoch {epoch}; kept: {self.epochs()}")

    def clear(self) -> None:
        """Release every snapshot."""
        self._items = []


def store_name(run_id: str) -> str:
    """The actor name of one run's store (named per run, so runs never share snapshots)."""
    return f"jumpray-snapshots-{run_id}"


def create_snapshot_store(run_id: str, *, keep: int) -> ray.actor.ActorHandle:
    """Create the run's store on the driver (or return it if it already exists).

    The actor is not detached: it lives as long as the driver process that created it, which is
    what lets snapshots outlive the training workers and be scored after ``fit()``.

    Args:
        run_id: a unique run id (the Ray Train run name).
        keep: R.
    """
    return SnapshotStore.options(
        name=store_name(run_id), namespace=NAMESPACE, get_if_exists=True
    ).remote(keep)


def get_snapshot_store(run_id: str) -> ray.actor.ActorHandle:
    """Look up a run's store by name.

    Raises:
        ValueError: no store of that run is alive (its driver ended); use a checkpoint instead.
    """
    try:
        return ray.get_actor(store_name(run_id), namespace=NAMESPACE)
    except ValueError:
        raise ValueError(
            f"no snapshot store for run {run_id!r} is alive (it ends with the driver that created "
            "it); load the snapshots from the run's checkpoint instead"
        ) from None


def restore_snapshots(
    store: ray.actor.ActorHandle, snapshots: list[tuple[int, dict[str, Any]]]
) -> list[int]:
    """Put ``[(epoch, state_dict)]`` (as saved in a checkpoint) into ``store``.

    Returns:
        The epochs the store keeps afterwards.
    """
    kept: list[int] = []
    for epoch, weights in snapshots:
        kept = ray.get(store.put.remote(int(epoch), weights))
    return kept

"""What a Ray session holds: live actors, placement groups, object-store bytes (before and after).

A sweep of dozens of trials must end holding what it started with (issue 15, item 6):
:func:`take_ledger` counts, :func:`settle` polls until the counts are back (Train V2 removes a
stopped trial's placement group asynchronously, a few seconds after Tune returns:
docs/architecture.md, 'Ray notes: placement group cleanup'), and :meth:`RayLedger.growth` says
what stayed.

Ray's own cluster services (named *and* detached actors such as Ray Data's stats actor, created
once on first use and meant to live with the cluster) are counted apart: they are not per-run
state and never multiply.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

from jumpray.log import get_logger

__all__ = ["RayLedger", "take_ledger", "settle"]

log = get_logger(__name__)


@dataclass(frozen=True)
class RayLedger:
    """One look at the cluster.

    Attributes:
        actors: alive actors by class name, Ray's cluster services left out.
        services: alive named detached actors by class name (Ray's cluster services).
        placement_groups: placement groups not yet removed.
        object_store_bytes: bytes in use in the object store (whole cluster).
    """

    actors: dict[str, int] = field(default_factory=dict)
    services: dict[str, int] = field(default_factory=dict)
    placement_groups: int = 0
    object_store_bytes: float = 0.0

    @property
    def num_actors(self) -> int:
        return sum(self.actors.values())

    def growth(self, before: RayLedger, *, bytes_slack: float = 1 << 20) -> list[str]:
        """What this look holds beyond ``before`` (empty = nothing accumulated).

        Args:
            before: the earlier look.
            bytes_slack: object-store growth below this is noise (small driver-side objects).
        """
        grown = [
            f"{n - before.actors.get(name, 0)} more {name} actor(s)"
            for name, n in sorted(self.actors.items())
            if n > before.actors.get(name, 0)
        ]
        if self.placement_groups > before.placement_groups:
            grown.append(
                f"{self.placement_groups - before.placement_groups} more placement group(s)"
            )
        extra = self.object_store_bytes - before.object_store_bytes
        if extra > bytes_slack:
            grown.append(f"{extra / 2**20:.1f} MiB more in the object store")
        return grown

    def describe(self) -> str:
        return (
            f"{self.num_actors} actors, {self.placement_groups} placement groups, "
            f"{self.object_store_bytes / 2**20:.1f} MiB in the object store"
        )


def take_ledger() -> RayLedger | None:
    """Count now; None when the cluster has no State API (no dashboard) to count with."""
    try:
        return _count()
    except Exception as exc:  # the books are a report, never a reason to fail a sweep
        log.warning("cannot count Ray's actors and placement groups: %s", exc)
        return None


def _count() -> RayLedger:
    import ray
    from ray.util.state import list_actors

    actors: Counter[str] = Counter()
    services: Counter[str] = Counter()
    # This Ray's address, not a search of the machine (which fails with two Ray instances).
    address = ray.get_runtime_context().gcs_address
    alive = list_actors(
        address=address, filters=[("state", "=", "ALIVE")], limit=10_000, detail=True
    )
    for a in alive:
        name = a.class_name or "?"
        if getattr(a, "is_detached", False) and a.name:
            services[name] += 1
        else:
            actors[name] += 1
    groups = ray.util.placement_group_table().values()
    live_groups = sum(1 for g in groups if g.get("state") != "REMOVED")
    total = ray.cluster_resources().get("object_store_memory", 0.0)
    free = ray.available_resources().get("object_store_memory", total)
    return RayLedger(dict(actors), dict(services), live_groups, max(total - free, 0.0))


def settle(
    before: RayLedger | None, *, timeout_s: float = 15.0, interval_s: float = 1.0
) -> RayLedger | None:
    """Poll :func:`take_ledger` until nothing grew over ``before`` or ``timeout_s`` passed."""
    if before is None:
        return None
    deadline = time.monotonic() + timeout_s
    now = take_ledger()
    while now is not None and now.growth(before) and time.monotonic() < deadline:
        time.sleep(interval_s)
        now = take_ledger()
    return now

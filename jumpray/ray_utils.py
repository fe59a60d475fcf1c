"""Starting or joining Ray the same way everywhere (an adapter; layer of ``data``/``models``).

The rules come from ``spec/ray-stack-notes.md``: quiet environment variables set before Ray
starts, ``ray.init()`` with no resource arguments when joining a cluster (``RAY_ADDRESS`` or
``--address``), and on a local machine the dashboard on (Train V2 cleanup needs the State API)
with a bounded object store.
"""

from __future__ import annotations

import os
from typing import Any

from jumpray.log import get_logger

__all__ = ["init_ray", "QUIET_RAY_ENV"]

log = get_logger(__name__)

QUIET_RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    "RAY_DEDUP_LOGS": "1",
    "RAY_AIR_NEW_OUTPUT": "0",
    "RAY_TRAIN_V2_ENABLED": "1",
}


def init_ray(
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    object_store_memory: int | None = 1024**3,
    temp_dir: str | None = None,
    for_tests: bool = False,
    include_dashboard: bool = True,
) -> dict[str, Any]:
    """Start a local Ray or join a cluster; a no-op when Ray is already up.

    Args:
        address: a cluster address; None uses ``RAY_ADDRESS`` when set, else starts a local Ray.
        num_cpus: local Ray only; None = all cores.
        object_store_memory: local Ray only, bytes (the default would take 30 % of RAM).
        temp_dir: local Ray only: where session folders and logs go.
        for_tests: disables token auth (local throwaway cluster) and log forwarding.
        include_dashboard: local Ray only; Train V2 needs it to clean up stopped trials.

    Returns:
        ``ray.cluster_resources()`` of the cluster joined.
    """
    for key, value in QUIET_RAY_ENV.items():
        os.environ.setdefault(key, value)
    if for_tests:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    if ray.is_initialized():
        return ray.cluster_resources()
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        # Joining a cluster: resources are the cluster's (ray-stack-notes §3.7).
        ray.init(address=address, log_to_driver=not for_tests)
        log.info("joined Ray cluster at %s: %s", address, ray.cluster_resources())
    else:
        kwargs: dict[str, Any] = {
            "num_cpus": num_cpus,
            "object_store_memory": object_store_memory,
            "include_dashboard": include_dashboard,
            "log_to_driver": not for_tests,
            "configure_logging": True,
            "logging_level": "WARNING",
        }
        if temp_dir:
            kwargs["_temp_dir"] = temp_dir
        ray.init(**kwargs)
    return ray.cluster_resources()

"""Starting or joining Ray the same way everywhere (an adapter; layer of ``data``/``models``).

The rules are the Ray notes of docs/architecture.md: quiet environment variables set before Ray
starts, ``ray.init()`` with no resource arguments when joining a cluster (``RAY_ADDRESS`` or
``--address``), and on a local machine the dashboard on (Train V2 cleanup needs the State API)
with a bounded object store.
"""

from __future__ import annotations

import os
from typing import Any

from jumpray.log import get_logger

__all__ = ["init_ray", "QUIET_RAY_ENV", "torch_threads", "node_cpus", "materialize_in_order"]

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
        # Joining a cluster: resources are the cluster's (docs/architecture.md,
        # 'Ray notes: joining a cluster').
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


def torch_threads(
    *,
    requested: int | None,
    node_cpus: float,
    processes_on_node: int,
    data_in_memory: bool,
    deterministic: bool = False,
    fallback: int = 1,
    usable_cores: int | None = None,
) -> int:
    """The torch intra-op thread count of one training or scoring process on a Ray node.

    The rule (``train.num_threads: null``):

    1. an explicit ``requested`` count wins;
    2. ``deterministic`` (``data.preserve_order``): 1 thread. torch's CPU results depend on the
       thread count (a conv backward reduces in a different order), so a reproducible run must
       not depend on how many cores the machine has;
    3. while Ray Data still reads and decodes during training (``data_in_memory`` False: the
       dataset streams), ``fallback``, the thread count Ray gives for the CPUs the process
       reserved (``OMP_NUM_THREADS``): the other cores belong to the read tasks, and a reader
       starved of CPU hangs the run (docs/architecture.md, 'Ray notes: CPU starvation');
    4. once the rows sit in the object store (materialized: nothing reads any more), the node's
       CPUs divided by the processes that share them, at least 1, at most the cores this process
       may run on.

    Args:
        requested: ``train.num_threads`` (None = auto).
        node_cpus: the Ray node's CPU resource (what Ray was told the node has).
        processes_on_node: training (or scoring) processes on this node.
        data_in_memory: every dataset the process reads is materialized.
        deterministic: ``data.preserve_order``.
        fallback: the count for rule 3.
        usable_cores: cores of this process's CPU affinity; None = ``os.sched_getaffinity``.

    Returns:
        The thread count, >= 1.
    """
    if requested:
        return int(requested)
    if deterministic:
        return 1
    if not data_in_memory:
        return max(1, int(fallback))
    if usable_cores is None:
        usable_cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0
        usable_cores = usable_cores or os.cpu_count() or 1
    share = int(node_cpus // max(processes_on_node, 1))
    return max(1, min(share, usable_cores))


def materialize_in_order(ds: Any) -> Any:
    """``ds.materialize()`` with its blocks in read order, whatever order the read tasks end in.

    Ray Data materializes blocks in the order their tasks finish, which depends on the machine's
    speed: a small last shard read on a fast box lands first. The rows of a materialized dataset
    are the order a worker trains in with ``data.shuffle_buffer: 0``, so an unordered
    materialization made ``data.preserve_order`` runs differ from machine to machine
    (docs/architecture.md, 'Ray notes: materialize order'). The order costs nothing here: every
    block is kept until the end anyway.

    Args:
        ds: a Ray Dataset.

    Returns:
        The MaterializedDataset (its context keeps ``preserve_order`` on).
    """
    options = ds.context.execution_options
    before = options.preserve_order
    options.preserve_order = True
    try:
        return ds.materialize()
    finally:
        # The context may be shared with the datasets ds was derived from: leave them as they were.
        options.preserve_order = before


def node_cpus() -> float:
    """The CPU resource of the Ray node this process runs on (0 when unknown)."""
    import ray

    node_id = ray.get_runtime_context().get_node_id()
    for node in ray.nodes():
        if node.get("NodeID") == node_id:
            return float(node.get("Resources", {}).get("CPU", 0.0))
    return 0.0

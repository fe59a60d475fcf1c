"""Starting or joining Ray the same way everywhere (an adapter; layer of ``data``/``models``).

The rules are the Ray notes of docs/architecture.md: quiet environment variables set before Ray
starts, ``ray.init()`` with no resource arguments when joining a cluster (``RAY_ADDRESS`` or
``--address``), and on a local machine the dashboard on (Train V2 cleanup needs the State API)
on loopback with a bounded object store. Every Ray process of the run gets :func:`job_env_vars`
through the job's runtime env, so Ray's State API calls (Train's placement-group cleaner) reach
this Ray even when another Ray instance runs on the machine (docs/architecture.md,
'Ray notes: placement group cleanup').
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
from collections.abc import Iterator, Mapping
from typing import Any

from jumpray.log import get_logger

__all__ = [
    "init_ray",
    "job_env_vars",
    "API_SERVER_ENV",
    "QUIET_RAY_ENV",
    "torch_threads",
    "node_cpus",
    "materialize_in_order",
]

log = get_logger(__name__)

QUIET_RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
    "RAY_TRAIN_ENABLE_V2_MIGRATION_WARNINGS": "0",
    "RAY_DEDUP_LOGS": "1",
    "RAY_AIR_NEW_OUTPUT": "0",
    "RAY_TRAIN_V2_ENABLED": "1",
}

# Set on a local Ray this process starts (a value set in the environment wins). One machine that
# is the whole cluster is never drained by a cloud provider, so Ray Train's preemption watcher
# (an extra actor process per run, which imports Ray Train: about 3 s of start-up on 2 cores)
# has nothing to watch. On a cluster it stays on.
LOCAL_RAY_ENV = {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}

# Where Ray's State API looks first for the dashboard to ask (then RAY_ADDRESS, then a search of
# the machine that fails when it finds two Ray instances).
API_SERVER_ENV = "RAY_API_SERVER_ADDRESS"
# The local dashboard listens here only (docs/architecture.md, 'Ray notes: loopback').
LOCAL_HOST = "127.0.0.1"


def job_env_vars(*, api_server: str | None) -> dict[str, str]:
    """The environment variables every Ray process of a jumpray run gets (``runtime_env``).

    One place for them: whatever a worker, the Train controller or its placement-group cleaner
    must find in its environment is added here. A variable already in this process's
    environment is left out: it is the user's (or the submitted job's runtime env, which Ray
    refuses to see set twice) and reaches the workers that way.

    Args:
        api_server: the State API address of the Ray this run uses: the local dashboard's
            ``http://127.0.0.1:PORT``, or a cluster's GCS address ``host:port``; None = none known.

    Returns:
        ``{name: value}``, possibly empty.
    """
    wanted = {API_SERVER_ENV: api_server}
    return {k: v for k, v in wanted.items() if v and k not in os.environ}


# Object-storage settings that are not secrets: handed to a cluster's workers when this process
# joins it from outside (a local Ray inherits this process's environment; a submitted job has
# its own runtime env). Keys are never put in a runtime env, which the dashboard shows: they
# belong on the nodes (docs/architecture.md, 'Object storage').
STORE_SETTINGS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION")


def store_env_vars() -> dict[str, str]:
    """The :data:`STORE_SETTINGS` set here, unless this process is a submitted job's driver."""
    if "RAY_JOB_CONFIG_JSON_ENV_VAR" in os.environ:  # ray job submit: its runtime env rules
        return {}
    return {k: os.environ[k] for k in STORE_SETTINGS if os.environ.get(k)}


def _with_env_vars(runtime_env: Mapping[str, Any] | None, env_vars: Mapping[str, str]) -> dict:
    """``runtime_env`` plus ``env_vars``; a variable the given runtime env sets keeps its value."""
    merged = dict(runtime_env or {})
    merged["env_vars"] = {**env_vars, **dict(merged.get("env_vars") or {})}
    if not merged["env_vars"]:
        del merged["env_vars"]
    return merged


def _free_port(host: str = LOCAL_HOST) -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _gcs_address(address: str) -> str | None:
    """``address`` when it names a cluster's GCS (``host:port``); None for ``auto``, ``local``
    and Ray Client (``ray://``) addresses, which say nothing about which instance they mean."""
    if "://" in address or address in ("auto", "local") or ":" not in address:
        return None
    return address


def init_ray(
    *,
    address: str | None = None,
    num_cpus: int | None = None,
    object_store_memory: int | None = 1024**3,
    temp_dir: str | None = None,
    for_tests: bool = False,
    include_dashboard: bool = True,
    runtime_env: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Start a local Ray or join a cluster; a no-op when Ray is already up.

    A Ray the caller started keeps its own runtime env: to be safe from a second Ray instance on
    the same machine, start it with this function (or see docs/api.md, 'Ray').

    Args:
        address: a cluster address; None uses ``RAY_ADDRESS`` when set, else starts a local Ray.
        num_cpus: local Ray only; None = all cores.
        object_store_memory: local Ray only, bytes (the default would take 30 % of RAM).
        temp_dir: local Ray only: where session folders and logs go.
        for_tests: disables token auth (local throwaway cluster) and log forwarding.
        include_dashboard: local Ray only; Train V2 needs it to clean up stopped trials. It
            listens on 127.0.0.1 only, on a free port.
        runtime_env: the job's runtime env; :func:`job_env_vars` are added to its ``env_vars``.

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
    with _sigterm_kept():
        _init(
            ray,
            address,
            num_cpus,
            object_store_memory,
            include_dashboard,
            for_tests,
            runtime_env,
            temp_dir,
        )
    return ray.cluster_resources()


@contextlib.contextmanager
def _sigterm_kept() -> Iterator[None]:
    """Keep a SIGTERM handler of ours across ``ray.init``, which replaces it with one that calls
    ``sys.exit`` (the CLI's raises KeyboardInterrupt, so a terminated run cleans up as after
    Ctrl-C). The default handler (a library caller's) is left to Ray."""
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    try:
        yield
    finally:
        if callable(previous):
            signal.signal(signal.SIGTERM, previous)


def _init(
    ray: Any,
    address: str | None,
    num_cpus: int | None,
    object_store_memory: int | None,
    include_dashboard: bool,
    for_tests: bool,
    runtime_env: Mapping[str, Any] | None,
    temp_dir: str | None,
) -> None:
    """The ``ray.init`` call of :func:`init_ray` (arguments as there)."""
    address = address or os.environ.get("RAY_ADDRESS")
    if address:
        # Joining a cluster: resources are the cluster's (docs/architecture.md,
        # 'Ray notes: joining a cluster').
        env = job_env_vars(api_server=_gcs_address(address)) | store_env_vars()
        ray.init(
            address=address,
            log_to_driver=not for_tests,
            runtime_env=_with_env_vars(runtime_env, env) or None,
        )
        log.info("joined Ray cluster at %s: %s", address, ray.cluster_resources())
    else:
        for key, value in LOCAL_RAY_ENV.items():
            os.environ.setdefault(key, value)  # read by Train's controller (it propagates them)
        kwargs: dict[str, Any] = {
            # A new instance of our own: with no address ray.init() would join the last
            # `ray start` cluster on the machine (someone else's, or a dead one).
            "address": "local",
            "num_cpus": num_cpus,
            "object_store_memory": object_store_memory,
            "include_dashboard": include_dashboard,
            "log_to_driver": not for_tests,
            "configure_logging": True,
            "logging_level": "WARNING",
        }
        api_server = None
        if include_dashboard:
            port = _free_port()
            kwargs |= {"dashboard_host": LOCAL_HOST, "dashboard_port": port}
            api_server = f"http://{LOCAL_HOST}:{port}"
        env = job_env_vars(api_server=api_server)
        kwargs["runtime_env"] = _with_env_vars(runtime_env, env) or None
        if temp_dir:
            kwargs["_temp_dir"] = temp_dir
        ray.init(**kwargs)
        if api_server:
            log.info("local Ray dashboard: %s", api_server)


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

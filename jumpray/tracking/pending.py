"""Tracking records that could not be sent yet: kept in order, sent later, saved, replayed.

A tracker turns each call into one *operation*, a JSON-ready dict:

- ``{"op": "create", "experiment", "run_name", "tags", "start_time"}``: the run itself;
- ``{"op": "params", "params": {key: value}}``, ``{"op": "tags", "tags": {key: value}}``;
- ``{"op": "metrics", "metrics": [[key, value, timestamp_ms, step], ...]}``;
- ``{"op": "artifact", "path", "artifact_path"}`` (a file or a folder), ``{"op": "dict", "data",
  "name"}`` (a JSON artifact);
- ``{"op": "end", "status", "end_time"}``.

:func:`send` delivers one. Each operation keeps the times it was made with, so sending it again is
harmless: MLflow stores a metric once per (key, step, timestamp, value). :class:`PendingLog` holds
the operations an outage held back: in memory up to a bound, then in a file of its own in the
pending folder (``OUT/mlflow_pending/<key>.jsonl``, with copies of the files to upload in
``<key>/``), so nothing is dropped. :func:`replay` sends a saved folder or file
(``jumpray tracking replay``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jumpray.files import atomic_path, copy_tree, write_text
from jumpray.log import get_logger

__all__ = [
    "PENDING_DIR",
    "FORMAT",
    "PendingLog",
    "ReplayResult",
    "send",
    "is_transient",
    "short_http",
    "replay",
]

log = get_logger(__name__)

PENDING_DIR = "mlflow_pending"
FORMAT = "jumpray-mlflow-pending/1"
# MLflow's per-request retry policy for the tracker's calls: MLflow's own default (7 retries,
# 120 s timeout) blocks a call about 4 minutes on a dead server (docs/architecture.md, 'Tracking
# outages'). One retry (no back-off) rides over a stale pooled connection after a restart;
# anything longer is the pending log's job. Values set in the environment win.
HTTP_SETTINGS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0",
}
MAX_PARAMS, MAX_METRICS = 100, 1000  # MLflow's per-batch limits
_HTTP_LOCK = threading.RLock()


@contextlib.contextmanager
def short_http() -> Iterator[None]:
    """Apply :data:`HTTP_SETTINGS` (where the environment does not set them) for one call.

    MLflow reads them from the environment on every request, and has no per-client setting, so
    they are set for the duration of the call and restored after it; a lock keeps two trackers'
    calls from restoring each other's values. Another thread's MLflow call made meanwhile sees
    them too.
    """
    with _HTTP_LOCK:
        added = [k for k in HTTP_SETTINGS if k not in os.environ]
        os.environ.update({k: HTTP_SETTINGS[k] for k in added})
        try:
            yield
        finally:
            for k in added:
                os.environ.pop(k, None)


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` says the store was unreachable or overloaded (try again later), False
    when it refused the operation itself (a bad value, a deleted run, a missing local file)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if _says_retry(e):
            return True
        todo += [e.__cause__, e.__context__]
    return False


def _says_retry(e: BaseException) -> bool:
    """One exception of a chain: a network failure, or an answer with HTTP 429 / 5xx."""
    import requests
    from mlflow.exceptions import RestException

    if isinstance(e, requests.HTTPError) and e.response is not None:
        return _retry_status(e.response.status_code)
    if isinstance(e, RestException):
        return _retry_status(e.get_http_status_code())
    # SQLAlchemy's OperationalError: a local database that is locked or gone.
    return isinstance(e, requests.RequestException | ConnectionError | TimeoutError) or (
        type(e).__name__ == "OperationalError"
    )


def _retry_status(status: int) -> bool:
    return status == 429 or status >= 500


def send(client: Any, run_id: str | None, op: dict[str, Any], base: Path) -> Any:
    """Deliver one operation with ``client`` (an ``MlflowClient``).

    Args:
        run_id: the run it belongs to (None before its ``create`` operation).
        base: the folder relative artifact paths (copies in the pending folder) start from.

    Returns:
        The new run's ``RunInfo`` for a ``create`` operation, else None.
    """
    from mlflow.entities import Metric, Param, RunTag

    kind = op["op"]
    if kind == "create":
        exp = client.get_experiment_by_name(op["experiment"])
        exp_id = exp.experiment_id if exp else client.create_experiment(op["experiment"])
        run = client.create_run(
            exp_id, start_time=op["start_time"], tags=op["tags"], run_name=op["run_name"]
        )
        return run.info
    if run_id is None:
        raise ValueError(f"no MLflow run to send a {kind!r} record to (its creation was refused)")
    if kind == "params":
        items = [Param(k, v) for k, v in op["params"].items()]
        for i in range(0, len(items), MAX_PARAMS):
            client.log_batch(run_id, params=items[i : i + MAX_PARAMS])
    elif kind == "metrics":
        items = [Metric(k, v, ts, step) for k, v, ts, step in op["metrics"]]
        for i in range(0, len(items), MAX_METRICS):
            client.log_batch(run_id, metrics=items[i : i + MAX_METRICS])
    elif kind == "tags":
        client.log_batch(run_id, tags=[RunTag(k, v) for k, v in op["tags"].items()])
    elif kind == "artifact":
        path = base / op["path"]  # an absolute path stays itself
        if path.is_dir():
            client.log_artifacts(run_id, str(path), op["artifact_path"])
        else:
            client.log_artifact(run_id, str(path), op["artifact_path"])
    elif kind == "dict":
        client.log_dict(run_id, op["data"], op["name"])
    elif kind == "end":
        client.set_terminated(run_id, op["status"], end_time=op["end_time"])
    else:
        raise ValueError(f"unknown tracking record {kind!r}")
    return None


def describe(op: dict[str, Any]) -> str:
    """A short name of an operation for messages (``metrics of step 3``, ``artifact model``)."""
    kind = op["op"]
    if kind == "metrics":
        steps = sorted({m[3] for m in op["metrics"]})
        return f"metrics of step {','.join(map(str, steps))}"
    if kind == "artifact":
        return f"artifact {op['artifact_path'] or Path(op['path']).name}"
    if kind == "dict":
        return f"artifact {op['name']}"
    if kind == "end":
        return f"end ({op['status']})"
    return {"create": "run creation"}.get(kind, kind)


def _now_stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")


class PendingLog:
    """The operations an outage held back, oldest first (module docstring).

    The first ones may be on disk (spilled when more than ``max_memory`` were held, or saved at
    the end of the run), the rest in memory; files to upload are copied into the pending folder
    when they are held back, since the job moves or deletes its own copies.

    Args:
        folder: the pending folder (created when first needed).
        uri: the tracking URI the operations are for (recorded in the file).
        max_memory: operations kept in memory; beyond that all of them are written to the file.
    """

    def __init__(self, folder: Path, *, uri: str, max_memory: int):
        self.folder = Path(folder)
        self.key = f"{_now_stamp()}-{uuid.uuid4().hex[:6]}"
        self.uri = uri
        self.max_memory = max_memory
        self.memory: deque[dict[str, Any]] = deque()
        self.on_disk = 0
        self.spilled = False  # the memory bound was hit at least once
        self._seq = 0

    @property
    def path(self) -> Path:
        """This log's file in the pending folder (exists once something was written)."""
        return self.folder / f"{self.key}.jsonl"

    def __len__(self) -> int:
        return self.on_disk + len(self.memory)

    def add(self, op: dict[str, Any], run_id: str | None) -> None:
        """Hold ``op`` back (a file to upload is copied now); spill to disk past the bound."""
        if op["op"] == "artifact" and not op.get("copy"):
            op = self._copy_file(op)
        self.memory.append(op)
        if len(self.memory) > self.max_memory:
            if not self.spilled:
                log.warning(
                    "MLflow unreachable at %s: more than %d records held back; from now on they "
                    "are written to %s (nothing is dropped)",
                    self.uri,
                    self.max_memory,
                    self.path,
                )
            self.spilled = True
            self.save(run_id)

    def _copy_file(self, op: dict[str, Any]) -> dict[str, Any]:
        self._seq += 1
        src = Path(op["path"])
        rel = Path(self.key) / str(self._seq) / src.name
        dst = self.folder / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            copy_tree(src, dst)
        else:
            with atomic_path(dst) as tmp:
                shutil.copy2(src, tmp)
        return op | {"path": str(rel), "copy": True}

    def deliver(
        self,
        deliver_one: Callable[[dict[str, Any]], None],
        run_id: Callable[[], str | None],
    ) -> int:
        """Send every held operation in order with ``deliver_one`` until one raises.

        Args:
            deliver_one: sends one operation; raises when it could not (the store is down).
            run_id: a callable giving the current run id (for rewriting the file).

        Returns:
            How many were sent. The exception of the one that failed propagates; what is left
            stays held (the file is rewritten without the sent ones).
        """
        sent = 0
        if self.on_disk:
            ops = read_ops(self.path)[1]
            try:
                for op in ops:
                    deliver_one(op)
                    self._drop_copy(op)
                    sent += 1
            finally:
                self.on_disk = len(ops) - sent
                if self.on_disk:
                    write_ops(self.path, self._header(run_id()), ops[sent:])
                else:
                    self.path.unlink(missing_ok=True)
        while self.memory:
            deliver_one(self.memory[0])
            self._drop_copy(self.memory.popleft())
            sent += 1
        self._tidy()
        return sent

    def save(self, run_id: str | None) -> Path:
        """Write everything held (the file first, then memory) to :attr:`path`; returns it."""
        ops = (read_ops(self.path)[1] if self.on_disk else []) + list(self.memory)
        write_ops(self.path, self._header(run_id), ops)
        self.on_disk, self.memory = len(ops), deque()
        return self.path

    def _header(self, run_id: str | None) -> dict[str, Any]:
        return {"format": FORMAT, "tracking_uri": self.uri, "run_id": run_id}

    def _drop_copy(self, op: dict[str, Any]) -> None:
        if op.get("copy"):
            shutil.rmtree(self.folder / Path(op["path"]).parent, ignore_errors=True)

    def _tidy(self) -> None:
        """Remove this log's copies folder, and the pending folder when nothing is left in it."""
        if len(self):
            return
        shutil.rmtree(self.folder / self.key, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.folder.rmdir()


def write_ops(path: Path, header: dict[str, Any], ops: list[dict[str, Any]]) -> Path:
    """Write a pending file atomically: the header line, then one operation per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(x, default=str) for x in (header, *ops)]
    return write_text(path, "\n".join(lines) + "\n")


def read_ops(path: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The header and the operations of a pending file.

    Raises:
        ValueError: not a pending file of this format.
    """
    lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
    header = json.loads(lines[0]) if lines else {}
    if header.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} file")
    return header, [json.loads(line) for line in lines[1:]]


@dataclass
class ReplayResult:
    """What :func:`replay` did.

    Attributes:
        sent: operations delivered.
        left: operations still held (the store was unreachable again); they stay in their files.
        refused: ``(file, operation, reason)`` for each one the store refused (dropped).
        runs: the MLflow run id of each replayed file.
        error: why the replay stopped early, or None.
    """

    sent: int = 0
    left: int = 0
    refused: list[tuple[str, str, str]] = field(default_factory=list)
    runs: dict[str, str | None] = field(default_factory=dict)
    error: str | None = None


def replay(path: str | Path, *, uri: str | None = None) -> ReplayResult:
    """Send a saved pending folder (``OUT/mlflow_pending``) or one of its ``.jsonl`` files.

    Files are sent oldest first, each operation in order; a file fully sent is removed with its
    copies. When the store is unreachable the replay stops and the rest stays on disk (run it
    again later); an operation the store refuses is reported and dropped.

    Args:
        path: the folder or a file.
        uri: the tracking URI to send to; None = the one recorded in each file.
    """
    path = Path(path)
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    result = ReplayResult()
    for i, file in enumerate(files):
        if not _replay_file(file, uri, result):
            result.left += sum(len(read_ops(f)[1]) for f in files[i + 1 :])
            break
    return result


def _replay_file(file: Path, uri: str | None, result: ReplayResult) -> bool:
    """Send one pending file (see :func:`replay`); False when the store was unreachable."""
    from mlflow.tracking import MlflowClient

    header, ops = read_ops(file)
    store = uri or header["tracking_uri"]
    client = MlflowClient(tracking_uri=store)
    held = PendingLog(file.parent, uri=store, max_memory=len(ops) + 1)
    held.key, held.on_disk = file.stem, len(ops)
    run = {"id": header.get("run_id")}

    def deliver_one(op: dict[str, Any]) -> None:
        try:
            with short_http():
                info = send(client, run["id"], op, file.parent)
        except Exception as exc:
            if is_transient(exc):
                raise
            result.refused.append((str(file), describe(op), f"{type(exc).__name__}: {exc}"))
            return
        if info is not None:
            run["id"] = info.run_id
        result.sent += 1

    try:
        held.deliver(deliver_one, lambda: run["id"])
    except Exception as exc:
        result.error = f"{store} unreachable ({type(exc).__name__}: {exc})"
        result.left += len(held)
        return False
    finally:
        result.runs[str(file)] = run["id"]
    return True

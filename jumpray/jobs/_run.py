"""The frame every run command (``train``, ``score``, ``clean``) runs in.

:func:`run_session`: the claimed ``--out`` (:mod:`jumpray.runs`) is set up (staging folder, run
marker), Ray's and MLflow's output go to ``OUT/logs/<command>-<time>.log`` unless ``--verbose``,
jumpray's log lines name the staged files by the place they are published to, and on the way
out: an error or Ctrl-C drops the staged outputs and marks the run ``failed`` /
``interrupted`` (so re-running the command resumes it); a Ray started here is shut down while the
log still captures its noise.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jumpray.log import alias_path, capture_to, console_is_tty, get_logger
from jumpray.runs import Claim, RunFolder
from jumpray.storage import is_uri, redact

__all__ = [
    "run_session",
    "RunSession",
    "start_ray",
    "resume_name",
    "read_inputs",
    "JobInputs",
    "tracking_lines",
    "shown",
    "job_arguments",
    "claim_shard_run",
]

log = get_logger(__name__)


class RunSession(RunFolder):
    """A :class:`~jumpray.runs.RunFolder` plus where this run's log went.

    Attributes:
        log_path: the log file, or None with ``--verbose`` (everything on the console).
    """

    log_path: Path | None = None


def _ray_up() -> bool:
    ray = sys.modules.get("ray")
    return bool(ray is not None and ray.is_initialized())


@contextlib.contextmanager
def run_session(claim: Claim, *, verbose: bool = False) -> Iterator[RunSession]:
    """Begin the run folder, capture the noise, clean up on the way out (module docstring).

    Args:
        claim: from :func:`jumpray.runs.claim_output`.
        verbose: leave Ray's output on the console (no log file).

    Yields:
        The :class:`RunSession`; the caller writes into ``session.staging`` and publishes.
    """
    session = RunSession(claim).begin()
    if claim.resume:
        log.info("%s: resuming the earlier `jumpray %s` run there", claim.out, claim.command)
    ray_was_up = _ray_up()
    if verbose:
        capture: Any = contextlib.nullcontext()
        if not console_is_tty():
            os.environ.setdefault("RAY_COLOR_PREFIX", "0")
    else:
        session.log_path = session.logs / f"{claim.command}-{time.strftime('%Y%m%d-%H%M%S')}.log"
        capture = capture_to(session.log_path)
    # Log lines name staged files by where they are published (the URI when OUT is remote).
    with capture, alias_path(claim.label, session.staging), alias_path(claim.label, session.out):
        try:
            yield session
        except BaseException as exc:
            session.abandon(interrupted=isinstance(exc, KeyboardInterrupt))
            raise
        finally:
            if _ray_up() and not ray_was_up:
                sys.modules["ray"].shutdown()


def resume_name(out: Path, *, required: bool) -> str | None:
    """The Ray Train run name an earlier run recorded in OUT, to resume it (None when there is
    none and it is not ``required``).

    Raises:
        ConfigError: ``required`` (``--resume``) and no earlier run wrote to OUT.
        UsageError: the recorded run is not inside its recorded storage (an edited record or a
            link elsewhere).
    """
    from jumpray.checkpoint import require_inside
    from jumpray.errors import ConfigError, UsageError
    from jumpray.train.launch import RUN_FILE

    path = out / RUN_FILE
    if not path.is_file():
        if not required:
            return None
        raise ConfigError(f"--resume: {path} does not exist (no earlier run wrote to this --out)")
    record = json.loads(path.read_text())
    name, storage = str(record["run_name"]), str(record["storage_path"])
    # Ray Train resumes from <storage>/<name>: a name that climbs out of the storage is refused.
    if not name or name in (".", "..") or "/" in name or "\\" in name:
        raise UsageError(f"--resume: {path} names the run {name!r}, which is not a run name")
    require_inside(Path(storage) / name, storage, what="--resume: the run")
    return name


def start_ray(address: str | None) -> dict[str, float]:
    """Start or join Ray, first thing in a run command: Ray Data reads its quiet settings from
    the environment when it is imported, which must come after. Returns the start-up part
    ``{"startup_ray_init_s": seconds}``."""
    from jumpray.ray_utils import init_ray

    t0 = time.perf_counter()
    init_ray(address=address)
    return {"startup_ray_init_s": time.perf_counter() - t0}


@dataclass
class JobInputs:
    """The shards a run command reads (:func:`read_inputs`).

    Attributes:
        train: the shards to train on or score.
        test: the held-out test shards, or None.
        startup: ``{"startup_scan_s": seconds}``, the scan of both.
    """

    train: Any
    test: Any = None
    startup: dict[str, float] = field(default_factory=dict)

    def close(self) -> None:
        """End both readers' quarantine sinks (nothing of the run stays in the Ray session)."""
        for source in (self.train, self.test):
            if source is not None:
                source.close()


def read_inputs(
    cfg: Any,
    shards: str | Path,
    test_shards: str | Path | None,
    *,
    num_classes: int | None = None,
    image_size: int | None = None,
) -> JobInputs:
    """Scan the training (or scored) shards and the test shards the way every run command does.

    Nothing is materialized here: training caches only the tensor columns it needs, and the
    clean job decides for itself. The test shards take the classes of the training shards and
    the image size the model works at (the smaller side of the training images unless set).

    Args:
        cfg: the run config (``data.*``).
        shards, test_shards: the folders (``test_shards`` may be None).
        num_classes: C when known (config or checkpoint); None = from the shards.
        image_size: the size the model works at, when fixed by a checkpoint.
    """
    from jumpray.data.shards import read_shards

    t0 = time.perf_counter()
    train = read_shards(shards, cfg.data, num_classes=num_classes, image_size=image_size)
    inputs = JobInputs(train)
    try:
        if test_shards is not None:
            inputs.test = read_shards(
                test_shards,
                cfg.data,
                num_classes=num_classes or train.info.num_classes,
                image_size=image_size or min(train.info.image_hw),
            )
    except BaseException:
        inputs.close()
        raise
    inputs.startup = {"startup_scan_s": time.perf_counter() - t0}
    return inputs


def tracking_lines(tracker: Any, *, kept_in: str) -> list[str]:
    """The summary's MLflow lines: where the run is and its artifacts, or that records were not
    sent (saved for ``jumpray tracking replay``) or refused, and where the numbers are kept."""
    uri = getattr(tracker, "uri", None)
    if uri is None:
        return ["  MLflow: off (tracking.enabled=false)"]
    pending = getattr(tracker, "pending_path", None)
    if pending is not None:
        return [
            f"  MLflow: records NOT sent (MLflow unreachable at {uri}); saved in {shown(pending)}",
            f"    send them when the server is back: jumpray tracking replay {shown(pending)}",
        ]
    if tracker.run_id is None:
        return [f"  MLflow: metrics NOT recorded (MLflow unreachable at {uri}); kept in {kept_in}"]
    lines = [f"  MLflow run {tracker.run_id} at {uri}"]
    if getattr(tracker, "failed", False):
        lines[0] += f" (some records were refused, see the warnings; all numbers are in {kept_in})"
    artifacts = getattr(tracker, "artifact_uri", None)
    if artifacts:
        lines.append(f"  MLflow artifacts: {artifacts}")
    return lines


def shown(path: str | Path) -> str:
    """``path`` as the console shows it: relative to the working directory when inside it."""
    if is_uri(path):
        return redact(path)
    path = Path(path)
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def job_arguments(args: Any, *names: str) -> dict[str, Any]:
    """The named command-line arguments as keyword arguments of a ``run_<command>`` function
    (the CLI's ``run`` and the Python API call the same function)."""
    return {name: getattr(args, name) for name in names}


def claim_shard_run(
    command: str,
    out: Path,
    shards: Path,
    test_shards: Path | None,
    *,
    extra_sources: Sequence[Path] = (),
    extra_inputs: Mapping[str, Any] | None = None,
    **options: Any,
) -> Claim:
    """Claim OUT for a command that reads shards (and test shards), then check both folders: a
    wrong path fails here, in a second, not after Ray has started.

    Args:
        extra_sources: more inputs OUT must not overwrite (``score``'s checkpoint folder).
        extra_inputs: more inputs that name the run (a resumed run must have the same).
        options: :func:`jumpray.runs.claim_output` keywords (``overwrite``, ``resume``, ...).
    """
    from jumpray.data.scan import check_shard_folders
    from jumpray.runs import claim_output

    claim = claim_output(
        out,
        command=command,
        sources=[shards, test_shards, *extra_sources],
        inputs={"shards": shards, "test_shards": test_shards, **(extra_inputs or {})},
        **options,
    )
    check_shard_folders(shards, test_shards)
    return claim

"""Output folders: a command never loses a user's data and never publishes half a result.

Every command that writes a folder claims it first (:func:`claim_output`), before it reads or
starts anything:

- ``--out`` may not be, contain or lie inside one of the command's sources (``--shards``, a
  source image folder, ``--root``, a list file...);
- an existing ``--out`` must be a folder (and not lie under a regular file);
- a folder holding files jumpray did not write is refused, with or without ``--overwrite``;
- a folder jumpray wrote is replaced only with ``--overwrite``, except that a run of the same
  command on the same inputs that was interrupted (Ctrl-C, or killed) is resumed by re-running the
  command, a failed run that published nothing is simply started over, and
  ``jumpray train --resume`` continues a finished run.

Shard folders are written whole beside ``--out`` and renamed into place
(:class:`jumpray.data.ShardWriter`). Run folders (``train``, ``score``, ``clean``) keep their work
state in place (``ray_results/`` for resuming, ``logs/``, :data:`MARKER`) and build their outputs
in a hidden staging folder inside ``--out``; :meth:`RunFolder.publish` moves them into place at the
end (the summary file last, Ctrl-C held back meanwhile) and removes what an earlier run left
that this one did not write. Standard library only.
"""

from __future__ import annotations

import contextlib
import fnmatch
import json
import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from jumpray import storage
from jumpray.errors import UsageError
from jumpray.files import replace_tree, write_json
from jumpray.log import get_logger

__all__ = [
    "MARKER",
    "pull_mirror",
    "push_mirror",
    "LOGS_DIR",
    "Claim",
    "RunFolder",
    "claim_output",
    "check_sources",
    "absolute",
]

log = get_logger(__name__)

MARKER = "jumpray_run.json"
# The free space a run folder's disk must have when the run starts (checkpoints, snapshots'
# copies, tables, the report); a full disk is said up front, not at the first checkpoint.
MIN_FREE_MB = int(os.environ.get("JUMPRAY_MIN_FREE_MB", "256"))
LOGS_DIR = "logs"
_STAGING = ".staging-"
# Work state a run keeps in place between attempts; never published, never removed by publish.
# mlflow_pending: tracking records an MLflow outage kept back (jumpray.tracking.PENDING_DIR).
_WORK = ("jumpray_run.json", "train_run.json", "ray_results", LOGS_DIR, "mlflow_pending")
# What a run publishes (train, score, clean) and what the demo folder holds.
_RUN_OUTPUTS = (
    "checkpoint",
    "train_summary.json",
    "config.yaml",
    "model.pt",
    "selection_curves.png",
    "quarantine.parquet",
    "labels.parquet",
    "summary.json",
    "report.html",
    "report_*.png",
    "clean-shards",
)
_KNOWN = {
    "run": (*_WORK, *_RUN_OUTPUTS),
    "demo": ("shards", "clean", *_WORK),
    "shards": ("index.json", "quarantine.parquet", "*.tar"),
}
Kind = Literal["run", "demo", "shards"]


def absolute(path: str | Path) -> Path:
    """``path`` made absolute without resolving symlinks (what the user named)."""
    return Path(os.path.abspath(os.fspath(path)))


def _overlap(a: Path, b: Path) -> str | None:
    """How ``a`` (the output) overlaps ``b`` (a source): 'is', 'contains', 'lies inside', or None."""
    if a == b:
        return "is"
    if a in b.parents:
        return "contains"
    if b in a.parents:
        return "lies inside"
    return None


def check_sources(out: str | Path, sources: Sequence[str | Path | None]) -> None:
    """Refuse an output folder that is, contains or lies inside a source (None entries skipped).

    Paths are compared both as named and with symlinks resolved.

    Raises:
        UsageError: naming both paths.
    """
    if storage.is_uri(out) or any(storage.is_uri(s) for s in sources):
        _check_uri_sources(str(out), sources)
        return
    out_paths = {absolute(out), Path(os.path.realpath(out))}
    for source in sources:
        if source is None:
            continue
        for src in {absolute(source), Path(os.path.realpath(source))}:
            for o in out_paths:
                how = _overlap(o, src)
                if how:
                    raise UsageError(
                        f"--out {out} {how} the source {source}: writing there could destroy "
                        "the data it is made from; choose an --out outside every source"
                    )


# What a run's local mirror does not bring down from object storage: big folders, or work state
# that lives in object storage itself (Ray Train's checkpoints). Their names are kept as empty
# folders, so the claim sees them.
_NOT_PULLED = ("ray_results", LOGS_DIR, "checkpoint", "clean-shards")


def pull_mirror(uri: str, kind: Kind) -> Path:
    """The local folder that stands in for the object-storage OUT ``uri``, refreshed from it.

    The command claims, builds and publishes in this mirror exactly as in a local OUT; then
    :func:`push_mirror` publishes it to ``uri``. The remote is the truth: the mirror is emptied
    first, then the run's small state files (marker, run file, summary...) are downloaded; for a
    shard folder only ``index.json``; other names become empty placeholders.

    Raises:
        UsageError: ``uri`` is an object, not a folder.
    """
    mirror = storage.mirror_dir(uri)
    local = _read_marker(mirror) or {}
    pid = local.get("pid")
    # A run of this machine still building in the mirror: refreshing it would pull the rug.
    running = local.get("state") == "running" and isinstance(pid, int) and pid != os.getpid()
    if running and _pid_alive(pid):
        raise UsageError(
            f"--out {storage.redact(uri)} is being written by another jumpray process on "
            f"this machine (pid {pid}); wait for it or choose another --out"
        )
    shutil.rmtree(mirror, ignore_errors=True)
    names = storage.list_files(uri, recursive=True)
    if not names:
        if storage.exists(uri):
            raise UsageError(
                f"--out {storage.redact(uri)} is a file, not a folder; choose a folder"
            )
        return mirror
    mirror.mkdir(parents=True)
    for name in names:
        top = name.split("/", 1)[0]
        wanted = (kind == "run" and top not in _NOT_PULLED) or (
            kind == "shards" and name == "index.json"
        )
        if wanted:
            storage.pull_file(str(storage.join(uri, name)), mirror / name)
        elif "/" in name:
            (mirror / top).mkdir(exist_ok=True)
        else:
            (mirror / top).touch()
    return mirror


def push_mirror(claim: Claim, *, head: str, skip: Sequence[str] = ()) -> None:
    """Publish the mirror of ``claim.remote``: delete the remote head, upload everything else,
    the head last, then remove remote outputs the mirror no longer holds (a replaced run's)."""
    remote = claim.remote
    if remote is None:
        return
    storage.delete(storage.join(remote, head))
    hidden = [p.name for p in claim.out.iterdir() if p.name.startswith(".")]  # staging, temp
    storage.push_tree(claim.out, remote, head=head, skip=(*skip, *hidden))
    local = {p.name for p in claim.out.iterdir()}
    for name in {n.split("/", 1)[0] for n in storage.list_files(remote, recursive=True)}:
        if name not in local and name not in skip:
            storage.delete(storage.join(remote, name))


def _check_uri_sources(out: str, sources: Sequence[str | Path | None]) -> None:
    """:func:`check_sources` where a URI is involved: prefixes compared as text."""
    o = storage.redact(out).rstrip("/") + "/"
    for source in sources:
        if source is None:
            continue
        src = storage.redact(str(source)).rstrip("/") + "/"
        how = "is" if o == src else "contains" if src.startswith(o) else None
        how = how or ("lies inside" if o.startswith(src) else None)
        if how:
            raise UsageError(
                f"--out {storage.redact(out)} {how} the source {storage.redact(str(source))}: "
                "writing there could destroy the data it is made from; choose an --out "
                "outside every source"
            )


def _input_name(value: str | Path) -> str:
    """An input as recorded in the marker: a URI as named (without secrets), a path absolute."""
    return storage.redact(str(value)) if storage.is_uri(value) else str(absolute(value))


def _check_location(out: Path) -> None:
    """``out`` is a folder or does not exist, and no existing ancestor is a regular file."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out} is a file, not a folder; choose a folder")
    for parent in out.parents:
        if parent.exists():
            if not parent.is_dir():
                raise UsageError(
                    f"--out {out} lies under {parent}, which is a file; choose a folder"
                )
            break


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def _visible(folder: Path) -> list[str]:
    """Entry names of ``folder``; hidden ones (``.name``) are never ours to judge or touch."""
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def _read_marker(folder: Path) -> dict[str, Any] | None:
    path = folder / MARKER
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _legacy_marker(folder: Path) -> dict[str, Any] | None:
    """What a run folder written before :data:`MARKER` existed holds (a finished run)."""
    if (folder / "train_run.json").is_file() or (folder / "train_summary.json").is_file():
        command = "clean" if (folder / "summary.json").is_file() else "train"
        return {"command": command, "state": "done", "inputs": {}}
    if (folder / "summary.json").is_file():
        return {"command": "score", "state": "done", "inputs": {}}
    return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class Claim:
    """The verdict of :func:`claim_output`.

    Attributes:
        out: the output folder, absolute.
        kind: ``run``, ``demo`` or ``shards``.
        command: the command claiming it.
        inputs: what the run reads (recorded, compared when resuming).
        resume: an earlier run of this command is continued.
        replace: an earlier jumpray output is there and will be replaced when this run publishes.
        prior: the marker of the earlier run, if any.
        remote: the object-storage URI OUT is published to; ``out`` is then its local mirror
            (:func:`pull_mirror`), where the command builds everything first.
    """

    out: Path
    kind: Kind
    command: str
    inputs: dict[str, str] = field(default_factory=dict)
    resume: bool = False
    replace: bool = False
    prior: dict[str, Any] | None = None
    remote: str | None = None

    @property
    def label(self) -> str:
        """OUT as the user named it (a URI without secrets, or the absolute path)."""
        return storage.redact(self.remote) if self.remote else str(self.out)


def claim_output(
    out: str | Path,
    *,
    command: str,
    kind: Kind = "run",
    sources: Sequence[str | Path | None] = (),
    inputs: Mapping[str, str | Path | None] | None = None,
    overwrite: bool = False,
    resume: bool = False,
    replace_finished: bool = False,
) -> Claim:
    """Decide whether ``command`` may write ``out`` (module docstring); creates nothing.

    Args:
        out: the output folder.
        command: the command name (``train``, ``clean``, ``shards``...).
        kind: which files a jumpray folder of this kind holds.
        sources: folders and files the command reads.
        inputs: the run's inputs by name (for runs: resuming needs the same ones).
        overwrite: ``--overwrite``: replace an earlier jumpray output.
        resume: ``--resume``: continue an earlier run of this command even if it finished.
        replace_finished: replace a finished run of the same command without ``overwrite``
            (the demo re-running into its own folder).

    Returns:
        A :class:`Claim`.

    Raises:
        UsageError: the folder may not be written; the message names the fix.
    """
    remote = None
    if storage.is_uri(out):
        check_sources(out, sources)
        remote, out = str(out), pull_mirror(str(out), kind)
    else:
        out = absolute(out)
        check_sources(out, sources)
        _check_location(out)
    label = storage.redact(remote) if remote else str(out)
    claim = Claim(
        out=out,
        kind=kind,
        command=command,
        inputs={k: _input_name(v) for k, v in (inputs or {}).items() if v is not None},
        remote=remote,
    )
    if not out.exists():
        if resume:
            raise UsageError(
                f"--resume: {label} does not exist (no earlier run wrote to this --out)"
            )
        return claim
    entries = _visible(out)
    foreign = [e for e in entries if not _matches(e, _KNOWN[kind])]
    if kind == "shards":
        # A shard folder is replaced whole: a hidden file in it (.git, .DS_Store...) would go too.
        foreign += sorted(p.name for p in out.iterdir() if p.name.startswith("."))
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise UsageError(
            f"--out {label} holds files jumpray did not write ({shown}); they are never replaced, "
            "not even with --overwrite: choose a new or empty folder"
        )
    if not entries:
        if resume:
            raise UsageError(f"--resume: {label} is empty (no earlier run wrote to this --out)")
        return claim
    if kind == "shards":
        return _claim_shards(claim, overwrite)
    if kind == "demo":  # only the demo's own shards/ and clean/, each guarded on its own
        return claim
    return _claim_run(claim, overwrite=overwrite, resume=resume, replace_finished=replace_finished)


def _claim_shards(claim: Claim, overwrite: bool) -> Claim:
    out, label = claim.out, claim.label
    index = out / "index.json"
    try:
        ours = str(json.loads(index.read_text()).get("format", "")).startswith("jumpray-shards/")
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise UsageError(
            f"--out {label} exists and is not a shard folder written by jumpray (no index.json "
            "of ours); it is never replaced, not even with --overwrite: choose a new or empty folder"
        )
    if not overwrite:
        raise UsageError(
            f"output folder {label} already exists; pass --overwrite to replace it (the old "
            "folder stays until the new one is complete), or choose another --out"
        )
    claim.replace = True
    return claim


def _claim_run(claim: Claim, *, overwrite: bool, resume: bool, replace_finished: bool) -> Claim:
    out, command, label = claim.out, claim.command, claim.label
    prior = _read_marker(out) or _legacy_marker(out)
    claim.prior = prior
    if prior is None:  # known names but no sign of a jumpray run: a user's files, maybe
        raise UsageError(
            f"--out {label} is not empty and holds no jumpray run ({MARKER} is missing); "
            "choose a new or empty folder"
        )
    state = prior.get("state")
    pid = prior.get("pid")
    if state == "running" and isinstance(pid, int) and pid != os.getpid() and _pid_alive(pid):
        raise UsageError(
            f"--out {label} is being written by another jumpray process (pid {pid}); wait for it "
            "or choose another --out"
        )
    same = prior.get("command") == command
    if same and resume:
        claim.resume = True
        return claim
    # Interrupted (Ctrl-C) or killed while running: re-running the same command continues it.
    resumable = state in ("interrupted", "running")
    if resumable and not overwrite:
        if not same:
            raise UsageError(
                f"--out {label} holds an unfinished `jumpray {prior.get('command')}` run; re-run "
                "that command to resume it, pass --overwrite to replace it, or choose another --out"
            )
        if prior.get("inputs", {}) == claim.inputs:
            claim.resume = True
            return claim
        raise UsageError(
            f"--out {label} holds an unfinished `jumpray {command}` run of other inputs "
            f"({_describe(prior.get('inputs'))}); re-run that command to resume it, pass "
            "--overwrite to start over, or choose another --out"
        )
    published = [e for e in _visible(out) if not _matches(e, _WORK)]
    # A failed run published nothing: starting over loses nothing.
    if overwrite or (same and replace_finished) or not published:
        claim.replace = True
        return claim
    fix = "pass --overwrite to replace it (its files stay until the new run is complete)"
    if command == "train" and same:
        fix += ", --resume to continue it"
    raise UsageError(
        f"--out {label} holds a finished `jumpray {prior.get('command') or 'unknown'}` run; "
        f"{fix}, or choose another --out"
    )


def _describe(inputs: Any) -> str:
    if not isinstance(inputs, dict) or not inputs:
        return "unknown"
    return ", ".join(f"{k} {v}" for k, v in inputs.items())


@contextlib.contextmanager
def _sigint_held() -> Iterator[list[int]]:
    """Hold Ctrl-C and SIGTERM back (recorded, not acted on) while files are renamed into place."""
    if threading.current_thread() is not threading.main_thread():
        yield []
        return
    received: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, lambda signum, frame: received.append(signum)) for s in held}
    try:
        yield received
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class RunFolder:
    """A claimed run folder: work state in place, outputs staged, published at the end.

    Args:
        claim: from :func:`claim_output` (kind ``run``).
    """

    def __init__(self, claim: Claim):
        self.claim = claim
        self.out = claim.out
        self.staging = self.out / f"{_STAGING}{os.getpid()}"
        self.started = time.time()

    def begin(self) -> RunFolder:
        """Create OUT, a fresh staging folder and the marker (state ``running``).

        Raises:
            UsageError: OUT cannot be written, or its disk has less than :data:`MIN_FREE_MB`
                free: said now, not after hours of training.
        """
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(
                f"--out {self.claim.label} cannot be created ({exc.strerror or exc}); "
                "choose a writable folder"
            ) from None
        free_mb = shutil.disk_usage(self.out).free / 2**20
        if free_mb < MIN_FREE_MB:
            raise UsageError(
                f"--out {self.claim.label}: only {free_mb:.0f} MB free on its disk (a run needs "
                f"at least {MIN_FREE_MB} MB for checkpoints and outputs); free space or choose "
                "another --out (JUMPRAY_MIN_FREE_MB sets the floor)"
            )
        for old in self.out.glob(f"{_STAGING}*"):
            pid = old.name.removeprefix(_STAGING)
            if not (pid.isdigit() and _pid_alive(int(pid))) or int(pid) == os.getpid():
                shutil.rmtree(old, ignore_errors=True)
        self.staging.mkdir()
        self._mark("running")
        return self

    @property
    def ray_results(self) -> str | Path:
        """Where Ray Train keeps this run's checkpoints: OUT/ray_results, in object storage when
        OUT is (so a run whose machine is lost resumes from any other)."""
        if self.claim.remote:
            return str(storage.join(self.claim.remote, "ray_results"))
        return self.out / "ray_results"

    @property
    def logs(self) -> Path:
        """OUT/logs/ (created)."""
        path = self.out / LOGS_DIR
        path.mkdir(parents=True, exist_ok=True)
        return path

    def final(self, value: Any) -> Any:
        """``value`` with every staging path in it (strings, nested) turned into its final path
        (in object storage when OUT is there)."""
        if isinstance(value, str):
            return value.replace(str(self.staging), self.claim.label)
        if isinstance(value, Path):
            return Path(self.final(str(value)))
        if isinstance(value, dict):
            return {k: self.final(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.final(v) for v in value)
        return value

    def publish(self, *, head: str) -> None:
        """Move every staged output into OUT; ``head`` (the summary file) goes last.

        Paths inside staged JSON files are rewritten to their final place first. With
        ``claim.replace``, outputs of the earlier run that this run did not write are removed
        (and Ray Train runs other than the current one under ``ray_results/``).
        """
        self._rewrite_json()
        staged = sorted(p.name for p in self.staging.iterdir())
        with _sigint_held() as held:
            (self.out / head).unlink(missing_ok=True)
            if self.claim.replace:
                self._remove_stale(set(staged))
            for name in [n for n in staged if n != head] + [n for n in staged if n == head]:
                replace_tree(self.staging / name, self.out / name)
            shutil.rmtree(self.staging, ignore_errors=True)
            # Object storage: the remote OUT gets the same files, the head last, ray_results
            # excluded (Ray Train writes its checkpoints there itself).
            push_mirror(self.claim, head=head, skip=("ray_results", MARKER))
            self._mark("done")
        if held:
            log.warning("Ctrl-C arrived while the outputs were being published; they are complete")

    def abandon(self, *, interrupted: bool) -> None:
        """Drop the staged outputs; mark the run ``interrupted`` or ``failed`` (OUT keeps its
        published files and work state, so re-running the command resumes)."""
        shutil.rmtree(self.staging, ignore_errors=True)
        with contextlib.suppress(OSError):
            self._mark("interrupted" if interrupted else "failed")

    def _rewrite_json(self) -> None:
        old, new = str(self.staging), self.claim.label
        for path in self.staging.rglob("*.json"):
            if path.stat().st_size > 16 * 1024**2:
                continue
            text = path.read_text()
            if old in text:
                # The JSON-escaped form of a path is the path itself unless it holds \ or ".
                path.write_text(text.replace(old, new))

    def _remove_stale(self, staged: set[str]) -> None:
        for name in _visible(self.out):
            if name in staged or _matches(name, _WORK) or not _matches(name, _KNOWN["run"]):
                continue
            _remove(self.out / name)
        current = None
        with contextlib.suppress(OSError, ValueError, KeyError):
            current = json.loads((self.out / "train_run.json").read_text())["run_name"]
        results = self.out / "ray_results"
        if current and results.is_dir():
            for run in results.iterdir():
                if run.name != current:
                    _remove(run)

    def _mark(self, state: str) -> None:
        body = {
            "command": self.claim.command,
            "state": state,
            "inputs": self.claim.inputs,
            "pid": os.getpid(),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(self.started)),
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        path = self.out / MARKER
        write_json(path, body, indent=1)
        if self.claim.remote:  # the remote OUT says too that a run is on, and how it ended
            storage.push_file(path, str(storage.join(self.claim.remote, MARKER)))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)

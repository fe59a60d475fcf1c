"""Error types shared by every layer. Standard library only.

Every error carries its constructor arguments through pickling (``__reduce__``), so an error
raised in a Ray worker reaches the driver with the same message; without that, each process
boundary wrapped the message once more ("1 config problem: - 1 config problem: ...").
"""

from __future__ import annotations

import errno
from typing import Any

__all__ = [
    "JumprayError",
    "ConfigError",
    "DataError",
    "StorageError",
    "UsageError",
    "TrackingError",
    "user_error",
]


class JumprayError(Exception):
    """Base class of every error jumpray raises on purpose (the CLI prints these without a traceback)."""


class ConfigError(JumprayError, ValueError):
    """A configuration problem. Lists every problem found, each with its dotted key and the fix.

    Args:
        problems: one line per problem, ``"key: what is wrong (allowed: ...)"``.
    """

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        n = len(self.problems)
        head = "1 config problem" if n == 1 else f"{n} config problems"
        super().__init__(head + ":\n" + "\n".join(f"  - {p}" for p in self.problems))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.problems,))


class DataError(JumprayError, ValueError):
    """Bad input data. The message names the file, the sample key, the reason and the fix."""

    def __init__(
        self,
        reason: str,
        *,
        shard: str | None = None,
        key: str | None = None,
        fix: str | None = None,
    ):
        self.reason, self.shard, self.key, self.fix = reason, shard, key, fix
        where = ", ".join(
            p for p in (f"shard {shard}" if shard else "", f"sample {key}" if key else "") if p
        )
        msg = f"{where}: {reason}" if where else reason
        if fix:
            msg += f". Fix: {fix}"
        super().__init__(msg)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_data_error, (type(self), self.reason, self.shard, self.key, self.fix))


def _rebuild_data_error(cls: type[DataError], reason, shard, key, fix) -> DataError:
    return cls(reason, shard=shard, key=key, fix=fix)


class StorageError(DataError):
    """Object storage failed for a named object after the retries, or refused outright (the
    reason names the object, the fix says what to check)."""


class UsageError(JumprayError, ValueError):
    """A command used in a way that would lose data or cannot work: an ``--out`` that would
    overwrite a source or someone else's files, an option value out of range. Names the fix."""


class TrackingError(JumprayError, RuntimeError):
    """The experiment tracker failed and ``tracking.strict`` is on, or a logged model could not
    be loaded."""


def user_error(exc: BaseException) -> JumprayError | None:
    """The innermost :class:`JumprayError` inside ``exc`` (Ray wraps remote errors), or None.

    Ray re-raises a worker's error as a class that is both its own error type and the original
    one, whose message carries the whole remote traceback; the original is its ``cause``. This
    follows ``cause`` / ``__cause__`` and Ray Train's ``worker_failures`` to the error raised in
    the worker, whose message is the one paragraph meant for the user.
    """
    seen: set[int] = set()
    todo: list[Any] = [exc]
    found: list[JumprayError] = []
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, JumprayError):
            found.append(e)
        todo += [getattr(e, "cause", None), getattr(e, "__cause__", None)]
        failures = getattr(e, "worker_failures", None)
        if isinstance(failures, dict):
            todo += list(failures.values())
    # Ray's wrapper classes (defined in ray.exceptions) are JumprayErrors too: prefer ours.
    own = [e for e in found if type(e).__module__.startswith("jumpray")]
    if own or found:
        return (own or found)[0]
    return _unwritable(exc)


# A write that failed for a reason the user fixes (space, permissions), not a bug.
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.EPERM}


def _unwritable(exc: BaseException) -> UsageError | None:
    """A full or read-only disk as a :class:`UsageError` naming the file, else None."""
    if not isinstance(exc, OSError) or exc.errno not in _WRITE_ERRNOS:
        return None
    where = exc.filename or "the output folder"
    fix = "free space there" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else "make it writable"
    return UsageError(
        f"cannot write {where}: {exc.strerror}; {fix}, or choose another --out (nothing "
        "half-written is left under a final name; re-running resumes)"
    )

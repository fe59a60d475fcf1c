"""Error types shared by every layer. Standard library only."""

from __future__ import annotations

__all__ = ["JumprayError", "ConfigError", "DataError", "TrackingError"]


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


class TrackingError(JumprayError, RuntimeError):
    """The experiment tracker failed and ``tracking.strict`` is on."""

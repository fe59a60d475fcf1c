"""One logging path for the library: module loggers, set up once by the entry points.

The console belongs to jumpray: its own log lines (stderr) and summaries (:func:`echo`, stdout).
Everything else a run prints, Ray's above all (Data execution plans, worker output forwarded to
the driver, core-worker lines written straight to file descriptor 2, the token-auth warning),
MLflow's and Python warnings, goes to a log file while :func:`capture_to` is active: it points
file descriptors 1 and 2 at the file and keeps jumpray's lines on duplicates of the original
descriptors. ``--verbose`` leaves everything on the console instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["get_logger", "setup_logging", "capture_to", "echo", "console_is_tty", "alias_path"]

_FORMAT = "%(asctime)s %(levelname).1s %(name)s: %(message)s"

# While capture_to() is active: jumpray's own streams (duplicates of the original stdout/stderr).
_console: dict[str, IO[str] | None] = {"out": None, "err": None}


def get_logger(name: str) -> logging.Logger:
    """Return the logger for a module (``get_logger(__name__)``)."""
    return logging.getLogger(name)


# Path prefixes shown under another name (a run's staging folder under the folder it is published
# to, so a log line names the place the user will find the file).
_aliases: dict[str, str] = {}


@contextlib.contextmanager
def alias_path(shown_as: str | Path, path: str | Path) -> Iterator[None]:
    """While active, jumpray's log lines show ``path`` (a prefix) as ``shown_as``."""
    _aliases[str(path)] = str(shown_as)
    try:
        yield
    finally:
        _aliases.pop(str(path), None)


class _AliasingHandler(logging.StreamHandler):
    """A stream handler that applies :func:`alias_path` to each line."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        for old, new in _aliases.items():
            text = text.replace(old, new)
        return text


class _ConsoleHandler(_AliasingHandler):
    """Writes to jumpray's console stderr of the moment."""

    _jumpray = True

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = _console["err"] or sys.stderr
        super().emit(record)


def setup_logging(level: str | int | None = None) -> None:
    """Configure the ``jumpray`` logger tree once: to the console's stderr, short timestamps.

    Args:
        level: a logging level name or number; defaults to ``JUMPRAY_LOG_LEVEL`` or INFO.
    """
    level = level or os.environ.get("JUMPRAY_LOG_LEVEL", "INFO")
    root = logging.getLogger("jumpray")
    root.setLevel(level)
    if not any(getattr(h, "_jumpray", False) for h in root.handlers):
        handler = _ConsoleHandler()
        handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
        root.addHandler(handler)
    root.propagate = False


def echo(text: str = "") -> None:
    """Print a line of jumpray's own output (a summary) to the console's stdout."""
    stream = _console["out"] or sys.stdout
    print(text, file=stream, flush=True)


def console_is_tty() -> bool:
    """True when jumpray's console stderr is a terminal (colour codes are wanted only there)."""
    stream = _console["err"] or sys.stderr
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _own_stream(stream: IO[str], fd: int) -> tuple[IO[str], bool]:
    """A stream that keeps writing where ``stream`` writes after ``fd`` is redirected.

    Returns (the stream, whether it was opened here and must be closed).
    """
    try:
        uses_fd = stream.fileno() == fd
    except (AttributeError, OSError, ValueError):
        uses_fd = False  # a pytest capture object or a StringIO: not affected by dup2
    if not uses_fd:
        return stream, False
    stream.flush()
    return os.fdopen(os.dup(fd), "w", buffering=1, encoding="utf-8", errors="replace"), True


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _plain_text_records(
    factory: Callable[..., logging.LogRecord],
) -> Callable[..., logging.LogRecord]:
    """A log-record factory that strips terminal colour codes from every message (Ray's driver
    logs the dashboard URL in bold green whatever the output is)."""

    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to the handler's own error path
            return record
        if "\x1b[" in message:
            record.msg, record.args = _ANSI.sub("", message), None
        return record

    return make


@contextlib.contextmanager
def capture_to(path: str | Path) -> Iterator[Path]:
    """Send everything but jumpray's own lines to ``path`` (appended) while active.

    jumpray's log lines are also copied into the file, so it is the complete record of the run.
    Nested use keeps the outer capture.

    Yields:
        ``path``.
    """
    path = Path(path)
    if _console["err"] is not None:
        yield path
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    out, close_out = _own_stream(sys.stdout, 1)
    err, close_err = _own_stream(sys.stderr, 2)
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    log_file = open(path, "a", buffering=1, encoding="utf-8", errors="replace")  # noqa: SIM115
    to_file = _AliasingHandler(log_file)
    to_file.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
    jumpray_log = logging.getLogger("jumpray")
    # Colour codes in a file are noise (Ray colours the prefix of forwarded worker lines).
    previous_colour = os.environ.get("RAY_COLOR_PREFIX")
    os.environ["RAY_COLOR_PREFIX"] = "0"
    previous_factory = logging.getLogRecordFactory()
    logging.setLogRecordFactory(_plain_text_records(previous_factory))
    try:
        os.dup2(log_file.fileno(), 1)
        os.dup2(log_file.fileno(), 2)
        _console["out"], _console["err"] = out, err
        jumpray_log.addHandler(to_file)
        yield path
    finally:
        jumpray_log.removeHandler(to_file)
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        _console["out"] = _console["err"] = None
        for fd, dup in saved.items():
            os.dup2(dup, fd)
            os.close(dup)
        log_file.close()
        for stream, owned in ((out, close_out), (err, close_err)):
            if owned:
                stream.close()
        logging.setLogRecordFactory(previous_factory)
        if previous_colour is None:
            os.environ.pop("RAY_COLOR_PREFIX", None)
        else:
            os.environ["RAY_COLOR_PREFIX"] = previous_colour

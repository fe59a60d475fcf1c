"""One logging path for the library: module loggers, set up once by the entry points."""

from __future__ import annotations

import logging
import os
import sys

__all__ = ["get_logger", "setup_logging"]

_FORMAT = "%(asctime)s %(levelname).1s %(name)s: %(message)s"


def get_logger(name: str) -> logging.Logger:
    """Return the logger for a module (``get_logger(__name__)``)."""
    return logging.getLogger(name)


def setup_logging(level: str | int | None = None) -> None:
    """Configure the ``jumpray`` logger tree once: to stderr, short timestamps.

    Args:
        level: a logging level name or number; defaults to ``JUMPRAY_LOG_LEVEL`` or INFO.
    """
    level = level or os.environ.get("JUMPRAY_LOG_LEVEL", "INFO")
    root = logging.getLogger("jumpray")
    root.setLevel(level)
    if not any(getattr(h, "_jumpray", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT, datefmt="%H:%M:%S"))
        handler._jumpray = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.propagate = False

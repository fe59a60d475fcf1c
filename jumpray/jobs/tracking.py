"""``jumpray tracking replay``: send MLflow records a run saved while the server was down.

Examples::

    jumpray tracking replay runs/jt/mlflow_pending
    jumpray tracking replay runs/jt/mlflow_pending/20261127-221500-3f2a1c.jsonl --uri http://mlflow:5000

A job whose tracking server was unreachable at its end saves the records it could not send to
``OUT/mlflow_pending/`` (docs/architecture.md, 'Tracking outages'). This sends them, oldest first,
to the run they belong to (creating it if the outage began before it was created) and removes
what was sent. Exit 0 when everything was sent, 1 when the server is still unreachable (the rest
stays on disk: run it again later).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from jumpray.errors import UsageError
from jumpray.log import echo

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    replay = sub.add_parser(
        "replay", help="send the records a run saved in OUT/mlflow_pending/ to the MLflow server"
    )
    replay.add_argument("path", type=Path, help="OUT/mlflow_pending, or one .jsonl file in it")
    replay.add_argument(
        "--uri", default=None, help="the tracking server (default: the one recorded in the file)"
    )


def run(args: argparse.Namespace) -> int:
    """Replay; print what was sent, refused and left; returns 0 when nothing is left."""
    from jumpray.tracking import replay

    if not args.path.exists():
        raise UsageError(f"{args.path} does not exist (nothing saved, or already sent)")
    try:
        result = replay(args.path, uri=args.uri)
    except ValueError as exc:  # not a pending file
        raise UsageError(str(exc)) from None
    runs = ", ".join(sorted({r for r in result.runs.values() if r})) or "none"
    echo(f"jumpray tracking replay: {result.sent} records sent (runs: {runs})")
    for file, what, why in result.refused:
        echo(f"  refused by the server, dropped: {what} of {file}: {why}")
    if result.left:
        echo(
            f"  {result.left} records NOT sent: {result.error}; they stay in {args.path}, "
            "run this again when the server is back"
        )
        return 1
    return 0

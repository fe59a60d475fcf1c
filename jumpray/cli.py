"""The ``jumpray`` console script: one parser, one subcommand per job.

Each job lives in ``jumpray/jobs/<name>.py`` and exposes ``add_arguments(parser)`` and
``run(args) -> int``. The scripts under ``pipelines/`` call :func:`main` with the same arguments,
so the console script and the pipelines are two doors to the same functions.

Errors the user can fix (:class:`~jumpray.errors.JumprayError`, also when Ray raised it in a
worker) print one paragraph and exit 2; a traceback is shown only with ``--debug``. Ctrl-C stops
a command within seconds (Ray Train's own handler is kept out, see jumpray.train.launch) with
exit 130 and nothing half-published; a second Ctrl-C exits at once. ``--debug`` and
``--verbose`` (Ray's output on the console instead of OUT/logs/) go before or after the command.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import signal
import sys
import threading
import traceback
from collections.abc import Sequence

from jumpray.errors import user_error

__all__ = ["main", "build_parser", "COMMANDS", "add_config_arguments", "add_overwrite_argument"]

# command name -> (module under jumpray.jobs, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "shards": (
        "shards",
        "convert a dataset to WebDataset shards (fashion-mnist, from-list, from-folder)",
    ),
    "local": ("local", "single-process Jump-teaching (or a baseline) on Fashion-MNIST, no Ray"),
    "train": ("train", "train on shards with Ray Train (Jump-teaching or a baseline)"),
    "score": ("score", "score every sample of a shard folder with a trained checkpoint"),
    "clean": ("clean", "train + score + decide: label table, cleaned shards, report"),
    "tune": ("tune", "Ray Tune (ASHA) search over the jump interval, K, tau and lr"),
    "bench": ("bench", "Jump-teaching against CE, Co-teaching, JoCoR and cleanlab, side by side"),
    "demo": ("demo", "the whole clean job on Fashion-MNIST with injected noise, locally"),
    "tracking": ("tracking", "replay: send MLflow records a run saved while the server was down"),
}


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every training-type command takes: ``--config FILE`` and ``key=value`` overrides."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="a YAML config, or the short name of a shipped one (e.g. clothing1m; see configs/)",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key.sub=value",
        help="config overrides, e.g. train.epochs=5 jump.interval=2",
    )


def add_overwrite_argument(parser: argparse.ArgumentParser) -> None:
    """``--overwrite``: the one rule for replacing an earlier output (jumpray.runs)."""
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier jumpray output in --out (kept until the new one is complete; "
        "folders holding other files are never replaced)",
    )


def _add_global_flags(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    """``--debug`` and ``--verbose``, accepted before the command and after it."""
    # After the command, a flag left out must not reset the one given before it.
    default = False if top else argparse.SUPPRESS
    parser.add_argument("--debug", action="store_true", default=default, help="show tracebacks")
    parser.add_argument(
        "--verbose",
        action="store_true",
        default=default,
        help="show Ray's own output on the console instead of writing it to OUT/logs/",
    )
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _add_global_flags(sub)


def available_commands() -> dict[str, tuple[str, str]]:
    """The commands whose job module exists in this installation."""
    return {
        n: v
        for n, v in COMMANDS.items()
        if importlib.util.find_spec(f"jumpray.jobs.{v[0]}") is not None
    }


def _job(module: str):
    return importlib.import_module(f"jumpray.jobs.{module}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if a in COMMANDS), None)
    full = build_parser(command)
    args = full.parse_args(argv)
    if not args.command:
        full.print_help()
        return 2
    from jumpray.log import setup_logging

    setup_logging()
    received: list[int] = []
    restore = _install_sigint(received)
    try:
        return int(_job(COMMANDS[args.command][0]).run(args) or 0)
    except KeyboardInterrupt:
        how = "terminated (SIGTERM)" if signal.SIGTERM in received else "interrupted"
        print(
            f"jumpray {args.command}: {how}; re-run the same command to resume",
            file=sys.stderr,
        )
        return 143 if signal.SIGTERM in received else 130
    except Exception as exc:
        user = user_error(exc)
        if user is None:
            raise
        if args.debug:
            traceback.print_exc()
        print(f"jumpray {args.command}: error: {user}", file=sys.stderr)
        return 2
    finally:
        restore()


def _install_sigint(received: list[int]):
    """Ctrl-C or SIGTERM (a scheduler or ``kill`` stopping the job): the first raises
    KeyboardInterrupt, so the job cleans up as for Ctrl-C (staged outputs dropped, the run marked
    interrupted, a Ray it started shut down); a second exits at once.

    Args:
        received: the signals received are appended here.

    Returns:
        A function that puts the previous handlers back.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handler(signum, frame):
        received.append(signum)
        if len(received) > 1:
            os._exit(143 if signum == signal.SIGTERM else 130)
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    return lambda: [signal.signal(sig, h) for sig, h in previous.items()]


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Build the parser; only the chosen command's job module is imported (keeps --help fast)."""
    parser = argparse.ArgumentParser(
        prog="jumpray",
        description="Find and learn through wrong labels in web-crawled image data (Jump-teaching on Ray).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in available_commands().items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            _job(module).add_arguments(p)
    _add_global_flags(parser, top=True)
    return parser


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

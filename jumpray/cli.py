"""The ``jumpray`` console script: one parser, one subcommand per job.

Each job lives in ``jumpray/jobs/<name>.py`` and exposes ``add_arguments(parser)`` and
``run(args) -> int``. The scripts under ``pipelines/`` call :func:`main` with the same arguments,
so the console script and the pipelines are two doors to the same functions.

Errors the user can fix (:class:`~jumpray.errors.JumprayError`) print one paragraph and exit 2; a
traceback is shown only with ``--debug``.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
import traceback
from collections.abc import Sequence

from jumpray.errors import JumprayError

__all__ = ["main", "build_parser", "COMMANDS"]

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
}


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every training-type command takes: ``--config FILE`` and ``key=value`` overrides."""
    parser.add_argument("--config", metavar="FILE", help="YAML config (see configs/)")
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key.sub=value",
        help="config overrides, e.g. train.epochs=5 jump.interval=2",
    )


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
    parser = argparse.ArgumentParser(prog="jumpray", add_help=False)
    parser.add_argument("--debug", action="store_true")
    known, _ = parser.parse_known_args(argv)
    command = next((a for a in argv if a in COMMANDS), None)
    full = build_parser(command)
    args = full.parse_args(argv)
    if not args.command:
        full.print_help()
        return 2
    from jumpray.log import setup_logging

    setup_logging()
    try:
        return int(_job(COMMANDS[args.command][0]).run(args) or 0)
    except JumprayError as exc:
        if known.debug:
            traceback.print_exc()
        print(f"jumpray {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"jumpray {args.command}: interrupted", file=sys.stderr)
        return 130


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Build the parser; only the chosen command's job module is imported (keeps --help fast)."""
    parser = argparse.ArgumentParser(
        prog="jumpray",
        description="Find and learn through wrong labels in web-crawled image data (Jump-teaching on Ray).",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in available_commands().items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == command:
            _job(module).add_arguments(p)
    return parser


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

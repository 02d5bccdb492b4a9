"""The ``qroute`` command: the composition root, and the one place that imports the apps.

One module per command group (``index``, ``router``, ``review``, ``evaluation``,
``training``) lists
its commands: each adds its flags and names the function that runs it. Heavy imports
happen inside those functions, so ``qroute --help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from qroute.cli import evaluation, index, review, router, training
from qroute.cli.common import Command, HelpFormatter
from qroute.errors import QrouteError

__all__ = ["COMMANDS", "main"]

# The dispatch table, in the order `qroute --help` lists the commands.
COMMANDS: dict[str, Command] = {
    command.name: command
    for group in (index, router, review, evaluation, training)
    for command in group.COMMANDS
}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("qroute")
    except PackageNotFoundError:  # a source tree that was never installed
        return "unknown (not installed)"


def _verbosity(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """-v/-q, before the command (``qroute -v index``) or after it (``qroute index -v``):
    the subcommand's copy defaults to SUPPRESS so that it does not reset the other."""
    default: object = argparse.SUPPRESS if suppress else False
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "-v", "--verbose", action="store_true", default=default, help="log debug messages"
    )
    group.add_argument(
        "-q", "--quiet", action="store_true", default=default, help="log only warnings and errors"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qroute",
        description="Label queries with the domain of their nearest labelled examples.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"qroute {_version()}")
    _verbosity(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS.values():
        subparser = sub.add_parser(command.name, help=command.help, formatter_class=HelpFormatter)
        command.add_arguments(subparser)
        _verbosity(subparser, suppress=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from tqdm.contrib.logging import logging_redirect_tqdm

    try:
        # Log lines go through tqdm.write while a progress bar is drawn, not across it.
        with logging_redirect_tqdm():
            return COMMANDS[args.command].run(args)
    except QrouteError as exc:
        print(f"qroute: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # The environment refused something the error names (a file, a port): a message,
        # not a traceback.
        print(f"qroute: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

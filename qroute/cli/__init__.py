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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qroute",
        description="Label queries with the domain of their nearest labelled examples.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS.values():
        command.add_arguments(
            sub.add_parser(command.name, help=command.help, formatter_class=HelpFormatter)
        )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
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

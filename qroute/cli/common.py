"""What every command group shares: the command record, the --config flag, help format."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from qroute.config import Settings, load_settings

__all__ = ["Command", "HelpFormatter", "settings_of", "with_config"]


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Every --help shows each flag's default, where it has one worth saying."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default in (None, False) or action.default == argparse.SUPPRESS:
            return action.help
        return super()._get_help_string(action)


@dataclass(frozen=True)
class Command:
    """One subcommand: its name and help, how it adds its flags, and what runs it
    (returning the exit code)."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


def with_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        help="YAML config file (default: $QROUTE_CONFIG, else ./qroute.yaml if present)",
    )


def settings_of(args: argparse.Namespace) -> Settings:
    """The settings a command runs with: its --config file and the QROUTE_* environment."""
    return load_settings(args.config)

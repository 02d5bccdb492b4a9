"""What every command group shares: the command record, the --config flag, help format,
reading a labelled file."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from qroute.config import Settings, load_settings
from qroute.types import display_width, pad

if TYPE_CHECKING:
    from qroute.table import TableReport
    from qroute.types import Example

__all__ = [
    "Command",
    "HelpFormatter",
    "print_json",
    "read_labelled",
    "render_table",
    "settings_of",
    "with_config",
    "with_json",
]


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


def read_labelled(path: str, settings: Settings) -> tuple[list[Example], TableReport]:
    """The accepted rows of a labelled file, saying on stderr how many were left out."""
    from qroute.table import iter_examples, scan_table

    report = scan_table(path, settings.table)
    report.raise_for_errors()
    note = report.dropped_note()
    if note:
        print(f"note: {note}", file=sys.stderr)
    return [e for chunk in iter_examples(report, settings.table) for e in chunk], report


def with_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", action="store_true", help="print one JSON document on stdout instead"
    )


def print_json(document: Any) -> None:
    print(json.dumps(document, ensure_ascii=False, indent=2, default=str))


def render_table(header: Sequence[str], rows: Sequence[Sequence[str]], right: str = "") -> str:
    """Columns padded by display width, so that Korean cells line up; the columns whose
    index is in ``right`` (e.g. "23") are right-aligned."""
    widths = [
        max(display_width(str(cell)) for cell in column)
        for column in zip(header, *rows, strict=True)
    ]
    lines = []
    for row in (header, *rows):
        cells = [
            pad(str(cell), width, ">" if str(i) in right else "<")
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)

"""``qroute index``: validate a table, index and publish it; list, roll back versions."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses

from qroute.cli.common import Command, print_json, render_table, settings_of, with_config, with_json
from qroute.config import Settings
from qroute.errors import ConfigError

__all__ = ["COMMANDS"]


def _arguments(index: argparse.ArgumentParser) -> None:
    with_config(index)
    index.add_argument(
        "table", nargs="?", help="CSV, TSV, JSONL or Parquet file with text and label columns"
    )
    index.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    index.add_argument(
        "--check", action="store_true", help="print the validation report, write nothing"
    )
    index.add_argument("--encoding", help="force the table's text encoding (e.g. cp949)")
    index.add_argument(
        "--full", action="store_true", help="re-embed every row even if the encoder is unchanged"
    )
    index.add_argument(
        "--replace-mode",
        action="store_true",
        help="publish even though the live version was built in another retrieval mode "
        "(with --rollback: even though the target was built with another encoder, other "
        "n-grams or without the vectors retrieval.mode searches)",
    )
    index.add_argument(
        "--holdout", help="labelled file whose accuracy must not drop (index.holdout_tolerance)"
    )
    index.add_argument(
        "--rollback", action="store_true", help="publish the previous kept version again"
    )
    index.add_argument("--list", action="store_true", help="list the index versions")
    index.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar="TABLE",
        help="another table whose rows are added (e.g. `qroute review export`); repeatable",
    )
    with_json(index)


def _list(settings: Settings, *, as_json: bool) -> int:
    from qroute_indexer import list_versions

    rows = asyncio.run(list_versions(settings))
    store = settings.store
    where = f"collection {store.collection!r} in {store.location}"
    if as_json:
        print_json(
            {
                "collection": store.collection,
                "location": store.location,
                "versions": [dataclasses.asdict(row) for row in rows],
            }
        )
        return 0
    if not rows:
        print(f"no index versions in {where}")
        return 0
    print(f"index versions of {where}:")
    header = ("version", "state", "points", "labels", "head", "created", "encoder")
    table = []
    for row in rows:
        state = (
            "published*"
            if row.current
            else "rollback"
            if row.rollback_target
            else "kept"
            if row.published
            else "draft"
        )
        points = "?" if row.points is None else str(row.points)
        head = "yes" if row.head else "no"
        table.append((row.name, state, points, str(row.labels), head, row.created_at, row.encoder))
    print(render_table(header, table, right="23"))
    return 0


# What only a run that reads a table uses: given with --list or --rollback, it would be
# silently ignored (``TABLE --rollback`` rolled back instead of indexing).
_TABLE_FLAGS = (
    ("table", "TABLE"),
    ("check", "--check"),
    ("full", "--full"),
    ("holdout", "--holdout"),
    ("extra", "--extra"),
    ("encoding", "--encoding"),
)


def _refuse_conflicts(args: argparse.Namespace) -> None:
    """ConfigError naming the flags when --list or --rollback comes with what it ignores."""
    if args.list and (args.rollback or args.replace_mode):
        other = "--rollback" if args.rollback else "--replace-mode"
        raise ConfigError(f"--list and {other} do not go together")
    action = "--list" if args.list else "--rollback" if args.rollback else None
    if action is None:
        return
    given = [name for attr, name in _TABLE_FLAGS if getattr(args, attr)]
    if given:
        raise ConfigError(
            f"{action} takes no {', '.join(given)} (they index a table; run {action} on its own)"
        )


def _index(args: argparse.Namespace) -> int:
    from qroute_indexer import rollback, run_index

    from qroute.table import scan_table

    _refuse_conflicts(args)
    settings = settings_of(args)
    if args.encoding:
        table = settings.table.model_copy(update={"encoding": args.encoding})
        settings = settings.model_copy(update={"table": table})
    if args.list:
        return _list(settings, as_json=args.json)
    if args.rollback:
        was, now = asyncio.run(rollback(settings, replace_mode=args.replace_mode))
        if args.json:
            print_json({"published": now, "was": was})
        else:
            print(f"rolled back: {now} is published again (was {was})")
        return 0
    if not args.table:
        raise ConfigError("qroute index needs a TABLE (or --list / --rollback)")
    if args.check:
        scanned = scan_table(args.table, settings.table, args.extra)
        print(scanned.render(limit=1000))
        return 1 if scanned.errors else 0
    report = asyncio.run(
        run_index(
            settings,
            args.table,
            progress=not args.no_progress,
            full=args.full,
            holdout=args.holdout,
            replace_mode=args.replace_mode,
            extra=args.extra,
        )
    )
    if args.json:
        print_json({k: v for k, v in dataclasses.asdict(report).items() if k != "table"})
        return 0
    replaced = f", replacing {report.previous}" if report.previous else ""
    print(
        f"published {report.version}: {report.rows} rows, {len(report.labels)} labels{replaced} "
        f"({report.mode}: {report.embedded} embedded, {report.reused} reused)"
    )
    if report.dropped:
        print(f"dropped old versions: {', '.join(report.dropped)}")
    return 0


COMMANDS = (Command("index", "index a labelled table and publish it", _arguments, _index),)

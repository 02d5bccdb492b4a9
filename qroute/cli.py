"""The ``qroute`` command: the composition root. Apps are imported inside the
subcommand that needs them, so ``qroute --help`` stays fast and nothing imports this."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from qroute.config import Settings, load_settings
from qroute.errors import ConfigError, QrouteError

__all__ = ["main"]

DEFAULT_ADDRESS = "127.0.0.1:50051"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="qroute",
        description="Label queries with the domain of their nearest labelled examples.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument(
            "--config",
            help="YAML config file (default: $QROUTE_CONFIG, else ./qroute.yaml if present)",
        )
        return p

    index = with_config(sub.add_parser("index", help="index a labelled table and publish it"))
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
        "--holdout", help="labelled file whose accuracy must not drop (index.holdout_tolerance)"
    )
    index.add_argument(
        "--rollback", action="store_true", help="publish the previous kept version again"
    )
    index.add_argument("--list", action="store_true", help="list the index versions")

    with_config(sub.add_parser("serve", help="run the gRPC router"))

    classify = sub.add_parser("classify", help="ask a running router to label texts")
    classify.add_argument("texts", nargs="+", metavar="TEXT")
    classify.add_argument(
        "--address", default=DEFAULT_ADDRESS, help=f"router address (default {DEFAULT_ADDRESS})"
    )
    classify.add_argument("--json", action="store_true", help="one JSON object per line")
    classify.add_argument(
        "--explain", action="store_true", help="print every field of the decision"
    )
    classify.add_argument(
        "--allowed-labels", default="", help="comma-separated labels the answer must be among"
    )
    classify.add_argument(
        "--top-labels", type=int, default=0, help="return this many ranked labels"
    )
    classify.add_argument("--timeout", type=float, default=30.0, help="seconds (default 30)")

    health = sub.add_parser("health", help="exit 0 when the router reports SERVING")
    health.add_argument(
        "--address", default=DEFAULT_ADDRESS, help=f"router address (default {DEFAULT_ADDRESS})"
    )
    health.add_argument("--timeout", type=float, default=5.0)
    return parser


def _index(settings: Settings, args: argparse.Namespace) -> int:
    from indexer import list_versions, rollback, run_index
    from qroute.table import scan_table

    if args.encoding:
        table = settings.table.model_copy(update={"encoding": args.encoding})
        settings = settings.model_copy(update={"table": table})
    if args.list:
        rows = asyncio.run(list_versions(settings))
        header = ("version", "state", "points", "labels", "created", "encoder")
        print("{:<24} {:<10} {:>8} {:>6}  {:<25} {}".format(*header))
        for row in rows:
            state = "published*" if row.current else ("kept" if row.published else "draft")
            points = "?" if row.points is None else str(row.points)
            values = (row.name, state, points, row.labels, row.created_at, row.encoder)
            print("{:<24} {:<10} {:>8} {:>6}  {:<25} {}".format(*values))
        return 0
    if args.rollback:
        was, now = asyncio.run(rollback(settings))
        print(f"rolled back: {now} is published again (was {was})")
        return 0
    if not args.table:
        raise ConfigError("qroute index needs a TABLE (or --list / --rollback)")
    if args.check:
        scanned = scan_table(args.table, settings.table)
        print(scanned.render(limit=1000))
        return 1 if scanned.errors else 0
    report = asyncio.run(
        run_index(
            settings,
            args.table,
            progress=not args.no_progress,
            full=args.full,
            holdout=args.holdout,
        )
    )
    replaced = f", replacing {report.previous}" if report.previous else ""
    print(
        f"published {report.version}: {report.rows} rows, {len(report.labels)} labels{replaced} "
        f"({report.mode}: {report.embedded} embedded, {report.reused} reused)"
    )
    if report.dropped:
        print(f"dropped old versions: {', '.join(report.dropped)}")
    return 0


def _serve(settings: Settings, config: str | None) -> int:
    from qroute.config import config_file
    from server.app import serve

    asyncio.run(serve(settings, config_file(config)))
    return 0


def _classify(args: argparse.Namespace) -> int:
    import grpc

    from server.client import classify, format_response

    try:
        allowed = [label for label in args.allowed_labels.split(",") if label]
        responses = classify(args.address, list(args.texts), args.timeout, allowed, args.top_labels)
    except grpc.RpcError as exc:
        print(f"qroute: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    for text, response in zip(args.texts, responses, strict=True):
        print(format_response(text, response, as_json=args.json, explain=args.explain))
    return 0


def _health(args: argparse.Namespace) -> int:
    import grpc

    from server.client import check_health

    try:
        status = check_health(args.address, args.timeout)
    except grpc.RpcError as exc:
        print(f"qroute: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    print(status)
    return 0 if status == "SERVING" else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "classify":
            return _classify(args)
        if args.command == "health":
            return _health(args)
        settings = load_settings(args.config)
        if args.command == "index":
            return _index(settings, args)
        return _serve(settings, args.config)
    except QrouteError as exc:
        print(f"qroute: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

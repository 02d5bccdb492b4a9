"""``qroute serve`` runs the router; ``classify`` and ``health`` ask a running one."""

from __future__ import annotations

import argparse
import asyncio
import sys

from qroute.cli.common import DEFAULT_ADDRESS, Command, settings_of, with_config

__all__ = ["COMMANDS"]


def _serve(args: argparse.Namespace) -> int:
    from qroute_server.app import serve

    from qroute.config import config_file

    asyncio.run(serve(settings_of(args), config_file(args.config)))
    return 0


def _classify_arguments(classify: argparse.ArgumentParser) -> None:
    classify.add_argument("texts", nargs="+", metavar="TEXT")
    classify.add_argument("--address", default=DEFAULT_ADDRESS, help="router address")
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
    classify.add_argument("--timeout", type=float, default=30.0, help="seconds")


def _classify(args: argparse.Namespace) -> int:
    import grpc
    from qroute_server.client import classify, format_response

    try:
        allowed = [label for label in args.allowed_labels.split(",") if label]
        responses = classify(args.address, list(args.texts), args.timeout, allowed, args.top_labels)
    except grpc.RpcError as exc:
        print(f"qroute: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    for text, response in zip(args.texts, responses, strict=True):
        print(format_response(text, response, as_json=args.json, explain=args.explain))
    return 0


def _health_arguments(health: argparse.ArgumentParser) -> None:
    health.add_argument("--address", default=DEFAULT_ADDRESS, help="router address")
    health.add_argument("--timeout", type=float, default=5.0, help="seconds")


def _health(args: argparse.Namespace) -> int:
    import grpc
    from qroute_server.client import check_health

    try:
        status = check_health(args.address, args.timeout)
    except grpc.RpcError as exc:
        print(f"qroute: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    print(status)
    return 0 if status == "SERVING" else 1


COMMANDS = (
    Command("serve", "run the gRPC router", with_config, _serve),
    Command("classify", "ask a running router to label texts", _classify_arguments, _classify),
    Command("health", "exit 0 when the router reports SERVING", _health_arguments, _health),
)

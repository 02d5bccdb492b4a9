"""``qroute serve`` runs the router; ``classify``, ``info`` and ``health`` ask a running
one, through the client (``qroute_client``) with the address, TLS and token of
``client.*`` (default: dial ``server.bind``); flags override them."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from qroute.cli.common import Command, print_json, settings_of, with_config, with_json
from qroute.errors import ConfigError
from qroute.types import pad

if TYPE_CHECKING:
    from qroute_client import Classification, Client, IndexInfo, LabelScore, QrouteClientError

__all__ = ["COMMANDS", "format_info", "format_response"]


def _serve(args: argparse.Namespace) -> int:
    from qroute_server.app import run

    from qroute.configfile import config_file

    code: int = run(settings_of(args), config_file(args.config))
    return code


def _connection_arguments(parser: argparse.ArgumentParser) -> None:
    with_config(parser)
    parser.add_argument(
        "--address", help="router host:port (default: client.address, else server.bind)"
    )
    parser.add_argument(
        "--tls",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="dial with TLS (default: client.tls)",
    )
    parser.add_argument("--ca-file", help="CA certificate(s) to verify the router by (PEM)")
    parser.add_argument("--cert-file", help="the client's certificate for mTLS (PEM)")
    parser.add_argument("--key-file", help="the client's private key for mTLS (PEM)")
    parser.add_argument(
        "--server-name",
        help="name to verify the router's certificate by (default: client.server_name, "
        "else the address's host)",
    )


def _client(args: argparse.Namespace, timeout: float | None) -> Client:
    """A client from the settings (``client.*``, ``server.bind``), flags overriding them."""
    from qroute_client import Client

    if timeout is not None and not timeout > 0:  # NaN too
        # Checked here, not by the client, whose error would blame the client settings.
        raise ConfigError(f"--timeout must be a positive number of seconds, got {timeout:g}")
    settings = settings_of(args)
    c = settings.client
    cert_file = args.cert_file or c.cert_file
    key_file = args.key_file or c.key_file
    try:
        return Client(
            args.address or settings.client_address,
            timeout=timeout if timeout is not None else c.timeout_s,
            tls=c.tls if args.tls is None else args.tls,
            ca_file=args.ca_file or c.ca_file,
            cert_file=cert_file,
            key_file=key_file,
            server_name=args.server_name or c.server_name,
            token=c.token.get_secret_value() if c.token is not None else None,
        )
    except ValueError as exc:  # an unreadable certificate file, a half mTLS pair
        raise ConfigError(f"client settings: {exc}") from None


def _classify_arguments(classify: argparse.ArgumentParser) -> None:
    classify.add_argument(
        "texts", nargs="*", metavar="TEXT", help="texts to label; - reads one per line from stdin"
    )
    classify.add_argument(
        "--file", help="read the texts from this file, one per line (- for stdin)"
    )
    _connection_arguments(classify)
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
    classify.add_argument("--timeout", type=float, help="seconds (default: client.timeout_s)")


def _lines(path: str) -> list[str]:
    """The non-blank lines of ``path`` (``-``: stdin), without their line ends."""
    if path == "-":
        lines = sys.stdin.read().splitlines()
    else:
        try:
            with open(path, encoding="utf-8") as handle:
                lines = handle.read().splitlines()
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})"
            ) from None
    return [line for line in lines if line.strip()]


def _texts(args: argparse.Namespace) -> list[str]:
    texts: list[str] = []
    for text in args.texts:
        texts.extend(_lines("-") if text == "-" else [text])
    if args.file:
        texts.extend(_lines(args.file))
    if not texts:
        raise ConfigError("qroute classify needs TEXT, - (one text per line on stdin) or --file")
    return texts


def _classify(args: argparse.Namespace) -> int:
    from qroute_client import QrouteClientError

    args.texts = _texts(args)
    allowed = [label for label in args.allowed_labels.split(",") if label]
    try:
        with _client(args, args.timeout) as client:
            if len(args.texts) == 1:
                answers = [
                    client.classify(
                        args.texts[0], allowed_labels=allowed, top_labels=args.top_labels
                    )
                ]
            else:
                # A file may hold more texts than one request may carry
                # (router.max_batch_texts): sent in requests of the router's own limit.
                try:
                    size = client.index_info().limits.max_batch_texts or len(args.texts)
                except QrouteClientError:
                    size = len(args.texts)  # the batch's own answer says what is wrong
                answers = []
                for start in range(0, len(args.texts), size):
                    answers += client.classify_batch(
                        args.texts[start : start + size],
                        allowed_labels=allowed,
                        top_labels=args.top_labels,
                    )
    except QrouteClientError as exc:
        print(f"qroute: {_describe(exc)}", file=sys.stderr)
        return 1
    for text, answer in zip(args.texts, answers, strict=True):
        print(format_response(text, answer, as_json=args.json, explain=args.explain))
    return 0


def _health_arguments(health: argparse.ArgumentParser) -> None:
    _connection_arguments(health)
    health.add_argument("--timeout", type=float, default=5.0, help="seconds")
    with_json(health)


def _health(args: argparse.Namespace) -> int:
    from qroute_client import QrouteClientError

    try:
        with _client(args, args.timeout) as client:
            status = client.health()
    except QrouteClientError as exc:
        print(f"qroute: {_describe(exc)}", file=sys.stderr)
        return 1
    if args.json:
        print_json({"status": status})
    else:
        print(status)
    return 0 if status == "SERVING" else 1


def _info_arguments(info: argparse.ArgumentParser) -> None:
    _connection_arguments(info)
    info.add_argument("--json", action="store_true", help="print GetIndexInfo's JSON")
    info.add_argument("--timeout", type=float, help="seconds (default: client.timeout_s)")


def _info(args: argparse.Namespace) -> int:
    from qroute_client import QrouteClientError

    try:
        with _client(args, args.timeout) as client:
            info = client.index_info()
    except QrouteClientError as exc:
        print(f"qroute: {_describe(exc)}", file=sys.stderr)
        return 1
    print(format_info(info, as_json=args.json))
    return 0


def format_info(info: IndexInfo, *, as_json: bool) -> str:
    """GetIndexInfo's answer: a few lines, or (``as_json``) the JSON of
    ``qroute.v1.GetIndexInfoResponse`` with proto field names and full enum names."""
    if as_json:
        data = dataclasses.asdict(info)
        data["retrieval_mode"] = f"RETRIEVAL_MODE_{info.retrieval_mode.value}"
        return json.dumps(data, ensure_ascii=False)
    limits = info.limits
    tuned = info.tuned_encoder_fingerprint
    if not tuned:
        tuning = "thresholds never tuned (`qroute tune`)"
    elif tuned == info.encoder_fingerprint:
        tuning = "thresholds tuned with this encoder"
    else:
        tuning = f"thresholds tuned with {tuned!r}: re-run `qroute tune`"
    head = ", linear head" if info.uses_head else ""
    return "\n".join(
        [
            f"index {info.index_version}: {info.rows} rows, {info.label_count} labels "
            f"({info.retrieval_mode.value.lower()}{head}; {info.encoder_fingerprint})",
            f"  labels: {', '.join(info.labels)}",
            f"  limits: {limits.max_text_chars} chars a text, {limits.max_batch_texts} texts "
            f"a batch, {limits.max_allowed_labels} allowed_labels",
            f"  config {info.config_version}; {tuning}",
        ]
    )


def _describe(exc: QrouteClientError) -> str:
    """The error in one line, with each field violation the router attached."""
    from qroute_client import InvalidArgument

    text = str(exc)
    if isinstance(exc, InvalidArgument) and exc.field_violations:
        text += " (" + "; ".join(f"{v.field}: {v.description}" for v in exc.field_violations) + ")"
    return text


def _as_json(answer: Classification) -> dict[str, Any]:
    """The answer as the JSON of ``qroute.v1.ClassifyResponse`` (proto field names, enums by
    their full names), as `--json` has always printed it."""
    data = dataclasses.asdict(answer)
    data["path"] = f"DECISION_PATH_{answer.path.value}"
    data["fallback_reasons"] = [f"FALLBACK_REASON_{r.value}" for r in answer.fallback_reasons]
    data["zero_shot_method_kind"] = f"ZERO_SHOT_METHOD_{answer.zero_shot_method_kind.value}"
    data["neighbours"] = [
        {key: value for key, value in n.items() if value is not None} for n in data["neighbours"]
    ]
    return data


def _scores(scores: Sequence[LabelScore], limit: int = 5) -> str:
    return ", ".join(f"{s.label} {s.score:.3f}" for s in list(scores)[:limit])


def format_response(
    text: str, answer: Classification, *, as_json: bool, explain: bool = False
) -> str:
    """One answer for a person (``explain`` adds every field of the decision) or as JSON."""
    if as_json:
        return json.dumps({"text": text, **_as_json(answer)}, ensure_ascii=False)
    label = answer.label or "(none of these)"
    where = f"{answer.path.value}, confidence {answer.confidence:.2f}, index {answer.index_version}"
    lines = [f"{text}\n  -> {label}  [{where}]", f"  why: {answer.reason}"]
    if not explain:
        return "\n".join(lines)
    reasons = [r.value for r in answer.fallback_reasons]
    t = answer.thresholds
    lines += [
        f"  fallback reasons: {', '.join(reasons) or 'none'}",
        f"  thresholds: similarity {t.similarity:.3f}, margin {t.margin:.3f}, "
        f"min agreeing {t.min_agreeing}, zero-shot {t.zero_shot:.3f}",
        f"  kNN label scores: {_scores(answer.knn_scores)}",
    ]
    if answer.zero_shot_method:
        lines.append(f"  zero-shot ({answer.zero_shot_method}): {_scores(answer.zero_shot_scores)}")
    if len(answer.top_labels) > 1:
        lines.append(f"  top labels: {_scores(answer.top_labels, len(answer.top_labels))}")
    lines.append("  neighbours:")
    for n in answer.neighbours[:10]:
        parts = ""
        if n.dense_similarity is not None and n.lexical_similarity is not None:
            parts = f" (dense {n.dense_similarity:.3f}, lexical {n.lexical_similarity:.3f})"
        lines.append(f"    {n.similarity:.3f}{parts}  {pad(n.label, 12)} {n.text}  ({n.row_id})")
    if len(answer.neighbours) > 10:
        lines.append(f"    ... {len(answer.neighbours) - 10} more (--json shows all)")
    lines.append(f"  config {answer.config_version}")
    return "\n".join(lines)


COMMANDS = (
    Command("serve", "run the gRPC router", with_config, _serve),
    Command("classify", "ask a running router to label texts", _classify_arguments, _classify),
    Command("info", "what a running router serves: index, labels, limits", _info_arguments, _info),
    Command("health", "exit 0 when the router reports SERVING", _health_arguments, _health),
)

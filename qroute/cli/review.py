"""``qroute review``: list, show and decide the rows of the review queue, and export the
accepted ones as a table for ``qroute index TABLE --extra``; ``qroute shadow report``:
how the shadow candidate compares with the live config. Both read ``review.path``."""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from qroute.cli.common import Command, settings_of, with_config
from qroute.config import Settings
from qroute.errors import ConfigError

if TYPE_CHECKING:
    from qroute.routing.review_store import ReviewRow, ReviewStore

__all__ = ["COMMANDS"]


def _store(settings: Settings, *, must_exist: bool = True) -> ReviewStore:
    from qroute.routing.review_store import ReviewStore

    path = Path(settings.review.path)
    if must_exist and not path.is_file():
        raise ConfigError(
            f"no review queue at {path} (review.path): enable review.enabled on the router "
            "and let it answer some requests"
        )
    return ReviewStore(path, settings.review.max_rows)


def _arguments(review: argparse.ArgumentParser) -> None:
    from qroute.routing.review import ANSWER_REASONS, FEEDBACK

    sub = review.add_subparsers(dest="action", required=True)
    listing = sub.add_parser("list", help="rows, newest first")
    listing.add_argument(
        "--reason",
        # A typo would list nothing, as if the queue had no such rows.
        choices=(*ANSWER_REASONS, FEEDBACK),
        help="rows recorded for this reason",
    )
    listing.add_argument("--label", help="rows answered, suggested or accepted with this label")
    listing.add_argument(
        "--since", help="rows recorded at or after this ISO time (UTC unless it has an offset)"
    )
    listing.add_argument(
        "--status", choices=("pending", "accepted", "rejected", "all"), default="pending"
    )
    listing.add_argument("--limit", type=int, default=50)
    show = sub.add_parser("show", help="one row with its explanation")
    show.add_argument("id", type=int)
    accept = sub.add_parser(
        "accept",
        help="accept a row with --label (default: the feedback's label, else the answer's)",
    )
    accept.add_argument("id", type=int)
    choice = accept.add_mutually_exclusive_group()
    choice.add_argument("--label", help="the row's right label")
    choice.add_argument("--none", action="store_true", help="no label fits the text")
    relabel = sub.add_parser("relabel", help="accept a row with another label")
    relabel.add_argument("id", type=int)
    relabel.add_argument("--label", required=True)
    reject = sub.add_parser("reject", help="drop a row from the queue (kept as rejected)")
    reject.add_argument("id", type=int)
    export = sub.add_parser("export", help="write the accepted rows as a text,label table")
    export.add_argument("--out", default="learned.csv", help="CSV file to write")
    for parser in (listing, show, accept, relabel, reject, export):
        with_config(parser)
        parser.add_argument("--json", action="store_true", help="print JSON")


def _line(row: ReviewRow) -> str:
    text = row.text if row.text is not None else f"#{(row.text_hash or '-')[:12]}"
    text = text if len(text) <= 40 else text[:39] + "…"
    label = row.label or "-"
    confidence = "-" if row.confidence is None else f"{row.confidence:.2f}"
    return (
        f"{row.id:>6}  {row.created_at[:19]}  {','.join(row.reasons):<24} {row.status:<8} "
        f"{label:<10} {confidence:>5}  {text}"
    )


def _since(value: str) -> str:
    """``--since`` as the store writes times (UTC, ISO 8601), so that comparing them as
    strings compares the times: a local offset is converted, a time without one is UTC,
    and what is no ISO time is refused (compared as given, "2026/12/01" matched nothing)."""
    from datetime import UTC, datetime

    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(
            f"--since {value!r}: not an ISO time; e.g. 2026-12-01 or 2026-12-01T09:30+09:00"
        ) from None
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    return when.isoformat(timespec="milliseconds")


def _row(store: ReviewStore, row_id: int) -> ReviewRow:
    row = store.get(row_id)
    if row is None:
        raise ConfigError(f"no review row {row_id} in {store.path}: see `qroute review list`")
    return row


def _review(args: argparse.Namespace) -> int:
    settings = settings_of(args)
    store = _store(settings)
    if args.action == "list":
        status = None if args.status == "all" else args.status
        since = _since(args.since) if args.since else None
        rows = store.rows(
            reason=args.reason, label=args.label, since=since, status=status, limit=args.limit
        )
        if args.json:
            print(json.dumps([r.as_dict() for r in rows], ensure_ascii=False))
        else:
            print(f"{'id':>6}  {'created (UTC)':<19}  {'reasons':<24} {'status':<8} "
                  f"{'label':<10} {'conf':>5}  text")  # fmt: skip
            for row in rows:
                print(_line(row))
        return 0
    if args.action == "export":
        return _export(store, Path(args.out), args.json)
    row = _row(store, args.id)
    if args.action == "show":
        if args.json:
            print(json.dumps(row.as_dict(), ensure_ascii=False))
        else:
            for name, value in row.as_dict().items():
                print(f"{name:>22}: {value}")
        return 0
    if args.action == "reject":
        store.review(row.id, "rejected", None)
        label = None
    else:
        label = _label(row, args)
        store.review(row.id, "accepted", label)
    status = "rejected" if args.action == "reject" else "accepted"
    if args.json:
        print(json.dumps({"id": row.id, "status": status, "label": label}, ensure_ascii=False))
    else:
        shown = "" if status == "rejected" else f" as {label!r}" if label else " as none of these"
        print(f"row {row.id} {status}{shown}")
    return 0


def _label(row: ReviewRow, args: argparse.Namespace) -> str | None:
    """The label an accept gives: --label, --none, the feedback's, or the answer's."""
    if args.label:
        return str(args.label)
    if getattr(args, "none", False):
        return None
    if row.feedback_label is not None:
        return row.feedback_label or None
    if row.label:
        return row.label
    raise ConfigError(
        f"row {row.id} was answered with no label ({row.path}): pass --label L, or --none"
    )


def _export(store: ReviewStore, out: Path, as_json: bool) -> int:
    from qroute.table import normalise

    labelled: dict[str, tuple[str, str]] = {}
    no_text = no_label = 0
    # In the order they were decided (not recorded), so the latest decision about a text
    # wins, and a later "none of these" takes back an earlier label.
    decided = sorted(store.rows(status="accepted"), key=lambda r: (r.reviewed_at or "", r.id))
    for row in decided:
        if row.text is None:
            no_text += 1
        elif row.reviewed_label is None:
            no_label += 1
            labelled.pop(normalise(row.text), None)
        else:
            labelled[normalise(row.text)] = (row.text, row.reviewed_label)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(labelled.values())
    summary = {"out": str(out), "rows": len(labelled), "no_text": no_text, "none": no_label}
    if as_json:
        print(json.dumps(summary, ensure_ascii=False))
    else:
        left = ""
        if no_text or no_label:
            left = (
                f" (left out: {no_text} without a stored text (review.store_texts), "
                f"{no_label} accepted as none of these)"
            )
        print(f"wrote {len(labelled)} rows to {out}{left}: `qroute index TABLE --extra {out}`")
    return 0


def _shadow_arguments(shadow: argparse.ArgumentParser) -> None:
    sub = shadow.add_subparsers(dest="action", required=True)
    report = sub.add_parser(
        "report",
        help="agreement, the live x candidate confusion, accuracy on reviewed rows",
    )
    with_config(report)
    report.add_argument("--json", action="store_true", help="print JSON")


def _shadow(args: argparse.Namespace) -> int:
    from qroute.config import load_settings
    from qroute.routing.classifier import Classifier
    from qroute.routing.shadow import Shadow, ShadowReport, shadow_report, tally_key

    settings = settings_of(args)
    shadow = settings.shadow
    if not shadow.config and not shadow.index_version:
        raise ConfigError(
            "shadow.config and shadow.index_version name no candidate: set one of them"
        )
    candidate = load_settings(shadow.config) if shadow.config else None
    store = _store(settings)
    reviewed = [
        (row.text, row.reviewed_label)
        for row in store.rows(status="accepted")
        if row.text is not None
    ]

    async def run() -> ShadowReport:
        live = await asyncio.to_thread(Classifier.from_settings, settings)
        builder = Shadow(candidate, lambda: live, shadow, lambda results: None)
        try:
            await live.refresh_index()
            other = await builder.candidate_for(live)
            # The router tallies under this key, as it ran the candidate.
            key = tally_key(other.config_version, shadow.index_version)
            tally = store.tally(key).get(key, Counter())
            return await shadow_report(live, other, key, tally, reviewed, shadow.min_agreement)
        finally:
            await builder.stop()
            await live.close()

    report = asyncio.run(run())
    if args.json:
        print(json.dumps(report.as_dict(), ensure_ascii=False))
        return 0

    def pct(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    named = ", ".join(
        f"{what} {value}"
        for what, value in (("config", shadow.config), ("index", shadow.index_version))
        if value
    )
    print(f"candidate {report.candidate} ({named})")
    print(f"compared {report.compared} live answers: agreement {pct(report.agreement)}")
    if report.confusion:
        print("live -> candidate (NO_MATCH as -):")
        for (live_label, cand), n in sorted(report.confusion.items(), key=lambda kv: -kv[1]):
            print(f"  {live_label or '-':<12} -> {cand or '-':<12} {n:>6}")
    print(
        f"reviewed rows {report.reviewed}: live accuracy {pct(report.live_accuracy)}, "
        f"candidate accuracy {pct(report.candidate_accuracy)}"
    )
    print(("promote: yes, " if report.promote else "promote: no, ") + report.why)
    return 0


COMMANDS = (
    Command("review", "list, accept and export the review queue", _arguments, _review),
    Command(
        "shadow",
        "compare the shadow candidate config with the live one",
        _shadow_arguments,
        _shadow,
    ),
)

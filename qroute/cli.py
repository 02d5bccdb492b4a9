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

    evaluate = with_config(sub.add_parser("eval", help="measure the router on labelled data"))
    evaluate.add_argument("data", help="labelled CSV/TSV/JSONL/Parquet (text, label)")
    evaluate.add_argument("--oos-label", help="label that marks out-of-scope rows (e.g. oos)")
    evaluate.add_argument("--out", default="qroute-eval", help="folder for eval.json and PNGs")
    evaluate.add_argument("--no-progress", action="store_true")

    tune = with_config(sub.add_parser("tune", help="choose thresholds from labelled data"))
    tune.add_argument("data", nargs="?", help="labelled data (omit with --cross-validate)")
    tune.add_argument(
        "--cross-validate",
        action="store_true",
        help="tune on the indexed table itself, each row without itself (leave-one-out)",
    )
    tune.add_argument("--table", help="with --cross-validate: the indexed table")
    tune.add_argument(
        "--objective", choices=["accuracy", "oos", "zero-shot-rate"], default="accuracy"
    )
    tune.add_argument(
        "--target", type=float, default=0.9, help="OOS recall floor or zero-shot rate ceiling"
    )
    tune.add_argument("--oos-label", help="label that marks out-of-scope rows")
    tune.add_argument("--out", default="qroute-tune", help="folder for the report and curve")
    tune.add_argument(
        "--write", action="store_true", help="write the chosen values into the config file"
    )
    tune.add_argument("--no-progress", action="store_true")

    typos = with_config(
        sub.add_parser(
            "typos", help="write a typo test set (spacing, jamo, 받침) from labelled data"
        )
    )
    typos.add_argument("data", help="labelled CSV/TSV/JSONL/Parquet (text, label)")
    typos.add_argument("--out", required=True, help="JSONL to write: text, label, original, kind")
    typos.add_argument("--seed", type=int, default=0)

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


async def _eval(settings: Settings, args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from qroute.classifier import Classifier
    from qroute.evaluate import evaluate, plot_confusion, plot_curve
    from qroute.table import read_table
    from qroute.tune import precompute, sweep

    examples = read_table(args.data, settings.table)
    classifier = await asyncio.to_thread(Classifier.from_settings, settings)
    try:
        warning = classifier.tuning_warning()
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
        result, _ = await evaluate(
            classifier, examples, oos_label=args.oos_label, progress=not args.no_progress
        )
        router = settings.router
        pre = await precompute(classifier, examples, k_max=router.k, progress=not args.no_progress)
    finally:
        await classifier.close()
    curve = sweep(
        pre,
        router,
        settings.zero_shot,
        oos_label=args.oos_label,
        ks=[router.k],
        margins=[router.min_margin],
        zero_shot_thresholds=[settings.zero_shot.threshold],
        per_label=False,
    ).curve
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "eval.json").write_text(result.to_json(), encoding="utf-8")
    plot_confusion(result, out / "confusion.png")
    series = {k: v for k, v in curve.items() if k != "threshold"}
    plot_curve(
        curve["threshold"],
        series,
        out / "threshold.png",
        xlabel="router.similarity_threshold",
        mark=router.similarity_threshold,
    )
    (out / "threshold.json").write_text(json.dumps(curve), encoding="utf-8")
    print(result.render())
    print(f"wrote {out / 'eval.json'}, {out / 'confusion.png'}, {out / 'threshold.png'}")
    return 0


async def _tune(settings: Settings, args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from qroute.classifier import Classifier
    from qroute.config import config_file
    from qroute.evaluate import plot_curve
    from qroute.table import read_table
    from qroute.tune import precompute, sweep, write_tuned

    source = args.table if args.cross_validate else args.data
    if not source:
        raise ConfigError("qroute tune needs DATA, or --cross-validate --table TABLE")
    examples = read_table(source, settings.table)
    classifier = await asyncio.to_thread(Classifier.from_settings, settings)
    try:
        pre = await precompute(
            classifier,
            examples,
            k_max=max(settings.router.k, 10),
            leave_one_out=args.cross_validate,
            progress=not args.no_progress,
        )
        index = classifier.index
        fingerprint = classifier.retriever.fingerprint
    finally:
        await classifier.close()
    result = sweep(
        pre,
        settings.router,
        settings.zero_shot,
        objective=args.objective,
        target=args.target,
        oos_label=args.oos_label,
    )
    choice = result.best
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"choice": choice.__dict__, "evaluated": result.evaluated, "curve": result.curve}
    (out / "tune.json").write_text(
        json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8"
    )
    series = {k: v for k, v in result.curve.items() if k != "threshold"}
    plot_curve(
        result.curve["threshold"],
        series,
        out / "tradeoff.png",
        xlabel="router.similarity_threshold",
        mark=choice.similarity_threshold,
    )
    print(
        f"best of {result.evaluated} settings ({args.objective}): k={choice.k} "
        f"similarity_threshold={choice.similarity_threshold:.3f} min_margin={choice.min_margin} "
        f"zero_shot.threshold={choice.zero_shot_threshold:.3f} "
        f"per-label overrides={len(choice.label_thresholds)}"
    )
    print("reached: " + ", ".join(f"{k} {v}" for k, v in choice.figures().items()))
    if args.write:
        path = config_file(args.config)
        if path is None:
            raise ConfigError("--write needs a config file: pass --config FILE")
        write_tuned(
            path,
            choice,
            encoder=fingerprint,
            index_version=index.version if index else "",
            objective=args.objective,
            data=str(source),
        )
        print(f"wrote the tuned values into {path}")
    return 0


def _typos(settings: Settings, args: argparse.Namespace) -> int:
    import json
    from collections import Counter
    from pathlib import Path

    from qroute.table import read_table
    from qroute.typos import typo_set

    examples = read_table(args.data, settings.table)
    kinds: Counter[str] = Counter()
    with Path(args.out).open("w", encoding="utf-8") as handle:
        for typo in typo_set(examples, seed=args.seed):
            row = {
                "text": typo.text,
                "label": typo.example.label,
                "original": typo.example.text,
                "kind": typo.kind,
            }
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            kinds[typo.kind] += 1
    summary = ", ".join(f"{kind} {n}" for kind, n in kinds.items())
    print(f"wrote {sum(kinds.values())} typo rows of {len(examples)} to {args.out} ({summary})")
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
        if args.command == "eval":
            return asyncio.run(_eval(settings, args))
        if args.command == "tune":
            return asyncio.run(_tune(settings, args))
        if args.command == "typos":
            return _typos(settings, args)
        return _serve(settings, args.config)
    except QrouteError as exc:
        print(f"qroute: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

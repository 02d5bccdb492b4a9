"""The ``qroute`` command: the composition root. Apps are imported inside the
subcommand that needs them, so ``qroute --help`` stays fast and nothing imports this."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from qroute.config import Settings, load_settings
from qroute.errors import ConfigError, QrouteError

if TYPE_CHECKING:
    from qroute.table import TableReport
    from qroute.types import Example

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

    def with_training(p: argparse.ArgumentParser, batch_size: int) -> None:
        """The options both fine-tunes take."""
        p.add_argument("--epochs", type=float, default=1.0)
        p.add_argument("--max-steps", type=int, default=-1, help="stop after this many steps")
        p.add_argument("--batch-size", type=int, default=batch_size)
        p.add_argument("--learning-rate", type=float, default=5e-5)
        p.add_argument("--dev-fraction", type=float, default=0.1)
        p.add_argument("--patience", type=int, default=3, help="evaluations without gain")
        p.add_argument(
            "--bf16", action="store_true", help="mixed precision (CPUs with AVX512-BF16/AMX, GPUs)"
        )
        p.add_argument("--seed", type=int, default=0)
        p.add_argument(
            "--resume", action="store_true", help="continue an interrupted run from its checkpoint"
        )
        p.add_argument("--keep-checkpoints", action="store_true")
        p.add_argument("--no-progress", action="store_true")

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
    evaluate.add_argument(
        "--zero-shot-alone",
        action="store_true",
        help="also send every in-scope row to the zero-shot fallback and score it alone",
    )
    evaluate.add_argument(
        "--compare-nli",
        metavar="MODEL",
        help="repeat the fallback's figures with this NLI model (e.g. the one before fine-tuning)",
    )

    finetune = with_config(
        sub.add_parser(
            "finetune-nli",
            help="fine-tune the NLI fallback on the labelled table (or on generic NLI pairs)",
        )
    )
    finetune.add_argument(
        "table", help="labelled table (as for `qroute index`), or NLI JSONL with --nli-pairs"
    )
    finetune.add_argument("--out", required=True, help="output model directory")
    finetune.add_argument(
        "--base", help="NLI model or plain encoder to start from (default: the config's nli.model)"
    )
    finetune.add_argument(
        "--nli-pairs",
        action="store_true",
        help="TABLE is generic NLI JSONL (premise, hypothesis, label), not a labelled table",
    )
    finetune.add_argument("--negatives", type=int, default=3, help="contradiction pairs per row")
    finetune.add_argument(
        "--hard-share", type=float, default=0.75, help="share of negatives among confusable labels"
    )
    finetune.add_argument(
        "--no-hard-negatives",
        action="store_true",
        help="draw every negative at random (skips loading the encoder)",
    )
    finetune.add_argument(
        "--max-length", type=int, default=64, help="tokens per premise+hypothesis pair"
    )
    with_training(finetune, batch_size=32)

    encoder_ft = with_config(
        sub.add_parser(
            "finetune-encoder",
            help="fine-tune the router's encoder on the labelled table (tighter label groups)",
        )
    )
    encoder_ft.add_argument("table", help="labelled table (as for `qroute index`)")
    encoder_ft.add_argument("--out", required=True, help="output model directory")
    encoder_ft.add_argument(
        "--base", help="sentence-transformers model to start from (default: encoder.model)"
    )
    encoder_ft.add_argument(
        "--loss",
        choices=["auto", "mnrl", "triplet"],
        default="auto",
        help="auto: mnrl when the table has at least --batch-size labels, else triplet",
    )
    encoder_ft.add_argument(
        "--margin", type=float, default=0.3, help="triplet margin, in cosine distance"
    )
    encoder_ft.add_argument(
        "--train-embeddings",
        action="store_true",
        help="also train the word-embedding matrix (frozen by default: faster, rarely worse)",
    )
    with_training(encoder_ft, batch_size=64)

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
    from qroute_indexer import list_versions, rollback, run_index

    from qroute.table import scan_table

    if args.encoding:
        table = settings.table.model_copy(update={"encoding": args.encoding})
        settings = settings.model_copy(update={"table": table})
    if args.list:
        rows = asyncio.run(list_versions(settings))
        header = ("version", "state", "points", "labels", "head", "created", "encoder")
        line = "{:<24} {:<10} {:>8} {:>6} {:>4}  {:<25} {}"
        print(line.format(*header))
        for row in rows:
            state = "published*" if row.current else ("kept" if row.published else "draft")
            points = "?" if row.points is None else str(row.points)
            head = "yes" if row.head else "no"
            values = (row.name, state, points, row.labels, head, row.created_at, row.encoder)
            print(line.format(*values))
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


def _read_labelled(path: str, settings: Settings) -> tuple[list[Example], TableReport]:
    """The accepted rows of a labelled file, saying on stderr how many were left out."""
    from qroute.table import iter_examples, scan_table

    report = scan_table(path, settings.table)
    report.raise_for_errors()
    note = report.dropped_note()
    if note:
        print(f"note: {note}", file=sys.stderr)
    return [e for chunk in iter_examples(report, settings.table) for e in chunk], report


async def _eval(settings: Settings, args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from qroute.evaluation.run import evaluate, plot_confusion, plot_curve
    from qroute.evaluation.tune import precompute, sweep
    from qroute.routing.classifier import Classifier

    examples, table = _read_labelled(args.data, settings)
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
        fallback = await _fallback_figures(classifier, examples, result, args)
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
    report = json.loads(result.to_json())
    report["table"] = {"rows": table.rows, "evaluated": len(examples), "left_out": table.dropped()}
    if fallback:
        report["fallback"] = fallback
    (out / "eval.json").write_text(
        json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8"
    )
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
    for row in fallback:
        print(
            f"fallback {row['nli_model']}: zero-shot path accuracy {row['zero_shot_path_accuracy']}"
            f" (share {row['zero_shot_path_share']}), router accuracy {row['router_accuracy']:.4f}"
            + (
                f"; alone: picked right {row['alone_picked']:.4f}, answered right "
                f"{row['alone_answered']:.4f}, true label among candidates "
                f"{row['alone_candidate_recall']:.4f}"
                if "alone_picked" in row
                else ""
            )
        )
    print(f"wrote {out / 'eval.json'}, {out / 'confusion.png'}, {out / 'threshold.png'}")
    return 0


def _training_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options both fine-tunes take (see ``with_training``)."""
    return {
        "epochs": args.epochs,
        "max_steps": args.max_steps,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "dev_fraction": args.dev_fraction,
        "patience": args.patience,
        "bf16": args.bf16,
        "seed": args.seed,
        "progress": not args.no_progress,
        "resume": args.resume,
        "keep_checkpoints": args.keep_checkpoints,
    }


def _finetune(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from qroute.table import read_table
    from qroute.training.nli import (
        DATA_DIR,
        FinetuneOptions,
        PreparedData,
        finetune,
        prepare_nli_pairs,
        prepare_table,
        read_nli_pairs,
    )

    options = FinetuneOptions(
        negatives=args.negatives,
        hard_share=args.hard_share,
        max_length=args.max_length,
        **_training_options(args),
    )
    base = args.base or settings.nli.model
    saved = Path(args.out) / DATA_DIR
    if args.resume and (saved / "meta.json").exists():
        # The interrupted run's pairs: the same data, without re-embedding the table.
        data = PreparedData.load(saved)
    elif args.nli_pairs:
        data = prepare_nli_pairs(read_nli_pairs(args.table), options, source=args.table)
    else:
        from qroute.embedding.dense import SentenceTransformerEncoder

        examples = read_table(args.table, settings.table)
        encoder = (
            None
            if args.no_hard_negatives
            else SentenceTransformerEncoder(
                settings.encoder,
                without="To fine-tune without it: --no-hard-negatives (draws negatives at random).",
            )
        )
        data = prepare_table(examples, settings.zero_shot, encoder, options, source=args.table)
    print(
        "pairs: " + ", ".join(f"{k} {v}" for k, v in data.counts.items()),
        file=sys.stderr,
    )
    report = finetune(data, base, args.out, options, zero_shot=settings.zero_shot)
    print(f"wrote {report.out} ({report.steps} steps, {report.train_seconds:.0f} s)")
    for name in report.after:
        before = report.before.get(name, float("nan"))
        print(f"  dev {name}: {before:.4f} -> {report.after[name]:.4f}")
    print(f"point the router at it: nli.model: {report.out} (or QROUTE_NLI__MODEL={report.out})")
    return 0


def _finetune_encoder(settings: Settings, args: argparse.Namespace) -> int:
    from qroute.table import read_table
    from qroute.training.encoder import EncoderFinetuneOptions, finetune_encoder

    options = EncoderFinetuneOptions(
        loss=args.loss,
        margin=args.margin,
        freeze_embeddings=not args.train_embeddings,
        **_training_options(args),
    )
    examples = read_table(args.table, settings.table)
    report = finetune_encoder(
        examples, settings.encoder, args.out, options, source=args.table, base=args.base
    )
    print(f"wrote {report.out} ({report.steps} steps, {report.train_seconds:.0f} s)")
    before, after = report.before["knn_accuracy"], report.after["knn_accuracy"]
    print(f"  dev kNN-5 accuracy: {before:.4f} -> {after:.4f}")
    print(
        f"point the router at it: encoder.model: {report.out} (or QROUTE_ENCODER__MODEL="
        f"{report.out}), then re-index and re-tune: similarities have changed"
    )
    return 0


async def _fallback_figures(
    classifier: Any, examples: Any, result: Any, args: argparse.Namespace
) -> list[dict[str, Any]]:
    """The fallback's figures with the configured NLI model and, with --compare-nli,
    another one (e.g. the base before fine-tuning): the zero-shot path's accuracy inside
    the router and, with --zero-shot-alone, the scorer on every in-scope row."""
    from qroute.config import NLISettings
    from qroute.evaluation.run import evaluate, zero_shot_alone
    from qroute.routing.zeroshot import NLIZeroShot

    settings = classifier.settings
    if not (args.zero_shot_alone or args.compare_nli):
        return []
    if settings.zero_shot.method != "nli":
        raise ConfigError("--zero-shot-alone/--compare-nli need zero_shot.method: nli")
    runs = [(settings.nli.model, classifier, result)]
    if args.compare_nli:
        nli = settings.nli.model_copy(update={"model": args.compare_nli})
        scorer = await asyncio.to_thread(NLIZeroShot, NLISettings(**nli.model_dump()))
        other = classifier.reconfigure(settings, nli=scorer)
        other_result, _ = await evaluate(
            other, examples, oos_label=args.oos_label, progress=not args.no_progress
        )
        runs.insert(0, (args.compare_nli, other, other_result))
    rows = []
    for name, clf, measured in runs:
        path = measured.per_path.get("ZERO_SHOT", {})
        row: dict[str, Any] = {
            "nli_model": name,
            "router_accuracy": measured.accuracy,
            "zero_shot_path_share": round(path.get("share", 0.0), 4),
            "zero_shot_path_accuracy": round(path["accuracy"], 4) if path else None,
        }
        if args.zero_shot_alone:
            alone = await zero_shot_alone(
                clf, examples, oos_label=args.oos_label, progress=not args.no_progress
            )
            row.update(
                alone_picked=alone.picked,
                alone_answered=alone.answered,
                alone_candidate_recall=alone.candidate_recall,
                alone_rows=alone.n,
            )
        rows.append(row)
    return rows


async def _tune(settings: Settings, args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from qroute.config import config_file
    from qroute.evaluation.run import plot_curve
    from qroute.evaluation.tune import precompute, sweep, write_tuned
    from qroute.routing.classifier import Classifier

    source = args.table if args.cross_validate else args.data
    if not source:
        raise ConfigError("qroute tune needs DATA, or --cross-validate --table TABLE")
    examples, _ = _read_labelled(source, settings)
    if args.cross_validate:
        from qroute.training.encoder import held_out_rows

        unseen = held_out_rows(examples, settings.encoder.model)
        if unseen == []:
            raise ConfigError(
                f"{source}: the encoder was fine-tuned on this table and held none of its "
                "rows out: tune on separate labelled data instead (qroute tune DATA)"
            )
        if unseen is not None:
            print(
                f"the encoder was fine-tuned on this table: tuning on the {len(unseen)} of its "
                f"{len(examples)} rows that the fine-tune held out",
                file=sys.stderr,
            )
            examples = unseen
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
    if args.cross_validate and index is not None and index.head and settings.router.use_head:
        print(
            "the index's linear head was fitted on every row of this table, so its labels "
            "here are optimistic (leave-one-out applies to the neighbours only): tune on "
            "separate labelled data (qroute tune DATA) for figures that carry to new queries",
            file=sys.stderr,
        )
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

    from qroute.evaluation.typos import typo_set
    from qroute.table import read_table

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
    from qroute_server.app import serve

    from qroute.config import config_file

    asyncio.run(serve(settings, config_file(config)))
    return 0


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
        if args.command == "finetune-nli":
            return _finetune(settings, args)
        if args.command == "finetune-encoder":
            return _finetune_encoder(settings, args)
        return _serve(settings, args.config)
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

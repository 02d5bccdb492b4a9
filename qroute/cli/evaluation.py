"""``qroute eval``, ``tune`` and ``typos``: measure the router, choose its thresholds,
and make a typo test set, all from labelled data."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING, Any

from qroute.cli.common import Command, print_json, settings_of, with_config, with_json
from qroute.config import Settings
from qroute.errors import ConfigError

if TYPE_CHECKING:
    from qroute.table import TableReport
    from qroute.types import Example

__all__ = ["COMMANDS"]


def _read_labelled(path: str, settings: Settings) -> tuple[list[Example], TableReport]:
    """The accepted rows of a labelled file, saying on stderr how many were left out."""
    from qroute.table import iter_examples, scan_table

    report = scan_table(path, settings.table)
    report.raise_for_errors()
    note = report.dropped_note()
    if note:
        print(f"note: {note}", file=sys.stderr)
    return [e for chunk in iter_examples(report, settings.table) for e in chunk], report


def _eval_arguments(evaluate: argparse.ArgumentParser) -> None:
    with_config(evaluate)
    evaluate.add_argument("data", help="labelled CSV/TSV/JSONL/Parquet (text, label)")
    evaluate.add_argument("--oos-label", help="label that marks out-of-scope rows (e.g. oos)")
    evaluate.add_argument("--out", default="qroute-eval", help="folder for eval.json and PNGs")
    evaluate.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    with_json(evaluate)
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


async def _eval(settings: Settings, args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from qroute.evaluation.plots import plot_confusion, plot_curve, plot_reliability
    from qroute.evaluation.run import evaluate_once
    from qroute.evaluation.tune import expected_calibration_error, sweep
    from qroute.routing.classifier import Classifier

    examples, table = _read_labelled(args.data, settings)
    oos_label = args.oos_label or settings.table.none_label
    args.oos_label = oos_label
    classifier = await asyncio.to_thread(Classifier.from_settings, settings)
    try:
        warning = classifier.tuning_warning()
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
        once = await evaluate_once(
            classifier, examples, oos_label=oos_label, progress=not args.no_progress
        )
        result, pre = once.result, once.pre
        router = settings.router
        fallback = await _fallback_figures(classifier, examples, result, args)
    finally:
        await classifier.close()
    ece, bins = expected_calibration_error(once.confidence, once.right, bins=15)
    curve = sweep(
        pre,
        router,
        settings.zero_shot,
        oos_label=oos_label,
        none_label=settings.table.none_label,
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
    report["calibration"] = {
        "ece": round(ece, 4),
        "bins": 15,
        "answered": len(once.confidence),
        "calibrated": sorted(router.calibration),
        "reliability": [
            {"confidence": round(c, 4), "accuracy": round(a, 4), "rows": n} for c, a, n in bins
        ],
    }
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
    plot_reliability(bins, ece, out / "reliability.png")
    files = [
        str(out / name)
        for name in ("eval.json", "confusion.png", "threshold.png", "reliability.png")
    ]
    if args.json:
        print_json({**report, "files": files})
        return 0
    print(result.render())
    calibrated = ", ".join(sorted(router.calibration)) or "none: uncalibrated"
    print(
        f"expected calibration error {ece:.4f} over {len(once.confidence)} answers "
        f"(calibrated paths: {calibrated})"
    )
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
    print(f"wrote {', '.join(files)}")
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


def _tune_arguments(tune: argparse.ArgumentParser) -> None:
    with_config(tune)
    tune.add_argument("data", nargs="?", help="labelled data (omit with --cross-validate)")
    tune.add_argument(
        "--cross-validate",
        action="store_true",
        help="tune on the indexed table itself, each row without itself (leave-one-out)",
    )
    tune.add_argument("--table", help="with --cross-validate: the indexed table")
    tune.add_argument(
        "--objective",
        choices=["accuracy", "oos", "zero-shot-rate"],
        default="accuracy",
        help="what to maximise: accuracy; oos: accuracy with out-of-scope recall at least "
        "--target; zero-shot-rate: accuracy with the zero-shot share at most --target",
    )
    tune.add_argument(
        "--target", type=float, default=0.9, help="OOS recall floor or zero-shot rate ceiling"
    )
    tune.add_argument(
        "--oos-label", help="label that marks out-of-scope rows (default: table.none_label)"
    )
    tune.add_argument(
        "--folds",
        type=int,
        default=5,
        help="cross-validation folds that measure the choice on rows it did not see "
        "(0: report the fitted figures only)",
    )
    tune.add_argument(
        "--no-label-thresholds", action="store_true", help="tune one shared threshold only"
    )
    tune.add_argument(
        "--min-label-threshold",
        type=float,
        help="floor for per-label thresholds (default: the shared threshold minus 0.1)",
    )
    tune.add_argument(
        "--no-calibration",
        action="store_true",
        help="do not fit router.calibration (confidence as the probability of being right)",
    )
    tune.add_argument("--out", default="qroute-tune", help="folder for the report and curve")
    tune.add_argument(
        "--write", action="store_true", help="write the chosen values into the config file"
    )
    tune.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    with_json(tune)


def _tune_rows(settings: Settings, args: argparse.Namespace) -> tuple[str, list[Any]]:
    """The rows to tune on: DATA, or with --cross-validate the indexed table (only the
    rows a fine-tuned encoder held out, if it was fine-tuned on this table)."""

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
    return str(source), examples


def _write_tuned(
    settings: Settings,
    args: argparse.Namespace,
    choice: Any,
    fingerprint: str,
    version: str,
    source: str,
    validated: Any,
    calibration: Any,
) -> None:
    from qroute.configfile import config_file
    from qroute.evaluation.tune import write_tuned

    path = config_file(args.config)
    if path is None:
        raise ConfigError("--write needs a config file: pass --config FILE")
    write_tuned(
        path,
        choice,
        encoder=fingerprint,
        index_version=version,
        objective=args.objective,
        data=str(source),
        validated=validated,
        calibration=calibration,
    )
    # Under --json, stdout carries the one JSON document.
    print(f"wrote the tuned values into {path}", file=sys.stderr if args.json else sys.stdout)


async def _tune(settings: Settings, args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from qroute.evaluation.plots import plot_curve
    from qroute.evaluation.precompute import precompute
    from qroute.evaluation.tune import cross_validate, fit_calibration, sweep
    from qroute.routing.classifier import Classifier

    if args.folds == 1 or args.folds < 0:
        raise ConfigError(f"--folds {args.folds}: use 0 (no cross-validation) or 2 and more")
    source, examples = _tune_rows(settings, args)
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
        if pre.reused:
            print(
                f"searched {pre.reused} of {len(examples)} rows with their stored vectors "
                "(no re-encoding)",
                file=sys.stderr,
            )
    finally:
        await classifier.close()
    if args.cross_validate and index is not None and index.head and settings.router.use_head:
        print(
            "the index's linear head was fitted on every row of this table, so its labels "
            "here are optimistic (leave-one-out applies to the neighbours only): tune on "
            "separate labelled data (qroute tune DATA) for figures that carry to new queries",
            file=sys.stderr,
        )
    oos_label = args.oos_label or settings.table.none_label
    none_label = settings.table.none_label
    options: dict[str, Any] = {
        "objective": args.objective,
        "target": args.target,
        "per_label": not args.no_label_thresholds,
        "min_label_threshold": args.min_label_threshold,
    }
    result = sweep(
        pre,
        settings.router,
        settings.zero_shot,
        oos_label=oos_label,
        none_label=none_label,
        **options,
    )
    choice = result.best
    validated = (
        cross_validate(
            pre,
            settings.router,
            settings.zero_shot,
            folds=args.folds,
            oos_label=oos_label,
            none_label=none_label,
            **options,
        )
        if args.folds
        else None
    )
    calibration = None
    if not args.no_calibration:
        router, zero_shot = choice.settings(settings.router, settings.zero_shot)
        calibration = fit_calibration(
            pre, router, zero_shot, oos_label=oos_label, none_label=none_label
        )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "choice": choice.__dict__,
        "fitted": choice.figures(),
        "held_out": None if validated is None else validated.__dict__,
        "calibration": calibration,
        "evaluated": result.evaluated,
        "curve": result.curve,
    }
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
    version = index.version if index else ""
    if args.json:
        if args.write:
            _write_tuned(
                settings, args, choice, fingerprint, version, source, validated, calibration
            )
        figures = {"choice": choice.__dict__, "figures": choice.figures()}
        if validated is not None:
            figures["held_out"] = validated.__dict__
        print_json({**figures, "evaluated": result.evaluated, "objective": args.objective})
        return 0
    print(
        f"best of {result.evaluated} settings ({args.objective}): k={choice.k} "
        f"similarity_threshold={choice.similarity_threshold:.3f} min_margin={choice.min_margin} "
        f"zero_shot.threshold={choice.zero_shot_threshold:.3f} "
        f"per-label overrides={len(choice.label_thresholds)}"
    )
    print("fitted (on the rows it was chosen on): " + _render(choice.figures(), {}))
    if validated is not None:
        print(
            f"expected on unseen data ({validated.folds}-fold held-out, 95% range): "
            + _render(validated.figures, validated.ranges)
        )
    if not choice.meets_target:
        print(
            f"warning: no setting meets {args.objective} target {args.target} on its 95% "
            "lower bound over these rows: the choice is the closest; add rows or relax it",
            file=sys.stderr,
        )
    if calibration:
        print(f"calibrated confidence for: {', '.join(sorted(calibration))}")
    if args.write:
        _write_tuned(
            settings,
            args,
            choice,
            fingerprint,
            version,
            source,
            validated,
            calibration,
        )
    return 0


def _render(figures: dict[str, Any], ranges: dict[str, tuple[float, float]]) -> str:
    return ", ".join(
        f"{k} {v}" + (f" [{ranges[k][0]}, {ranges[k][1]}]" if k in ranges else "")
        for k, v in figures.items()
        if v is not None
    )


def _typos_arguments(typos: argparse.ArgumentParser) -> None:
    with_config(typos)
    typos.add_argument("data", help="labelled CSV/TSV/JSONL/Parquet (text, label)")
    typos.add_argument("--out", required=True, help="JSONL to write: text, label, original, kind")
    typos.add_argument(
        "--seed", type=int, default=0, help="random seed: the same seed writes the same rows"
    )


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


COMMANDS = (
    Command(
        "eval",
        "measure the router on labelled data",
        _eval_arguments,
        lambda args: asyncio.run(_eval(settings_of(args), args)),
    ),
    Command(
        "tune",
        "choose thresholds from labelled data",
        _tune_arguments,
        lambda args: asyncio.run(_tune(settings_of(args), args)),
    ),
    Command(
        "typos",
        "write a typo test set (spacing, jamo, 받침) from labelled data",
        _typos_arguments,
        lambda args: _typos(settings_of(args), args),
    ),
)

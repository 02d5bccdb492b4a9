"""``qroute eval``, ``tune`` and ``typos``: measure the router, choose its thresholds
(``qroute.cli.tuning``), and make a typo test set, all from labelled data."""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qroute.atomicfile import replace_file
from qroute.cli import tuning
from qroute.cli.common import (
    Command,
    print_json,
    read_labelled,
    settings_of,
    with_config,
    with_json,
)
from qroute.config import Settings
from qroute.errors import ConfigError

if TYPE_CHECKING:
    from qroute.evaluation.metrics import EvalResult
    from qroute.evaluation.precompute import Precomputed
    from qroute.table import TableReport
    from qroute.types import Example

__all__ = ["COMMANDS"]

# Equal-width confidence bins of the calibration error and the reliability diagram.
_BINS = 15


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


@dataclass(frozen=True)
class _Measured:
    """One evaluation pass: the metrics, the neighbours it searched (reused for the
    threshold curve, so each row is searched once), the fallback's figures, and the
    calibration error with its reliability bins."""

    result: EvalResult
    pre: Precomputed
    fallback: list[dict[str, Any]]
    confidence: list[float]
    ece: float
    bins: list[tuple[float, float, int]]


async def _measure(
    settings: Settings, args: argparse.Namespace, examples: list[Example]
) -> _Measured:
    from qroute.evaluation.calibration import expected_calibration_error
    from qroute.evaluation.run import evaluate_once
    from qroute.routing.classifier import Classifier

    classifier = await asyncio.to_thread(Classifier.from_settings, settings)
    try:
        warning = classifier.tuning_warning()
        if warning:
            print(f"warning: {warning}", file=sys.stderr)
        once = await evaluate_once(
            classifier, examples, oos_label=args.oos_label, progress=not args.no_progress
        )
        fallback = await _fallback_figures(classifier, examples, once.result, args)
    finally:
        await classifier.close()
    ece, bins = expected_calibration_error(once.confidence, once.right, bins=_BINS)
    return _Measured(once.result, once.pre, fallback, list(once.confidence), ece, bins)


def _threshold_curve(settings: Settings, args: argparse.Namespace, pre: Precomputed) -> Any:
    """Accuracy, coverage (and out-of-scope recall) over the similarity threshold, every
    other setting as configured."""
    from qroute.evaluation.tune import sweep

    router = settings.router
    return sweep(
        pre,
        router,
        settings.zero_shot,
        oos_label=args.oos_label,
        none_label=settings.table.none_label,
        ks=[router.k],
        margins=[router.min_margin],
        zero_shot_thresholds=[settings.zero_shot.threshold],
        # Where the index has a head the sweep would otherwise try every vote weight and
        # draw the curve at its best one, not at the configured one.
        vote_weights=[router.vote_weight],
        per_label=False,
    ).curve


def _eval_report(
    settings: Settings, measured: _Measured, table: TableReport, evaluated: int
) -> dict[str, Any]:
    """eval.json's document."""
    import json

    report: dict[str, Any] = json.loads(measured.result.to_json())
    report["table"] = {"rows": table.rows, "evaluated": evaluated, "left_out": table.dropped()}
    if measured.fallback:
        report["fallback"] = measured.fallback
    report["calibration"] = {
        "ece": round(measured.ece, 4),
        "bins": _BINS,
        "answered": len(measured.confidence),
        "calibrated": sorted(settings.router.calibration),
        "reliability": [
            {"confidence": round(c, 4), "accuracy": round(a, 4), "rows": n}
            for c, a, n in measured.bins
        ],
    }
    return report


def _write_eval(
    settings: Settings,
    args: argparse.Namespace,
    measured: _Measured,
    report: dict[str, Any],
    curve: dict[str, list[float]],
) -> list[str]:
    """eval.json, threshold.json and the PNGs under --out; their paths."""
    import json

    from qroute.evaluation.plots import plot_confusion, plot_curve, plot_reliability

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    replace_file(out / "eval.json", json.dumps(report, ensure_ascii=False, indent=2))
    plot_confusion(measured.result, out / "confusion.png")
    series = {k: v for k, v in curve.items() if k != "threshold"}
    plot_curve(
        curve["threshold"],
        series,
        out / "threshold.png",
        xlabel="router.similarity_threshold",
        mark=settings.router.similarity_threshold,
    )
    replace_file(out / "threshold.json", json.dumps(curve))
    plot_reliability(measured.bins, measured.ece, out / "reliability.png")
    return [
        str(out / name)
        for name in (
            "eval.json",
            "confusion.png",
            "threshold.png",
            "threshold.json",
            "reliability.png",
        )
    ]


def _print_eval(settings: Settings, measured: _Measured, files: list[str]) -> None:
    print(measured.result.render())
    calibrated = ", ".join(sorted(settings.router.calibration)) or "none: uncalibrated"
    print(
        f"expected calibration error {measured.ece:.4f} over {len(measured.confidence)} "
        f"answers (calibrated paths: {calibrated})"
    )
    for row in measured.fallback:
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


async def _eval(settings: Settings, args: argparse.Namespace) -> int:
    examples, table = read_labelled(args.data, settings)
    args.oos_label = args.oos_label or settings.table.none_label
    measured = await _measure(settings, args, examples)
    curve = _threshold_curve(settings, args, measured.pre)
    report = _eval_report(settings, measured, table, len(examples))
    files = _write_eval(settings, args, measured, report, curve)
    if args.json:
        print_json({**report, "files": files})
        return 0
    _print_eval(settings, measured, files)
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

    from qroute.evaluation.typos import typo_set
    from qroute.table import read_table

    examples = read_table(args.data, settings.table)
    kinds: Counter[str] = Counter()
    lines = []
    for typo in typo_set(examples, seed=args.seed):
        row = {
            "text": typo.text,
            "label": typo.example.label,
            "original": typo.example.text,
            "kind": typo.kind,
        }
        lines.append(json.dumps(row, ensure_ascii=False) + "\n")
        kinds[typo.kind] += 1
    out = Path(args.out)
    # As eval's --out: a folder named for the set is made, not a "No such file" error.
    out.parent.mkdir(parents=True, exist_ok=True)
    replace_file(out, "".join(lines))
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
    *tuning.COMMANDS,
    Command(
        "typos",
        "write a typo test set (spacing, jamo, 받침) from labelled data",
        _typos_arguments,
        lambda args: _typos(settings_of(args), args),
    ),
)

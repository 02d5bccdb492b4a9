"""``qroute tune``: choose the thresholds (and the confidence calibration) from labelled
data, measure the choice on rows it did not see, and write it into the config file."""

from __future__ import annotations

import argparse
import asyncio
import sys
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

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
    from qroute.evaluation.crossval import CrossValidated
    from qroute.evaluation.precompute import Precomputed
    from qroute.evaluation.tune import Choice, Sweep
    from qroute.types import Example

__all__ = ["COMMANDS"]


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


def _tune_rows(settings: Settings, args: argparse.Namespace) -> tuple[str, list[Example]]:
    """The rows to tune on: DATA, or with --cross-validate the indexed table (only the
    rows a fine-tuned encoder held out, if it was fine-tuned on this table)."""

    source = args.table if args.cross_validate else args.data
    if not source:
        raise ConfigError("qroute tune needs DATA, or --cross-validate --table TABLE")
    examples, _ = read_labelled(source, settings)
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


@dataclass(frozen=True)
class _Searched:
    """The rows' neighbours, and the index they were searched in."""

    pre: Precomputed
    version: str
    fingerprint: str


async def _search(
    settings: Settings, args: argparse.Namespace, examples: list[Example]
) -> _Searched:
    """One encoding and search pass over the tuning rows (leave-one-out with
    --cross-validate), saying on stderr what makes its figures optimistic."""
    from qroute.evaluation.precompute import precompute
    from qroute.routing.classifier import Classifier

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
    return _Searched(pre, index.version if index else "", fingerprint)


@dataclass(frozen=True)
class _Tuned:
    """The sweep, its choice, the choice measured on held-out folds (None with --folds
    0) and the calibration fitted under it (None with --no-calibration)."""

    result: Sweep
    validated: CrossValidated | None
    calibration: dict[str, list[tuple[float, float]]] | None

    @property
    def choice(self) -> Choice:
        return self.result.best


def _choose(settings: Settings, args: argparse.Namespace, pre: Precomputed) -> _Tuned:
    from qroute.evaluation.calibration import calibrate_choice
    from qroute.evaluation.crossval import cross_validate
    from qroute.evaluation.tune import sweep

    labels: dict[str, Any] = {
        "oos_label": args.oos_label or settings.table.none_label,
        "none_label": settings.table.none_label,
    }
    options: dict[str, Any] = {
        "objective": args.objective,
        "target": args.target,
        "per_label": not args.no_label_thresholds,
        "min_label_threshold": args.min_label_threshold,
    }
    if args.folds and len(pre.truth) < 2:
        raise ConfigError(
            f"--folds {args.folds}: cross-validation needs at least 2 rows to tune on, not "
            f"{len(pre.truth)}: add rows, or use --folds 0 (the fitted figures only)"
        )
    fit = not args.no_calibration
    result = sweep(pre, settings.router, settings.zero_shot, **labels, **options)
    validated = (
        cross_validate(
            pre,
            settings.router,
            settings.zero_shot,
            folds=args.folds,
            calibrate=fit,
            **labels,
            **options,
        )
        if args.folds
        else None
    )
    calibrated = calibrate_choice(
        pre, settings.router, settings.zero_shot, result.best, fit=fit, **labels
    )
    return _Tuned(replace(result, best=calibrated.choice), validated, calibrated.calibration)


def _write_report(args: argparse.Namespace, tuned: _Tuned) -> None:
    """tune.json and the trade-off curve's PNG under --out."""
    import json
    from pathlib import Path

    from qroute.evaluation.plots import plot_curve

    choice, result, validated = tuned.choice, tuned.result, tuned.validated
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "choice": choice.__dict__,
        "fitted": choice.figures(),
        "held_out": None if validated is None else validated.__dict__,
        "calibration": tuned.calibration,
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


def _write_tuned(args: argparse.Namespace, tuned: _Tuned, searched: _Searched, source: str) -> None:
    from qroute.configfile import config_file
    from qroute.evaluation.tuned import write_tuned

    path = config_file(args.config)
    if path is None:
        raise ConfigError("--write needs a config file: pass --config FILE")
    write_tuned(
        path,
        tuned.choice,
        encoder=searched.fingerprint,
        index_version=searched.version,
        objective=args.objective,
        data=str(source),
        validated=tuned.validated,
        calibration=tuned.calibration,
    )
    # Under --json, stdout carries the one JSON document.
    print(f"wrote the tuned values into {path}", file=sys.stderr if args.json else sys.stdout)


def _print_tuned(args: argparse.Namespace, tuned: _Tuned) -> None:
    choice, validated = tuned.choice, tuned.validated
    print(
        f"best of {tuned.result.evaluated} settings ({args.objective}): k={choice.k} "
        f"similarity_threshold={choice.similarity_threshold:.3f} min_margin={choice.min_margin} "
        f"zero_shot.threshold={choice.zero_shot_threshold:.3f} "
        + ("" if choice.vote_weight is None else f"vote_weight={choice.vote_weight} ")
        + f"per-label overrides={len(choice.label_thresholds)}"
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
    if tuned.calibration:
        print(f"calibrated confidence for: {', '.join(sorted(tuned.calibration))}")


def _render(figures: dict[str, Any], ranges: dict[str, tuple[float, float]]) -> str:
    return ", ".join(
        f"{k} {v}" + (f" [{ranges[k][0]}, {ranges[k][1]}]" if k in ranges else "")
        for k, v in figures.items()
        if v is not None
    )


async def _tune(settings: Settings, args: argparse.Namespace) -> int:
    if args.folds == 1 or args.folds < 0:
        raise ConfigError(f"--folds {args.folds}: use 0 (no cross-validation) or 2 and more")
    # A share (NaN fails it too): 90 meant as 90% would only end in "no setting meets it".
    if not 0.0 <= args.target <= 1.0:
        raise ConfigError(f"--target {args.target:g}: a share in [0, 1] (0.9 is 90%)")
    source, examples = _tune_rows(settings, args)
    searched = await _search(settings, args, examples)
    tuned = _choose(settings, args, searched.pre)
    _write_report(args, tuned)
    if args.json:
        if args.write:
            _write_tuned(args, tuned, searched, source)
        choice, validated = tuned.choice, tuned.validated
        figures = {"choice": choice.__dict__, "figures": choice.figures()}
        if validated is not None:
            figures["held_out"] = validated.__dict__
        print_json({**figures, "evaluated": tuned.result.evaluated, "objective": args.objective})
        return 0
    _print_tuned(args, tuned)
    if args.write:
        _write_tuned(args, tuned, searched, source)
    return 0


COMMANDS = (
    Command(
        "tune",
        "choose thresholds from labelled data",
        _tune_arguments,
        lambda args: asyncio.run(_tune(settings_of(args), args)),
    ),
)

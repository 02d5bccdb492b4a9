"""Confidence as the probability of being right: ``fit_calibration`` fits, per decision
path, an isotonic map from the deciding score to being right (stored as
``router.calibration`` knots, which ``qroute.routing.vote.calibrate`` applies);
``expected_calibration_error`` measures how far a confidence is from that probability."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from qroute.config import RouterSettings, ZeroShotSettings
from qroute.evaluation import bounds
from qroute.evaluation.precompute import Precomputed
from qroute.evaluation.tune import Choice, decisions

__all__ = ["Calibrated", "calibrate_choice", "expected_calibration_error", "fit_calibration"]


def fit_calibration(
    pre: Precomputed,
    router: RouterSettings,
    zs: ZeroShotSettings,
    *,
    oos_label: str | None = None,
    none_label: str | None = None,
    min_rows: int = 20,
    max_knots: int = 20,
) -> dict[str, list[tuple[float, float]]]:
    """Per decision path (knn, head, zero_shot) with at least ``min_rows`` answers under
    these settings: isotonic regression from the deciding score to being right, as at
    most ``max_knots`` (score, probability) knots for ``router.calibration``."""
    from qroute.hub import optional_import

    isotonic = optional_import("sklearn.isotonic", "eval", "fitting the confidence calibration")
    uncalibrated = router.model_copy(update={"calibration": {}, "min_confidence": 0.0})
    a, ids, pred, used = decisions(pre, uncalibrated, zs, none_label)
    truth = np.array([ids[t] for t in pre.truth])
    oos = np.array([t == oos_label for t in pre.truth], dtype=bool)
    right = (pred == truth) & ~oos
    answered = pred != -1
    paths = {
        "knn": answered & ~used & ~a.via_head,
        "head": answered & ~used & a.via_head,
        "zero_shot": answered & used,
    }
    out: dict[str, list[tuple[float, float]]] = {}
    for path, rows in paths.items():
        if rows.sum() < min_rows:
            continue
        x = (a.zs_score if path == "zero_shot" else a.share)[rows]
        model = isotonic.IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
        model.fit(x, right[rows].astype(float))
        xs = np.asarray(model.X_thresholds_, dtype=float)
        ys = np.asarray(model.y_thresholds_, dtype=float)
        if len(xs) > max_knots:
            keep = np.unique(np.linspace(0, len(xs) - 1, max_knots).round().astype(int))
            xs, ys = xs[keep], ys[keep]
        knots: list[tuple[float, float]] = []
        for x_, y_ in zip(xs.tolist(), ys.tolist(), strict=True):
            x_, y_ = round(x_, 4), round(y_, 4)
            if knots and x_ <= knots[-1][0]:
                continue
            knots.append((x_, max(y_, knots[-1][1]) if knots else y_))
        out[path] = knots
    return out


class Calibrated(NamedTuple):
    """A sweep's choice once calibrated: its settings as the router runs them, and its
    figures under them."""

    choice: Choice
    router: RouterSettings
    zero_shot: ZeroShotSettings
    # The knots fitted at the choice (None: not fitted, the config's own stay).
    calibration: dict[str, list[tuple[float, float]]] | None


def calibrate_choice(
    pre: Precomputed,
    router: RouterSettings,
    zs: ZeroShotSettings,
    choice: Choice,
    *,
    fit: bool = True,
    oos_label: str | None = None,
    none_label: str | None = None,
) -> Calibrated:
    """``choice`` with its calibration fitted on ``pre`` (``fit``) and its figures as the
    router decides with it. The sweep leaves ``router.min_confidence`` out, since the
    calibration it is read through is fitted at the chosen settings only afterwards: its
    refusals are counted here, so that what ``tune`` reports is what ``eval`` measures."""
    r, z = choice.settings(router, zs)
    calibration = None
    if fit:
        calibration = fit_calibration(pre, r, z, oos_label=oos_label, none_label=none_label)
        r = r.model_copy(update={"calibration": calibration})
    if r.min_confidence <= 0.0:
        return Calibrated(choice, r, z, calibration)  # the calibration decides nothing
    _, ids, pred, used = decisions(pre, r, z, none_label)
    truth = np.array([ids[t] for t in pre.truth], dtype=int)
    oos = np.array([t == oos_label for t in pre.truth], dtype=bool)
    figures = bounds.figures(bounds.counts(pred, used, truth, oos))
    return Calibrated(
        dataclasses.replace(
            choice,
            accuracy=float(figures["accuracy"] or 0.0),
            in_scope_accuracy=float(figures["in_scope_accuracy"] or 0.0),
            oos_recall=figures["oos_recall"],
            coverage=float(figures["coverage"] or 0.0),
            zero_shot_rate=float(figures["zero_shot_rate"] or 0.0),
        ),
        r,
        z,
        calibration,
    )


def expected_calibration_error(
    confidence: Sequence[float], right: Sequence[bool], bins: int = 15
) -> tuple[float, list[tuple[float, float, int]]]:
    """(ECE, per bin (mean confidence, accuracy, rows)) over equal-width bins in [0, 1]."""
    c = np.clip(np.asarray(confidence, dtype=float), 0.0, 1.0)
    r = np.asarray(right, dtype=float)
    which = np.minimum((c * bins).astype(int), bins - 1)
    ece, table = 0.0, []
    for b in range(bins):
        rows = which == b
        if not rows.any():
            continue
        mean_c, acc = float(c[rows].mean()), float(r[rows].mean())
        ece += rows.sum() / len(c) * abs(mean_c - acc)
        table.append((mean_c, acc, int(rows.sum())))
    return float(ece), table

"""The tuning procedure measured on rows it did not see: ``cross_validate`` chooses on
k-1 folds with ``qroute.evaluation.tune.sweep``, decides the held-out fold with that
choice, and pools the held-out decisions; those pooled figures, with their intervals, are
what the config promises."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from qroute.config import RouterSettings, ZeroShotSettings
from qroute.evaluation import bounds
from qroute.evaluation.calibration import calibrate_choice
from qroute.evaluation.precompute import Precomputed
from qroute.evaluation.tune import decisions, sweep

__all__ = ["CrossValidated", "cross_validate"]


@dataclass(frozen=True)
class CrossValidated:
    """The tuning procedure measured on rows it did not see: each fold's rows decided by
    the settings chosen on the other folds, pooled."""

    folds: int
    figures: dict[str, float | None]
    ranges: dict[str, tuple[float, float]]
    # Each fold's chosen (k, similarity_threshold, vote_weight or None where not swept):
    # how stable the choice is.
    chosen: list[tuple[int, float, float | None]]


def _folds(truth: Sequence[str], folds: int, seed: int) -> np.ndarray:
    """A fold number per row, stratified by label (every fold sees each label's rows,
    the out-of-scope ones too, in proportion)."""
    rng = np.random.default_rng(seed)
    key = rng.random(len(truth))
    order = sorted(range(len(truth)), key=lambda i: (truth[i], key[i]))
    fold = np.empty(len(truth), dtype=int)
    fold[order] = np.arange(len(truth)) % folds
    return fold


def cross_validate(
    pre: Precomputed,
    router: RouterSettings,
    zs: ZeroShotSettings,
    *,
    folds: int = 5,
    seed: int = 0,
    oos_label: str | None = None,
    none_label: str | None = None,
    calibrate: bool = False,
    **options: Any,
) -> CrossValidated:
    """Choose on ``folds - 1`` folds with ``sweep(**options)``, decide the held-out fold
    with that choice, and pool the held-out decisions into figures with ranges. With
    ``calibrate`` each fold's calibration is fitted on its own tuning folds, as ``tune``
    fits it on all the rows (else ``router``'s stands); either way the held-out fold is
    decided with it, ``router.min_confidence`` included."""
    if folds < 2:
        raise ValueError("cross-validation needs at least 2 folds")
    if len(pre.truth) < 2:
        # One row's fold would leave the other folds no row to choose on.
        raise ValueError(f"cross-validation needs at least 2 rows, not {len(pre.truth)}")
    fold = _folds(pre.truth, folds, seed)
    truth: list[str] = []
    predicted: list[str | None] = []
    used_all: list[bool] = []
    chosen = []
    for f in range(folds):
        train = pre.subset(np.flatnonzero(fold != f).tolist())
        test = pre.subset(np.flatnonzero(fold == f).tolist())
        choice = sweep(
            train, router, zs, oos_label=oos_label, none_label=none_label, **options
        ).best
        chosen.append((choice.k, round(choice.similarity_threshold, 4), choice.vote_weight))
        fitted = calibrate_choice(
            train, router, zs, choice, fit=calibrate, oos_label=oos_label, none_label=none_label
        )
        _, ids, pred, used = decisions(test, fitted.router, fitted.zero_shot, none_label)
        names = {i: label for label, i in ids.items()}
        truth += test.truth
        predicted += [None if int(p) == -1 else names[int(p)] for p in pred]
        used_all += used.tolist()
    labels = sorted(set(truth) | {p for p in predicted if p is not None})
    ids = {label: i for i, label in enumerate(labels)}
    counted = bounds.counts(
        np.array([-1 if p is None else ids[p] for p in predicted]),
        np.array(used_all, dtype=bool),
        np.array([ids[t] for t in truth]),
        np.array([t == oos_label for t in truth], dtype=bool),
    )
    figures = {k: None if v is None else round(v, 4) for k, v in bounds.figures(counted).items()}
    return CrossValidated(folds, figures, bounds.ranges(counted), chosen)

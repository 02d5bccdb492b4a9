"""Tune the decision thresholds from labelled data.

One encoding and search pass (``qroute.evaluation.precompute``) keeps, for each labelled
query, its label groups at the largest k swept and the zero-shot score of every label in
them. The sweep then replays the decision rule (``qroute.routing.vote``)
over those numbers for every combination of similarity threshold, ambiguity margin,
zero-shot threshold and k, vectorised with numpy, and picks the best under an objective.
Per-label thresholds are then improved one label at a time; ``qroute.evaluation.tuned``
writes the result into the config file.

A constrained figure is met on its 95% Wilson bound (``qroute.evaluation.bounds``);
``qroute.evaluation.crossval`` measures the procedure itself on rows it did not see, and
``qroute.evaluation.calibration`` fits confidence to the probability of being right.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from qroute.config import RouterSettings, ZeroShotSettings
from qroute.evaluation import bounds
from qroute.evaluation.precompute import Precomputed
from qroute.routing.vote import VoteArrays, replay, vote_arrays

__all__ = ["Choice", "Sweep", "decisions", "predict", "sweep"]


@dataclass(frozen=True)
class Choice:
    k: int
    similarity_threshold: float
    min_margin: float
    zero_shot_threshold: float
    label_thresholds: dict[str, float]
    accuracy: float
    in_scope_accuracy: float
    oos_recall: float | None
    coverage: float
    zero_shot_rate: float
    # Whether the constraint holds on its Wilson bound over the tuning rows.
    meets_target: bool = True
    # router.vote_weight, where the rows have the head's scores to mix (None: not swept).
    vote_weight: float | None = None

    def settings(
        self, router: RouterSettings, zs: ZeroShotSettings
    ) -> tuple[RouterSettings, ZeroShotSettings]:
        """``router`` and ``zs`` with the chosen values."""
        update: dict[str, object] = {
            "k": self.k,
            "similarity_threshold": self.similarity_threshold,
            "min_margin": self.min_margin,
            "label_thresholds": dict(self.label_thresholds),
        }
        if self.vote_weight is not None:
            update["vote_weight"] = self.vote_weight
        chosen = router.model_copy(update=update)
        return chosen, zs.model_copy(update={"threshold": self.zero_shot_threshold})

    def figures(self) -> dict[str, float | None]:
        return {
            "accuracy": round(self.accuracy, 4),
            "in_scope_accuracy": round(self.in_scope_accuracy, 4),
            "oos_recall": None if self.oos_recall is None else round(self.oos_recall, 4),
            "coverage": round(self.coverage, 4),
            "zero_shot_rate": round(self.zero_shot_rate, 4),
        }


@dataclass
class Sweep:
    best: Choice
    evaluated: int
    # The trade-off curve at the chosen k, margin and zero-shot threshold.
    curve: dict[str, list[float]] = field(default_factory=dict)


def _single(pre: Precomputed, zs: ZeroShotSettings) -> bool:
    """Whether the zero-shot scorer answers with no threshold (NLI in single-label mode)."""
    return zs.mode == "single" and pre.method.startswith("nli")


@dataclass(frozen=True)
class _Trial:
    """What every trial of a sweep shares: the truth, the decision rule's fixed inputs and
    the objective; ``run`` scores one combination of thresholds, margin and zero-shot
    threshold."""

    truth: np.ndarray
    oos: np.ndarray
    min_agreeing: int
    single: bool
    method: str
    objective: bounds.Objective
    target: float
    z: float = bounds.Z95

    def decide(
        self, a: VoteArrays, thresholds: np.ndarray, margin: float, z: float
    ) -> tuple[np.ndarray, np.ndarray]:
        return replay(a, thresholds, margin, self.min_agreeing, z, self.single, self.method)

    def right(self, pred: np.ndarray) -> np.ndarray:
        right: np.ndarray = np.where(self.oos, pred == -1, pred == self.truth)
        return right

    def run(
        self, a: VoteArrays, thresholds: np.ndarray, margin: float, z: float
    ) -> tuple[dict[str, float | None], float]:
        """(figures, objective value) of the decisions with these parameters."""
        pred, used = self.decide(a, thresholds, margin, z)
        counts = bounds.counts(pred, used, self.truth, self.oos)
        value = bounds.objective_value(counts, self.objective, self.target, self.z)
        return bounds.figures(counts), value


def _zero_shot_grid(
    given: Sequence[float], pre: Precomputed, trial: _Trial, zs: ZeroShotSettings
) -> list[float]:
    """The zero-shot thresholds to try: the given ones, else a grid where the fallback
    scores candidates, else the configured one."""
    return list(
        given
        or (
            np.round(np.arange(0.0, 1.0001, 0.05), 3)
            if pre.method and not trial.single
            else [zs.threshold]
        )
    )


def sweep(
    pre: Precomputed,
    router: RouterSettings,
    zs: ZeroShotSettings,
    *,
    objective: bounds.Objective = "accuracy",
    target: float = 0.9,
    oos_label: str | None = None,
    ks: Sequence[int] = (),
    thresholds: Sequence[float] = (),
    # Vote shares of near-tied labels differ by hundredths; a head's probabilities by
    # tenths: the grid spans both scales.
    margins: Sequence[float] = (0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5),
    zero_shot_thresholds: Sequence[float] = (),
    vote_weights: Sequence[float] = (),
    per_label: bool = True,
    min_label_queries: int = 20,
    min_label_threshold: float | None = None,
    z: float = bounds.Z95,
    none_label: str | None = None,
) -> Sweep:
    """The best decision parameters under ``objective`` (``oos``: in-scope accuracy with
    out-of-scope recall >= target; ``zero-shot-rate``: accuracy with zero-shot rate <=
    target), the constraint holding on its Wilson bound at ``z`` (0: point estimate).
    With the head's scores in ``pre``, router.vote_weight is swept too (``vote_weights``,
    default 0 to 0.9; a tie keeps the smaller). A per-label threshold never goes below
    ``min_label_threshold`` (None: the shared threshold minus 0.1), so no label is tuned
    into never falling back."""
    ids = pre.label_ids()
    trial = _Trial(
        # Typed, so that no rows (an empty fold) is an empty figure, not a float array.
        truth=np.array([ids[t] for t in pre.truth], dtype=int),
        oos=np.array([t == oos_label for t in pre.truth], dtype=bool),
        min_agreeing=router.min_agreeing,
        single=_single(pre, zs),
        method=pre.method,
        objective=objective,
        target=target,
        z=z,
    )
    k_max = max((len(g) for g in pre.groups), default=1)
    ks = sorted({min(k, k_max) for k in (ks or (1, 3, 5, 10, k_max))})
    thresholds = list(thresholds or np.round(np.arange(0.0, 1.0001, 0.01), 3))
    zero_shot_thresholds = _zero_shot_grid(zero_shot_thresholds, pre, trial, zs)
    with_head = any(pre.head)
    weights = sorted(set(vote_weights or VOTE_WEIGHTS)) if with_head else [router.vote_weight]
    arrays = {
        (k, w): vote_arrays(
            pre.groups,
            pre.head,
            pre.zero_shot,
            k,
            router.model_copy(update={"vote_weight": w}),
            zs,
            ids,
            none_label,
            trial.single,
        )
        for k in ks
        for w in weights
    }
    grid = itertools.product(ks[::-1], weights, margins, zero_shot_thresholds)
    best_value, (k, w, t, margin, z, figures), evaluated = _best_shared(
        trial, arrays, grid, thresholds
    )
    a = arrays[(k, w)]
    label_thresholds: dict[str, float] = {}
    if per_label:
        floor = min_label_threshold if min_label_threshold is not None else t - 0.1
        label_thresholds, figures, best_value = _per_label_thresholds(
            trial,
            a,
            ids,
            (t, margin, z),
            [c for c in thresholds if c >= floor - 1e-9],
            best_value,
            figures,
            min_label_queries,
        )
    choice = Choice(
        k=k,
        similarity_threshold=float(t),
        min_margin=float(margin),
        zero_shot_threshold=float(z),
        label_thresholds={k_: v for k_, v in label_thresholds.items() if abs(v - t) > 1e-9},
        accuracy=float(figures["accuracy"] or 0.0),
        in_scope_accuracy=float(figures["in_scope_accuracy"] or 0.0),
        oos_recall=figures["oos_recall"],
        coverage=float(figures["coverage"] or 0.0),
        zero_shot_rate=float(figures["zero_shot_rate"] or 0.0),
        meets_target=objective == "accuracy" or best_value >= 0.0,
        vote_weight=float(w) if with_head else None,
    )
    curve = _curve(trial, a, thresholds, margin, z)
    return Sweep(best=choice, evaluated=evaluated, curve=curve)


# The vote weights tried where the head's scores can be mixed with the vote's: 1.0 is
# router.use_head false, which is the user's choice, not the tuner's.
VOTE_WEIGHTS = tuple(round(0.1 * i, 1) for i in range(10))

# k, vote weight, t, margin, z, figures
_Best = tuple[int, float, float, float, float, dict[str, float | None]]


def _best_shared(
    trial: _Trial,
    arrays: dict[tuple[int, float], VoteArrays],
    grid: Iterable[tuple[int, float, float, float]],
    thresholds: Sequence[float],
) -> tuple[float, _Best, int]:
    """(objective value, best parameters with their figures, trials run) of one similarity
    threshold for every label, over ``grid`` (k, vote weight, margin, zero-shot
    threshold) and ``thresholds``; the first best wins a tie."""
    best_value, best = -np.inf, None
    evaluated = 0
    # Largest k first (the grid's order), so a tie keeps it: fewer labels fetched gained
    # nothing, and a smaller k only removes labels the head (or a later table) may pick.
    for k, w, margin, z in grid:
        a = arrays[(k, w)]
        for t in thresholds:
            figures, value = trial.run(a, np.full(len(trial.truth), t), margin, z)
            evaluated += 1
            if value > best_value:
                best_value, best = value, (k, w, t, margin, z, figures)
    assert best is not None
    return best_value, best, evaluated


def _per_label_thresholds(
    trial: _Trial,
    a: VoteArrays,
    ids: dict[str, int],
    chosen: tuple[float, float, float],
    thresholds: Sequence[float],
    best_value: float,
    figures: dict[str, float | None],
    min_label_queries: int,
) -> tuple[dict[str, float], dict[str, float | None], float]:
    """(label -> its own similarity threshold, the figures with them, the objective
    value), improving on the ``chosen`` (threshold, margin, zero-shot threshold) one
    label at a time."""
    t, margin, z = chosen
    label_thresholds: dict[str, float] = {}
    names = {i: label for label, i in ids.items()}
    current = np.full(len(trial.truth), t)
    # Which rows' rightness the objective counts: in-scope ones for ``oos`` (recall is
    # the constraint), all of them otherwise.
    counted = ~trial.oos if trial.objective == "oos" else np.ones(len(trial.truth), bool)
    right_now = trial.right(trial.decide(a, current, margin, z)[0])
    # A per-label threshold must be earned: it needs enough queries that label wins,
    # keeps the constraint on its bound, and its net gain in right answers must pass a
    # sign test over the rows it changes (under no effect each change is a coin flip),
    # or it fits noise (bench/RESULTS.md: CLINC150's per-label overrides without this).
    for label_id in sorted(set(a.winner.tolist()) - {-1}):
        rows = a.winner == label_id
        if rows.sum() < min_label_queries:
            continue
        # Strictest first: of equally good thresholds the one closest to falling back.
        for candidate in sorted(thresholds, reverse=True):
            thresholds_now = np.where(rows, candidate, current)
            pred, used = trial.decide(a, thresholds_now, margin, z)
            right = trial.right(pred)
            changed = right != right_now
            net = int((right[counted] & ~right_now[counted]).sum()) - int(
                (right_now[counted] & ~right[counted]).sum()
            )
            counts = bounds.counts(pred, used, trial.truth, trial.oos)
            value = bounds.objective_value(counts, trial.objective, trial.target, trial.z)
            if (
                value > best_value
                and (value >= 0.0 or trial.objective == "accuracy")
                and net >= max(2.0, trial.z * math.sqrt(int(changed.sum())))
            ):
                best_value, figures, current, right_now = (
                    value,
                    bounds.figures(counts),
                    thresholds_now,
                    right,
                )
                label_thresholds[names[label_id]] = float(candidate)
    return label_thresholds, figures, best_value


def _curve(
    trial: _Trial, a: VoteArrays, thresholds: Sequence[float], margin: float, z: float
) -> dict[str, list[float]]:
    """The trade-off curve over ``thresholds`` at the chosen k, margin and zero-shot
    threshold (``oos_recall`` only with out-of-scope rows)."""
    curve: dict[str, list[float]] = {
        "threshold": [],
        "accuracy": [],
        "coverage": [],
        "oos_recall": [],
    }
    for candidate in thresholds:
        f, _ = trial.run(a, np.full(len(trial.truth), candidate), margin, z)
        curve["threshold"].append(float(candidate))
        curve["accuracy"].append(float(f["accuracy"] or 0.0))
        curve["coverage"].append(float(f["coverage"] or 0.0))
        if f["oos_recall"] is not None:
            curve["oos_recall"].append(float(f["oos_recall"]))
    if not curve["oos_recall"]:
        del curve["oos_recall"]
    return curve


def decisions(
    pre: Precomputed,
    router: RouterSettings,
    zs: ZeroShotSettings,
    none_label: str | None = None,
) -> tuple[VoteArrays, dict[str, int], np.ndarray, np.ndarray]:
    """(the vote's arrays, label ids, predicted id or -1, zero-shot answered) for exactly
    these settings: what the classifier would decide."""
    ids = pre.label_ids()
    a = vote_arrays(
        pre.groups, pre.head, pre.zero_shot, router.k, router, zs, ids, none_label, _single(pre, zs)
    )
    names = {i: label for label, i in ids.items()}
    thresholds = np.array(
        [
            router.label_thresholds.get(names.get(int(w), ""), router.similarity_threshold)
            for w in a.winner
        ]
    )
    pred, used = replay(
        a,
        thresholds,
        router.min_margin,
        router.min_agreeing,
        zs.threshold,
        _single(pre, zs),
        pre.method,
        router.calibration,
        router.min_confidence,
    )
    return a, ids, pred, used


def predict(
    pre: Precomputed,
    router: RouterSettings,
    zs: ZeroShotSettings,
    none_label: str | None = None,
) -> list[str | None]:
    """The decisions the sweep would make for exactly these settings (for checks)."""
    _, ids, pred, _ = decisions(pre, router, zs, none_label)
    names = {i: label for label, i in ids.items()}
    return [None if int(p) == -1 else names[int(p)] for p in pred]

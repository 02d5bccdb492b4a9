"""Tune the decision thresholds from labelled data.

One encoding and search pass (``qroute.evaluation.precompute``) keeps, for each labelled
query, its label groups at the largest k swept and the zero-shot score of every label in
them. The sweep then replays the decision rule (``qroute.routing.vote``)
over those numbers for every combination of similarity threshold, ambiguity margin,
zero-shot threshold and k, vectorised with numpy, and picks the best under an objective.
Per-label thresholds are then improved one label at a time. ``write_tuned`` puts the
result into the config file, keeping its comments and every other key.

A constrained figure (out-of-scope recall >= target, zero-shot rate <= target) is met
on the 95% Wilson bound of the rows it is measured on, not on the point estimate: on 100
out-of-scope rows a recall of 0.90 is 0.90 +- 0.06, and a setting chosen on its point
estimate misses the target on new traffic about half the time. ``cross_validate`` then
measures the procedure itself: chosen on k-1 folds, scored on the held-out one, pooled;
those pooled figures, with their intervals, are what the config promises.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from qroute.config import RouterSettings, ZeroShotSettings
from qroute.evaluation.precompute import Precomputed
from qroute.routing.vote import VoteArrays, replay, vote_arrays

__all__ = [
    "Choice",
    "CrossValidated",
    "Sweep",
    "cross_validate",
    "decisions",
    "expected_calibration_error",
    "fit_calibration",
    "predict",
    "sweep",
    "wilson",
    "write_tuned",
]

Z95 = 1.959963984540054


def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion: (low, high); (0, 1) without rows."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


Objective = Literal["accuracy", "oos", "zero-shot-rate"]


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

    def settings(
        self, router: RouterSettings, zs: ZeroShotSettings
    ) -> tuple[RouterSettings, ZeroShotSettings]:
        """``router`` and ``zs`` with the chosen values."""
        chosen = router.model_copy(
            update={
                "k": self.k,
                "similarity_threshold": self.similarity_threshold,
                "min_margin": self.min_margin,
                "label_thresholds": dict(self.label_thresholds),
            }
        )
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


def _counts(
    pred: np.ndarray, used: np.ndarray, truth: np.ndarray, oos: np.ndarray
) -> dict[str, tuple[int, int]]:
    """Each figure as (successes, rows it is measured on)."""
    right = np.where(oos, pred == -1, pred == truth)
    inside = ~oos
    n = len(truth)
    return {
        "accuracy": (int(right.sum()), n),
        "in_scope_accuracy": (int(right[inside].sum()), int(inside.sum())),
        "oos_recall": (int((pred[oos] == -1).sum()), int(oos.sum())),
        "coverage": (int((pred != -1).sum()), n),
        "zero_shot_rate": (int(used.sum()), n),
    }


def _figures(counts: Mapping[str, tuple[int, int]]) -> dict[str, float | None]:
    figures: dict[str, float | None] = {k: s / n if n else 0.0 for k, (s, n) in counts.items()}
    if counts["oos_recall"][1] == 0:
        figures["oos_recall"] = None
    return figures


def ranges(counts: Mapping[str, tuple[int, int]], z: float = Z95) -> dict[str, tuple[float, float]]:
    """Each figure's expected range on unseen data (its Wilson interval)."""
    return {
        k: (round(low, 4), round(high, 4))
        for k, (s, n) in counts.items()
        if n
        for low, high in [wilson(s, n, z)]
    }


def _score(
    pred: np.ndarray, used: np.ndarray, truth: np.ndarray, oos: np.ndarray
) -> dict[str, float | None]:
    return _figures(_counts(pred, used, truth, oos))


def _objective(
    counts: Mapping[str, tuple[int, int]], objective: Objective, target: float, z: float
) -> float:
    """The value to maximise: the figure the objective names where the constraint holds
    on its Wilson bound (``z`` 0: on the point estimate), else below every feasible
    value, closer to feasible the higher."""
    figures = _figures(counts)
    if objective == "accuracy":
        return float(figures["accuracy"] or 0.0)
    if objective == "oos":
        hits, n = counts["oos_recall"]
        low = wilson(hits, n, z)[0] if n else 1.0
        feasible = n == 0 or low >= target
        return float(figures["in_scope_accuracy"] or 0.0) if feasible else -1.0 + low
    high = wilson(*counts["zero_shot_rate"], z)[1]
    return float(figures["accuracy"] or 0.0) if high <= target else -high


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
    objective: Objective
    target: float
    z: float = Z95

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
        counts = _counts(pred, used, self.truth, self.oos)
        return _figures(counts), _objective(counts, self.objective, self.target, self.z)


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
    objective: Objective = "accuracy",
    target: float = 0.9,
    oos_label: str | None = None,
    ks: Sequence[int] = (),
    thresholds: Sequence[float] = (),
    margins: Sequence[float] = (0.0, 0.005, 0.01, 0.02, 0.05),
    zero_shot_thresholds: Sequence[float] = (),
    per_label: bool = True,
    min_label_queries: int = 20,
    min_label_threshold: float | None = None,
    z: float = Z95,
    none_label: str | None = None,
) -> Sweep:
    """The best decision parameters under ``objective`` (``oos``: in-scope accuracy with
    out-of-scope recall >= target; ``zero-shot-rate``: accuracy with zero-shot rate <=
    target), the constraint holding on its Wilson bound at ``z`` (0: point estimate).
    A per-label threshold never goes below ``min_label_threshold`` (None: the shared
    threshold minus 0.1), so no label is tuned into never falling back."""
    ids = pre.label_ids()
    trial = _Trial(
        truth=np.array([ids[t] for t in pre.truth]),
        oos=np.array([t == oos_label for t in pre.truth]),
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
    arrays = {
        k: vote_arrays(pre.groups, pre.head, pre.zero_shot, k, router, zs, ids, none_label)
        for k in ks
    }
    grid = itertools.product(ks[::-1], margins, zero_shot_thresholds)
    best_value, (k, t, margin, z, figures), evaluated = _best_shared(
        trial, arrays, grid, thresholds
    )
    a = arrays[k]
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
    )
    curve = _curve(trial, a, thresholds, margin, z)
    return Sweep(best=choice, evaluated=evaluated, curve=curve)


_Best = tuple[int, float, float, float, dict[str, float | None]]  # k, t, margin, z, figures


def _best_shared(
    trial: _Trial,
    arrays: dict[int, VoteArrays],
    grid: Iterable[tuple[int, float, float]],
    thresholds: Sequence[float],
) -> tuple[float, _Best, int]:
    """(objective value, best parameters with their figures, trials run) of one similarity
    threshold for every label, over ``grid`` (k, margin, zero-shot threshold) and
    ``thresholds``; the first best wins a tie."""
    best_value, best = -np.inf, None
    evaluated = 0
    # Largest k first (the grid's order), so a tie keeps it: fewer labels fetched gained
    # nothing, and a smaller k only removes labels the head (or a later table) may pick.
    for k, margin, z in grid:
        a = arrays[k]
        for t in thresholds:
            figures, value = trial.run(a, np.full(len(trial.truth), t), margin, z)
            evaluated += 1
            if value > best_value:
                best_value, best = value, (k, t, margin, z, figures)
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
            counts = _counts(pred, used, trial.truth, trial.oos)
            value = _objective(counts, trial.objective, trial.target, trial.z)
            if (
                value > best_value
                and (value >= 0.0 or trial.objective == "accuracy")
                and net >= max(2.0, trial.z * math.sqrt(int(changed.sum())))
            ):
                best_value, figures, current, right_now = (
                    value,
                    _figures(counts),
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
    a = vote_arrays(pre.groups, pre.head, pre.zero_shot, router.k, router, zs, ids, none_label)
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


@dataclass(frozen=True)
class CrossValidated:
    """The tuning procedure measured on rows it did not see: each fold's rows decided by
    the settings chosen on the other folds, pooled."""

    folds: int
    figures: dict[str, float | None]
    ranges: dict[str, tuple[float, float]]
    # Each fold's chosen (k, similarity_threshold): how stable the choice is.
    chosen: list[tuple[int, float]]


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
    **options: Any,
) -> CrossValidated:
    """Choose on ``folds - 1`` folds with ``sweep(**options)``, decide the held-out fold
    with that choice, and pool the held-out decisions into figures with ranges."""
    if folds < 2:
        raise ValueError("cross-validation needs at least 2 folds")
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
        chosen.append((choice.k, round(choice.similarity_threshold, 4)))
        r, z = choice.settings(router, zs)
        _, ids, pred, used = decisions(test, r, z, none_label)
        names = {i: label for label, i in ids.items()}
        truth += test.truth
        predicted += [None if int(p) == -1 else names[int(p)] for p in pred]
        used_all += used.tolist()
    labels = sorted(set(truth) | {p for p in predicted if p is not None})
    ids = {label: i for i, label in enumerate(labels)}
    counts = _counts(
        np.array([-1 if p is None else ids[p] for p in predicted]),
        np.array(used_all, dtype=bool),
        np.array([ids[t] for t in truth]),
        np.array([t == oos_label for t in truth], dtype=bool),
    )
    figures = {k: None if v is None else round(v, 4) for k, v in _figures(counts).items()}
    return CrossValidated(folds, figures, ranges(counts), chosen)


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


def write_tuned(
    path: str | Path,
    choice: Choice,
    *,
    encoder: str,
    index_version: str,
    objective: str,
    data: str,
    validated: CrossValidated | None = None,
    calibration: Mapping[str, Sequence[tuple[float, float]]] | None = None,
) -> None:
    """Write the chosen values into the YAML config at ``path``, keeping its comments,
    key order and every key this does not set. With ``validated`` the figures are the
    held-out ones with their ranges; ``calibration`` replaces router.calibration."""
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.preserve_quotes = True
    path = Path(path)
    document: Any = yaml.load(path.read_text(encoding="utf-8")) if path.exists() else None
    if document is None:
        from ruamel.yaml.comments import CommentedMap

        document = CommentedMap()
    router = document.setdefault("router", {})
    router["k"] = choice.k
    router["similarity_threshold"] = round(choice.similarity_threshold, 4)
    router["min_margin"] = round(choice.min_margin, 4)
    router["label_thresholds"] = {
        k: round(v, 4) for k, v in sorted(choice.label_thresholds.items())
    }
    if calibration is not None:
        from ruamel.yaml.comments import CommentedSeq

        def knot(x: float, y: float) -> CommentedSeq:
            pair = CommentedSeq([x, y])
            pair.fa.set_flow_style()  # one "- [score, probability]" line per knot
            return pair

        router["calibration"] = {
            path: [knot(x, y) for x, y in knots] for path, knots in calibration.items()
        }
    document.setdefault("zero_shot", {})["threshold"] = round(choice.zero_shot_threshold, 4)
    document["tuned"] = {
        "encoder": encoder,
        "index_version": index_version,
        "objective": objective,
        "data": data,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "figures": validated.figures if validated else choice.figures(),
        "ranges": {k: [low, high] for k, (low, high) in validated.ranges.items()}
        if validated
        else {},
        "folds": validated.folds if validated else 0,
    }
    with path.open("w", encoding="utf-8") as handle:
        yaml.dump(document, handle)

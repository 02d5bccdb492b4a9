"""Tune the decision thresholds from labelled data.

One encoding and search pass (``qroute.evaluation.precompute``) keeps, for each labelled
query, its label groups at the largest k swept and the zero-shot score of every label in
them. The sweep then replays the decision rule (``qroute.routing.vote``)
over those numbers for every combination of similarity threshold, ambiguity margin,
zero-shot threshold and k, vectorised with numpy, and picks the best under an objective.
Per-label thresholds are then improved one label at a time. ``write_tuned`` puts the
result into the config file, keeping its comments and every other key.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from qroute.config import RouterSettings, ZeroShotSettings
from qroute.evaluation.precompute import Precomputed
from qroute.routing.vote import VoteArrays, replay, vote_arrays

__all__ = ["Choice", "Sweep", "predict", "sweep", "write_tuned"]

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


def _score(
    pred: np.ndarray, used: np.ndarray, truth: np.ndarray, oos: np.ndarray
) -> dict[str, float | None]:
    right = np.where(oos, pred == -1, pred == truth)
    inside = ~oos
    return {
        "accuracy": float(right.mean()),
        "in_scope_accuracy": float(right[inside].mean()) if inside.any() else 0.0,
        "oos_recall": float((pred[oos] == -1).mean()) if oos.any() else None,
        "coverage": float((pred != -1).mean()),
        "zero_shot_rate": float(used.mean()),
    }


def _objective(figures: dict[str, float | None], objective: Objective, target: float) -> float:
    if objective == "accuracy":
        return float(figures["accuracy"] or 0.0)
    if objective == "oos":
        recall = figures["oos_recall"]
        feasible = recall is None or recall >= target
        return (
            float(figures["in_scope_accuracy"] or 0.0) if feasible else -1.0 + float(recall or 0.0)
        )
    feasible = (figures["zero_shot_rate"] or 0.0) <= target
    return (
        float(figures["accuracy"] or 0.0) if feasible else -float(figures["zero_shot_rate"] or 0.0)
    )


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

    def run(
        self, a: VoteArrays, thresholds: np.ndarray, margin: float, z: float
    ) -> tuple[dict[str, float | None], float]:
        """(figures, objective value) of the decisions with these parameters."""
        pred, used = replay(a, thresholds, margin, self.min_agreeing, z, self.single, self.method)
        figures = _score(pred, used, self.truth, self.oos)
        return figures, _objective(figures, self.objective, self.target)


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
) -> Sweep:
    """The best decision parameters under ``objective`` (``oos``: in-scope accuracy with
    out-of-scope recall >= target; ``zero-shot-rate``: accuracy with zero-shot rate <=
    target)."""
    ids = pre.label_ids()
    trial = _Trial(
        truth=np.array([ids[t] for t in pre.truth]),
        oos=np.array([t == oos_label for t in pre.truth]),
        min_agreeing=router.min_agreeing,
        single=_single(pre, zs),
        method=pre.method,
        objective=objective,
        target=target,
    )
    k_max = max((len(g) for g in pre.groups), default=1)
    ks = sorted({min(k, k_max) for k in (ks or (1, 3, 5, 10, k_max))})
    thresholds = list(thresholds or np.round(np.arange(0.0, 1.0001, 0.01), 3))
    zero_shot_thresholds = list(
        zero_shot_thresholds
        or (
            np.round(np.arange(0.0, 1.0001, 0.05), 3)
            if pre.method and not trial.single
            else [zs.threshold]
        )
    )
    arrays = {k: vote_arrays(pre.groups, pre.head, pre.zero_shot, k, router, zs, ids) for k in ks}
    grid = itertools.product(ks[::-1], margins, zero_shot_thresholds)
    best_value, (k, t, margin, z, figures), evaluated = _best_shared(
        trial, arrays, grid, thresholds
    )
    a = arrays[k]
    label_thresholds: dict[str, float] = {}
    if per_label:
        label_thresholds, figures = _per_label_thresholds(
            trial, a, ids, (t, margin, z), thresholds, best_value, figures, min_label_queries
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
) -> tuple[dict[str, float], dict[str, float | None]]:
    """(label -> its own similarity threshold, the figures with them), improving on the
    ``chosen`` (threshold, margin, zero-shot threshold) one label at a time."""
    t, margin, z = chosen
    label_thresholds: dict[str, float] = {}
    names = {i: label for label, i in ids.items()}
    current = np.full(len(trial.truth), t)
    # A per-label threshold must be earned: it needs enough queries that label wins,
    # and must gain at least two of them, or it fits noise (bench/RESULTS.md,
    # evaluate and tune: CLINC150's per-label overrides without this rule).
    min_gain = 2.0 / len(trial.truth)
    for label_id in sorted(set(a.winner.tolist()) - {-1}):
        rows = a.winner == label_id
        if rows.sum() < min_label_queries:
            continue
        for candidate in thresholds:
            thresholds_now = np.where(rows, candidate, current)
            trial_figures, value = trial.run(a, thresholds_now, margin, z)
            if value > best_value + min_gain:
                best_value, figures, current = value, trial_figures, thresholds_now
                label_thresholds[names[label_id]] = float(candidate)
    return label_thresholds, figures


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


def predict(pre: Precomputed, router: RouterSettings, zs: ZeroShotSettings) -> list[str | None]:
    """The decisions the sweep would make for exactly these settings (for checks)."""
    ids = pre.label_ids()
    a = vote_arrays(pre.groups, pre.head, pre.zero_shot, router.k, router, zs, ids)
    names = {i: label for label, i in ids.items()}
    thresholds = np.array(
        [
            router.label_thresholds.get(names.get(int(w), ""), router.similarity_threshold)
            for w in a.winner
        ]
    )
    single = _single(pre, zs)
    pred, _ = replay(
        a, thresholds, router.min_margin, router.min_agreeing, zs.threshold, single, pre.method
    )
    return [None if int(p) == -1 else names[int(p)] for p in pred]


def write_tuned(
    path: str | Path,
    choice: Choice,
    *,
    encoder: str,
    index_version: str,
    objective: str,
    data: str,
) -> None:
    """Write the chosen values into the YAML config at ``path``, keeping its comments,
    key order and every key this does not set."""
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
    document.setdefault("zero_shot", {})["threshold"] = round(choice.zero_shot_threshold, 4)
    document["tuned"] = {
        "encoder": encoder,
        "index_version": index_version,
        "objective": objective,
        "data": data,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "figures": choice.figures(),
    }
    with path.open("w", encoding="utf-8") as handle:
        yaml.dump(document, handle)

"""The figures a tuning is judged by, each with the rows it is measured on, and their
95% Wilson bounds.

A constrained figure (out-of-scope recall >= target, zero-shot rate <= target) is met
on its Wilson bound over the rows it is measured on, not on the point estimate: on 100
out-of-scope rows a recall of 0.90 is 0.90 +- 0.06, and a setting chosen on its point
estimate misses the target on new traffic about half the time.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Literal

import numpy as np

__all__ = ["Z95", "Objective", "counts", "figures", "objective_value", "ranges", "wilson"]

Z95 = 1.959963984540054

Objective = Literal["accuracy", "oos", "zero-shot-rate"]


def wilson(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion: (low, high); (0, 1) without rows."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def counts(
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


def figures(counted: Mapping[str, tuple[int, int]]) -> dict[str, float | None]:
    """Each figure as a proportion; out-of-scope recall None without out-of-scope rows."""
    out: dict[str, float | None] = {k: s / n if n else 0.0 for k, (s, n) in counted.items()}
    if counted["oos_recall"][1] == 0:
        out["oos_recall"] = None
    return out


def ranges(
    counted: Mapping[str, tuple[int, int]], z: float = Z95
) -> dict[str, tuple[float, float]]:
    """Each figure's expected range on unseen data (its Wilson interval)."""
    return {
        k: (round(low, 4), round(high, 4))
        for k, (s, n) in counted.items()
        if n
        for low, high in [wilson(s, n, z)]
    }


def objective_value(
    counted: Mapping[str, tuple[int, int]], objective: Objective, target: float, z: float
) -> float:
    """The value to maximise: the figure the objective names where the constraint holds
    on its Wilson bound (``z`` 0: on the point estimate), else below every feasible
    value, closer to feasible the higher."""
    measured = figures(counted)
    if objective == "accuracy":
        return float(measured["accuracy"] or 0.0)
    if objective == "oos":
        hits, n = counted["oos_recall"]
        low = wilson(hits, n, z)[0] if n else 1.0
        feasible = n == 0 or low >= target
        return float(measured["in_scope_accuracy"] or 0.0) if feasible else -1.0 + low
    high = wilson(*counted["zero_shot_rate"], z)[1]
    return float(measured["accuracy"] or 0.0) if high <= target else -high

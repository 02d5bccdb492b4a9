"""The kNN vote: label groups in, label scores out. Pure functions, no I/O."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Literal

from qroute.types import Group, LabelScore

__all__ = ["label_scores", "shares"]


def label_scores(
    groups: Sequence[Group], method: Literal["max", "mean", "max_mean"]
) -> list[LabelScore]:
    """Each label's score from its best neighbours' cosine similarities, best first.

    ``max``: the best similarity. ``mean``: the mean of the group's similarities (its
    best ``group_size``). ``max_mean``: the average of the two, so a label needs both
    one close example and several fairly close ones. A label is one group however many
    near-duplicates it holds: duplicates cannot outvote a closer match of another label.
    """
    scores = []
    for group in groups:
        similarities = [hit.similarity for hit in group.hits]
        best, mean = max(similarities), statistics.fmean(similarities)
        score = {"max": best, "mean": mean, "max_mean": (best + mean) / 2}[method]
        scores.append(LabelScore(group.label, score))
    return sorted(scores, key=lambda s: s.score, reverse=True)


def shares(scores: Sequence[LabelScore], temperature: float) -> list[LabelScore]:
    """Softmax of the label scores at ``temperature``: the KNN confidence per label."""
    if not scores:
        return []
    top = max(s.score for s in scores)
    weights = [math.exp((s.score - top) / temperature) for s in scores]
    total = sum(weights)
    ranked = [LabelScore(s.label, w / total) for s, w in zip(scores, weights, strict=True)]
    return sorted(ranked, key=lambda s: s.score, reverse=True)

"""The kNN vote: neighbours in, label scores out. Pure functions, no I/O."""

from __future__ import annotations

import math
from collections.abc import Sequence

from qroute.types import Hit, LabelScore

__all__ = ["vote"]


def vote(hits: Sequence[Hit], temperature: float) -> list[LabelScore]:
    """Similarity-weighted vote share per label, best first; shares sum to 1.

    A neighbour weighs ``exp((similarity - best) / temperature)``: a softmax over the
    neighbours' similarities. A small temperature lets the closest examples decide (an
    exact match is not outvoted by several looser ones); a large one approaches a
    plain majority vote.
    """
    if not hits:
        return []
    best = max(hit.similarity for hit in hits)
    weights: dict[str, float] = {}
    for hit in hits:
        weight = math.exp((hit.similarity - best) / temperature)
        weights[hit.label] = weights.get(hit.label, 0.0) + weight
    total = sum(weights.values())
    scores = [LabelScore(label, weight / total) for label, weight in weights.items()]
    return sorted(scores, key=lambda s: s.score, reverse=True)

from __future__ import annotations

import pytest

from qroute.types import Hit
from qroute.vote import vote


def _hit(label: str, similarity: float) -> Hit:
    return Hit(row_id=f"{label}{similarity}", text="", label=label, similarity=similarity)


def test_shares_sum_to_one_best_first() -> None:
    scores = vote([_hit("a", 0.9), _hit("b", 0.8), _hit("a", 0.7)], temperature=0.05)
    assert [s.label for s in scores] == ["a", "b"]
    assert sum(s.score for s in scores) == pytest.approx(1.0)


def test_an_exact_match_is_not_outvoted_by_looser_neighbours() -> None:
    hits = [_hit("a", 1.0)] + [_hit("b", 0.9)] * 4
    assert vote(hits, temperature=0.05)[0].label == "a"
    # With a large temperature the vote approaches a plain majority.
    assert vote(hits, temperature=10.0)[0].label == "b"


def test_no_hits_no_scores() -> None:
    assert vote([], temperature=0.05) == []

from __future__ import annotations

import pytest

from qroute.routing.vote import label_scores, shares
from qroute.types import Group, Hit, LabelScore


def _group(label: str, *similarities: float) -> Group:
    return Group(label, tuple(Hit(f"{label}{s}", "", label, s) for s in similarities))


def test_label_score_methods() -> None:
    groups = [_group("a", 0.9, 0.7, 0.5), _group("b", 0.8, 0.8)]
    assert label_scores(groups, "max") == [LabelScore("a", 0.9), LabelScore("b", 0.8)]
    mean = label_scores(groups, "mean")
    assert [s.label for s in mean] == ["b", "a"]
    assert mean[1].score == pytest.approx(0.7)
    max_mean = {s.label: s.score for s in label_scores(groups, "max_mean")}
    assert max_mean == pytest.approx({"a": 0.8, "b": 0.8})


def test_near_duplicates_count_once() -> None:
    # Fifty near-duplicates of "a" fill one group: a single closer "b" still wins.
    groups = [_group("b", 0.9), _group("a", *[0.85] * 3)]
    assert label_scores(groups, "max_mean")[0].label == "b"


def test_shares_are_a_softmax_of_scores() -> None:
    scores = [LabelScore("a", 0.9), LabelScore("b", 0.8)]
    sharp = shares(scores, temperature=0.01)
    assert sharp[0].label == "a" and sharp[0].score > 0.99
    flat = shares(scores, temperature=10.0)
    assert flat[0].score == pytest.approx(0.5, abs=0.01)
    assert sum(s.score for s in flat) == pytest.approx(1.0)
    assert shares([], temperature=0.05) == []

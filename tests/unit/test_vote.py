from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qroute.config import RouterSettings, ZeroShotSettings
from qroute.routing.vote import (
    label_scores,
    replay,
    shares,
    take_vote,
    vote_arrays,
    zero_shot_accepts,
)
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


# The decision rule has one owner (qroute.routing.vote) with two entry points: the
# classifier's per-query vote and the tuner's vectorised replay. They must agree on
# every query, for every setting.
_labels = st.sampled_from(["a", "b", "c", "d"])
_similarity = st.floats(-1.0, 1.0, allow_nan=False).map(lambda x: round(x, 2))


@st.composite
def _query(draw: st.DrawFn) -> tuple[list[Group], dict[str, float]]:
    labels = draw(st.lists(_labels, unique=True, max_size=4))
    groups = [
        _group(label, *sorted(draw(st.lists(_similarity, min_size=1, max_size=3)), reverse=True))
        for label in labels
    ]
    groups.sort(key=lambda g: g.hits[0].similarity, reverse=True)
    zero_shot = draw(st.dictionaries(_labels, st.floats(0.0, 1.0, allow_nan=False), max_size=4))
    return groups, zero_shot


@settings(max_examples=150, deadline=None)
@given(
    queries=st.lists(_query(), min_size=1, max_size=8),
    threshold=_similarity,
    margin=st.sampled_from([0.0, 0.01, 0.1]),
    min_agreeing=st.integers(1, 3),
    zs_threshold=st.sampled_from([0.0, 0.5, 0.9]),
    single=st.booleans(),
    method=st.sampled_from(["", "nli"]),
)
def test_the_tuners_replay_decides_as_the_vote(
    queries: list[tuple[list[Group], dict[str, float]]],
    threshold: float,
    margin: float,
    min_agreeing: int,
    zs_threshold: float,
    single: bool,
    method: str,
) -> None:
    router = RouterSettings(
        k=4,
        group_size=3,
        similarity_threshold=threshold,
        min_margin=margin,
        min_agreeing=min_agreeing,
    )
    zs = ZeroShotSettings(threshold=zs_threshold, candidates="vote", top_n=2)
    groups = [g for g, _ in queries]
    scores = [z if method else {} for _, z in queries]
    ids = {label: i for i, label in enumerate("abcd")}
    arrays = vote_arrays(groups, [], scores, router.k, router, zs, ids)
    predicted, used = replay(
        arrays, np.full(len(queries), threshold), margin, min_agreeing, zs_threshold, single, method
    )
    names = {i: label for label, i in ids.items()}
    for q, (query_groups, zero_shot) in enumerate(zip(groups, scores, strict=True)):
        vote = take_vote(query_groups, router, zs)
        expected: str | None
        if not vote.reasons:
            expected = vote.scores[0].label
        else:
            candidates = [s.label for s in vote.scores[: zs.top_n]]
            scored = sorted(((zero_shot[c], c) for c in candidates if c in zero_shot), reverse=True)
            accepted = bool(scored) and zero_shot_accepts(scored[0][0], zs_threshold, single)
            expected = scored[0][1] if method and accepted else None
        got = None if int(predicted[q]) == -1 else names[int(predicted[q])]
        assert got == expected, (q, vote.detail)
        assert bool(used[q]) == (bool(vote.reasons) and bool(method))

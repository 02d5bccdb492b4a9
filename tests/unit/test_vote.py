from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qroute.config import RouterSettings, ZeroShotSettings
from qroute.routing.vote import (
    calibrate,
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
    min_confidence=st.sampled_from([0.0, 0.4, 0.7]),
    calibrated=st.booleans(),
    none_label=st.sampled_from([None, "d"]),
)
def test_the_tuners_replay_decides_as_the_vote(
    queries: list[tuple[list[Group], dict[str, float]]],
    threshold: float,
    margin: float,
    min_agreeing: int,
    zs_threshold: float,
    single: bool,
    method: str,
    min_confidence: float,
    calibrated: bool,
    none_label: str | None,
) -> None:
    # Calibration, min_confidence and the none label are part of the one rule too.
    knots = {"knn": [(0.3, 0.1), (0.6, 0.5), (0.9, 0.95)], "zero_shot": [(0.0, 0.2), (1.0, 0.8)]}
    router = RouterSettings(
        k=4,
        group_size=3,
        similarity_threshold=threshold,
        min_margin=margin,
        min_agreeing=min_agreeing,
        calibration=knots if calibrated else {},
        min_confidence=min_confidence,
    )
    zs = ZeroShotSettings(threshold=zs_threshold, candidates="vote", top_n=2)
    groups = [g for g, _ in queries]
    scores = [z if method else {} for _, z in queries]
    ids = {label: i for i, label in enumerate("abcd")}
    arrays = vote_arrays(groups, [], scores, router.k, router, zs, ids, none_label)
    predicted, used = replay(
        arrays,
        np.full(len(queries), threshold),
        margin,
        min_agreeing,
        zs_threshold,
        single,
        method,
        router.calibration,
        min_confidence,
    )
    names = {i: label for label, i in ids.items()}
    for q, (query_groups, zero_shot) in enumerate(zip(groups, scores, strict=True)):
        vote = take_vote(query_groups, router, zs, none_label=none_label)
        expected: str | None
        if not vote.reasons:
            expected = vote.scores[0].label
        else:
            # As Classifier._candidates: the vote's best, or every label without a vote.
            candidates = (
                [s.label for s in vote.scores if s.label != none_label][: zs.top_n]
                if vote.scores
                else [c for c in zero_shot if c != none_label]
            )
            scored = sorted(((zero_shot[c], c) for c in candidates if c in zero_shot), reverse=True)
            accepted = bool(scored) and zero_shot_accepts(
                scored[0][0],
                zs_threshold,
                single,
                router.calibration.get("zero_shot"),
                min_confidence,
            )
            expected = scored[0][1] if method and accepted else None
        got = None if int(predicted[q]) == -1 else names[int(predicted[q])]
        assert got == expected, (q, vote.detail)
        assert got != none_label or none_label is None
        assert bool(used[q]) == (bool(vote.reasons) and bool(method))


def test_calibration_interpolates_monotonically_and_flat_beyond_the_knots() -> None:
    knots = [(0.2, 0.1), (0.5, 0.4), (0.9, 0.9)]
    xs = np.linspace(-0.5, 1.5, 201)
    ys = calibrate(xs, knots)
    assert np.all(np.diff(ys) >= 0)
    assert ys[0] == 0.1 and ys[-1] == 0.9
    assert calibrate(0.35, knots) == pytest.approx(0.25)
    assert calibrate(0.35, None) == 0.35


def test_min_confidence_sends_a_confident_looking_but_uncalibrated_answer_away() -> None:
    # Similarity passes the threshold; the share is high, but calibration says such
    # shares are right 30% of the time: below min_confidence the vote falls back.
    groups = [_group("a", 0.9, 0.9), _group("b", 0.5)]
    zs = ZeroShotSettings()
    router = RouterSettings(similarity_threshold=0.5, calibration={"knn": [(0.0, 0.3), (1.0, 0.3)]})
    assert take_vote(groups, router, zs).reasons == ()
    assert take_vote(groups, router, zs).confidence == pytest.approx(0.3)
    strict = router.model_copy(update={"min_confidence": 0.5})
    vote = take_vote(groups, strict, zs)
    assert vote.reasons and "min_confidence" in vote.detail


def test_the_none_label_never_votes_and_a_head_choosing_it_is_no_match() -> None:
    zs = ZeroShotSettings()
    router = RouterSettings(similarity_threshold=0.5)
    groups = [_group("oos", 0.95, 0.95), _group("a", 0.7)]
    vote = take_vote(groups, router, zs, none_label="oos")
    assert vote.scores[0].label == "a" and all(g.label != "oos" for g in vote.groups)
    head = [LabelScore("oos", 0.8), LabelScore("a", 0.2)]
    vote = take_vote(groups, router, zs, head, none_label="oos")
    assert vote.none and vote.reasons


def test_neighbours_that_agree_outvote_an_unsure_head_only_with_a_vote_weight() -> None:
    zs = ZeroShotSettings()
    groups = [_group("b", 0.9, 0.88, 0.87), _group("a", 0.6, 0.5, 0.5)]
    head = [LabelScore("a", 0.55), LabelScore("b", 0.45)]
    alone = take_vote(groups, RouterSettings(similarity_threshold=0.0), zs, head)
    assert alone.scores == tuple(head) and alone.scores[0].label == "a"
    assert alone.detail.startswith("head p=0.550")
    mixed = take_vote(groups, RouterSettings(similarity_threshold=0.0, vote_weight=0.5), zs, head)
    # The vote's share of "b" is ~1 at the default temperature: 0.5 * 0.45 + 0.5 * 1.
    assert mixed.scores[0].label == "b"
    assert mixed.scores[0].score == pytest.approx(0.725, abs=1e-3)
    assert sum(s.score for s in mixed.scores) == pytest.approx(1.0)
    assert mixed.detail.startswith("head+vote p=0.72") and "for 'b'" in mixed.detail
    # A head that is sure keeps its label against the same neighbours.
    sure = [LabelScore("a", 0.95), LabelScore("b", 0.05)]
    kept = take_vote(groups, RouterSettings(similarity_threshold=0.0, vote_weight=0.4), zs, sure)
    assert kept.scores[0].label == "a"


def test_calibration_knots_must_be_monotone() -> None:
    with pytest.raises(ValueError, match=r"calibration\.knn"):
        RouterSettings(calibration={"knn": [(0.2, 0.5), (0.5, 0.4)]})
    with pytest.raises(ValueError, match=r"calibration\.knn"):
        RouterSettings(calibration={"knn": [(0.5, 0.1), (0.5, 0.4)]})


@st.composite
def _head(draw: st.DrawFn) -> list[LabelScore]:
    labels = draw(st.permutations(["a", "b", "c", "d"]))[: draw(st.integers(1, 4))]
    weights = [draw(st.floats(0.01, 1.0)) for _ in labels]
    total = sum(weights)
    scores = [LabelScore(label, w / total) for label, w in zip(labels, weights, strict=True)]
    return sorted(scores, key=lambda s: s.score, reverse=True)


@settings(max_examples=150, deadline=None)
@given(
    queries=st.lists(st.tuples(_query(), _head()), min_size=1, max_size=8),
    threshold=_similarity,
    min_confidence=st.sampled_from([0.0, 0.3, 0.6]),
    calibrated=st.booleans(),
    none_label=st.sampled_from([None, "d"]),
    vote_weight=st.sampled_from([0.0, 0.4, 0.9]),
)
def test_the_replay_decides_as_the_vote_with_the_head(
    queries: list[tuple[tuple[list[Group], dict[str, float]], list[LabelScore]]],
    threshold: float,
    min_confidence: float,
    calibrated: bool,
    none_label: str | None,
    vote_weight: float,
) -> None:
    router = RouterSettings(
        k=4,
        group_size=3,
        similarity_threshold=threshold,
        calibration={"head": [(0.2, 0.1), (0.8, 0.7)]} if calibrated else {},
        min_confidence=min_confidence,
        vote_weight=vote_weight,
    )
    zs = ZeroShotSettings(threshold=0.5, candidates="vote", top_n=2)
    groups = [g for (g, _), _ in queries]
    scores = [z for (_, z), _ in queries]
    heads = [h for _, h in queries]
    ids = {label: i for i, label in enumerate("abcd")}
    arrays = vote_arrays(groups, heads, scores, router.k, router, zs, ids, none_label)
    predicted, _ = replay(
        arrays,
        np.full(len(queries), threshold),
        0.0,
        1,
        0.5,
        False,
        "nli",
        router.calibration,
        min_confidence,
    )
    names = {i: label for label, i in ids.items()}
    for q in range(len(queries)):
        vote = take_vote(groups[q], router, zs, heads[q], none_label)
        expected: str | None
        if vote.none:
            expected = None
        elif not vote.reasons:
            expected = vote.scores[0].label
        else:
            candidates = [s.label for s in vote.scores if s.label != none_label][: zs.top_n]
            scored = sorted(((scores[q][c], c) for c in candidates if c in scores[q]), reverse=True)
            accepted = bool(scored) and zero_shot_accepts(
                scored[0][0], 0.5, False, None, min_confidence
            )
            expected = scored[0][1] if accepted else None
        got = None if int(predicted[q]) == -1 else names[int(predicted[q])]
        assert got == expected, (q, vote.detail)
        assert got != none_label or none_label is None

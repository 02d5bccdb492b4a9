"""The kNN vote and the decision rule: label groups in, a label or a fallback out.

Pure functions, no I/O. This module is the one owner of the rule that decides when the
neighbours answer and when the zero-shot scorer takes over: the classifier applies it to
one query at a time (``take_vote``, ``zero_shot_accepts``), and ``qroute tune`` replays it
over thousands of queries and threshold combinations at once (``vote_arrays``,
``replay``). Both go through ``leave_reasons``, which works on floats and numpy arrays
alike, so the two cannot drift apart (tests/unit/test_vote.py checks it).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from qroute.config import RouterSettings, ZeroShotSettings
from qroute.types import FallbackReason, Group, LabelScore, Thresholds

__all__ = [
    "Vote",
    "VoteArrays",
    "answer_confidence",
    "blend",
    "calibrate",
    "label_scores",
    "leave_reasons",
    "replay",
    "shares",
    "take_vote",
    "vote_arrays",
    "zero_shot_accepts",
    "zero_shot_candidates",
]


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


def blend(
    head: Sequence[LabelScore], groups: Sequence[Group], router: RouterSettings
) -> list[LabelScore]:
    """The head's label scores mixed with the vote's: ``(1 - w) * probability + w *
    share``, ``w`` = router.vote_weight, the shares over ``groups`` at
    router.vote_temperature (a label outside them has none), best first. The head's
    probabilities as given at ``w`` = 0."""
    weight = router.vote_weight
    if not weight:
        return list(head)
    mixed = {s.label: (1.0 - weight) * s.score for s in head}
    for s in shares(label_scores(groups, router.label_score), router.vote_temperature):
        mixed[s.label] = mixed.get(s.label, 0.0) + weight * s.score
    ranked = [LabelScore(label, score) for label, score in mixed.items()]
    return sorted(ranked, key=lambda s: s.score, reverse=True)


def leave_reasons(
    best: Any, margin: Any, agreeing: Any, threshold: Any, min_margin: float, min_agreeing: int
) -> tuple[Any, Any, Any]:
    """The gate, elementwise over floats or numpy arrays: whether the winner's best
    similarity is below its threshold, the margin over the second label below
    ``min_margin``, and (with ``min_agreeing`` > 1) too few of its neighbours at the
    threshold. Any of the three sends the query to the fallback."""
    low = best < threshold
    ambiguous = margin < min_margin
    few = (agreeing < min_agreeing) & (min_agreeing > 1)
    return low, ambiguous, few


def calibrate(score: Any, knots: Sequence[tuple[float, float]] | None) -> Any:
    """The probability of being right for a deciding score (elementwise): piecewise-linear
    through ``knots`` (score, probability), flat beyond the ends; the score itself, within
    [0, 1], without knots. Monotone because the knots are (config.py checks them)."""
    if not knots:
        # An embedding zero-shot score is a cosine, down to -1: as a confidence (and
        # against router.min_confidence, 0 meaning off) it is cut to [0, 1].
        out = np.clip(score, 0.0, 1.0)
        return float(out) if np.ndim(out) == 0 else out
    xs = np.array([x for x, _ in knots], dtype=float)
    ys = np.array([y for _, y in knots], dtype=float)
    out = np.interp(score, xs, ys)
    return float(out) if np.ndim(out) == 0 else out


def zero_shot_accepts(
    score: Any,
    threshold: float,
    single: bool,
    knots: Sequence[tuple[float, float]] | None = None,
    min_confidence: float = 0.0,
) -> Any:
    """Whether a zero-shot score answers (elementwise): always in single-label NLI mode
    (a softmax across labels always picks one), else at or above the threshold; and in
    both, only where its calibrated confidence reaches ``min_confidence``."""
    return ((score >= threshold) | single) & (calibrate(score, knots) >= min_confidence)


def zero_shot_candidates(
    scores: Sequence[LabelScore],
    every: Sequence[str],
    settings: ZeroShotSettings,
    none_label: str | None,
) -> tuple[str, ...]:
    """The labels a query's zero-shot fallback scores: the vote's ``zero_shot.top_n``
    best (``zero_shot.candidates: vote``), or ``every`` label it may answer (``all``, or
    a vote with no label score). The none label is never a candidate."""
    if settings.candidates == "all" or not scores:
        return tuple(label for label in every if label != none_label)
    return tuple([s.label for s in scores if s.label != none_label][: settings.top_n])


@dataclass(frozen=True, slots=True)
class Vote:
    """One query's vote: its groups, label scores (the head's probabilities when
    ``head``), why it leaves kNN (empty: it answers), the thresholds that applied, and
    the explanation."""

    groups: tuple[Group, ...]
    scores: tuple[LabelScore, ...]
    reasons: tuple[FallbackReason, ...]
    thresholds: Thresholds
    detail: str
    head: bool = False
    # The kNN answer's confidence: its share of the vote (the head's probability with
    # ``head``), calibrated where router.calibration has knots for the path.
    confidence: float = 0.0
    # The head picked the table's none label: NO_MATCH, no fallback.
    none: bool = False


def _refusal(
    groups: Sequence[Group],
    scores: tuple[LabelScore, ...],
    router: RouterSettings,
    zero_shot: ZeroShotSettings,
    detail: str,
    *,
    head: bool = False,
    none: bool = False,
) -> Vote:
    """A vote that falls back before any label is weighed (no neighbours, the none label)."""
    thresholds = Thresholds(
        router.similarity_threshold, router.min_margin, router.min_agreeing, zero_shot.threshold
    )
    return Vote(
        tuple(groups),
        scores,
        (FallbackReason.LOW_SIMILARITY,),
        thresholds,
        detail,
        head=head,
        none=none,
    )


def take_vote(
    groups: Sequence[Group],
    router: RouterSettings,
    zero_shot: ZeroShotSettings,
    head: Sequence[LabelScore] | None = None,
    none_label: str | None = None,
) -> Vote:
    """Apply the decision rule to one query's label groups (and the head's scores).
    ``none_label`` (table.none_label) never votes and is never answered."""
    if none_label is not None:
        groups = [g for g in groups if g.label != none_label]
    if head is not None:
        scores = tuple(blend(head, groups, router))
    else:
        scores = tuple(label_scores(groups, router.label_score))
    # With a vote weight the head's scores are mixed with the vote's shares.
    named = "head+vote p" if head is not None and router.vote_weight else "head p"
    if head is not None and scores and scores[0].label == none_label:
        detail = f"{named}={scores[0].score:.3f} for the none label {none_label!r}"
        return _refusal(groups, scores, router, zero_shot, detail, head=True, none=True)
    if not scores:
        return _refusal(groups, scores, router, zero_shot, "no neighbours")
    top = scores[0]
    threshold = router.threshold_for(top.label)
    thresholds = Thresholds(threshold, router.min_margin, router.min_agreeing, zero_shot.threshold)
    # The head's label must be among the k nearest labels: its neighbours gate it.
    winner = next((g for g in groups if g.label == top.label), None)
    hits = winner.hits if winner is not None else ()
    best = hits[0].similarity if hits else -math.inf
    agreeing = sum(1 for hit in hits if hit.similarity >= threshold)
    margin = top.score - scores[1].score if len(scores) > 1 else math.inf
    low, ambiguous, few = leave_reasons(
        best, margin, agreeing, threshold, router.min_margin, router.min_agreeing
    )
    deciding = top.score if head is not None else shares(scores, router.vote_temperature)[0].score
    confidence = float(calibrate(deciding, router.calibration.get("head" if head else "knn")))
    unsure = confidence < router.min_confidence

    reasons = []
    parts = [f"{named}={top.score:.3f} for {top.label!r}"] if head is not None else []
    if not hits:
        parts.append(f"no example of {top.label!r} among the {router.k} nearest labels")
    elif low:
        parts.append(f"best similarity {best:.3f} < threshold {threshold:.3f}")
    else:
        parts.append(f"best similarity {best:.3f} >= threshold {threshold:.3f}")
    if low or unsure:
        # No reason of its own on the wire yet: low confidence reads as LOW_SIMILARITY,
        # and the detail says which.
        reasons.append(FallbackReason.LOW_SIMILARITY)
    if unsure:
        parts.append(f"confidence {confidence:.3f} < min_confidence {router.min_confidence:.3f}")
    if ambiguous:
        reasons.append(FallbackReason.AMBIGUOUS)
        parts.append(
            f"margin {margin:.3f} over {scores[1].label!r} < {router.min_margin:.3f} (ambiguous)"
        )
    if few:
        reasons.append(FallbackReason.FEW_AGREEING)
        parts.append(
            f"{agreeing} of {top.label!r}'s neighbours reach the threshold "
            f"< {router.min_agreeing} needed"
        )
    elif not reasons:
        parts.append(f"{agreeing} of the {len(hits)} nearest {top.label!r} examples reach it")
    return Vote(
        tuple(groups),
        scores,
        tuple(reasons),
        thresholds,
        "; ".join(parts),
        head=head is not None,
        confidence=confidence,
    )


FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class VoteArrays:
    """Per query, at one k: the facts the decision rule needs, as numpy arrays."""

    winner: IntArray  # label id, -1 without neighbours
    best: FloatArray  # best similarity of the winner (-inf: none among the k labels)
    margin: FloatArray  # first minus second label score (inf with one label)
    sims: FloatArray  # the winner's group similarities, padded with -inf
    zs_label: IntArray  # best zero-shot label id among the candidates, -1 if none
    zs_score: FloatArray
    share: FloatArray  # the winner's deciding score: vote share, or head(+vote) probability
    via_head: npt.NDArray[np.bool_]  # whether the head picked (its calibration applies)
    none: npt.NDArray[np.bool_]  # the head picked the none label: NO_MATCH, no fallback


def vote_arrays(
    groups: Sequence[Sequence[Group]],
    heads: Sequence[Sequence[LabelScore] | None],
    zero_shot: Sequence[Mapping[str, float]],
    k: int,
    router: RouterSettings,
    zs: ZeroShotSettings,
    ids: dict[str, int],
    none_label: str | None = None,
    single: bool = False,
) -> VoteArrays:
    """The vote's facts for every query at ``k``, for ``replay``. ``ids`` numbers the
    labels; a zero-shot label it lacks is added. ``single``: the zero-shot scores are one
    softmax over the labels scored (NLI in single-label mode), which the classifier takes
    over its candidates only: they are renormalised over the candidates here too."""
    n = len(groups)
    out = VoteArrays(
        np.full(n, -1),
        np.full(n, -np.inf),
        np.full(n, np.inf),
        np.full((n, router.group_size), -np.inf),
        np.full(n, -1),
        np.full(n, -np.inf),
        np.zeros(n),
        np.zeros(n, dtype=bool),
        np.zeros(n, dtype=bool),
    )
    for q, all_groups in enumerate(groups):
        query_groups = [g for g in all_groups[:k] if g.label != none_label]
        head = heads[q] if heads else None
        scores = (
            blend(head, query_groups, router)
            if head
            else label_scores(query_groups, router.label_score)
        )
        # The replay scored every label the classifier may hand the fallback.
        candidates = zero_shot_candidates(scores, list(zero_shot[q]), zs, none_label)
        if not scores:
            _zero_shot_fact(out, q, candidates, zero_shot[q], ids, single)
            continue
        out.via_head[q] = bool(head)
        if head and scores[0].label == none_label:
            out.none[q] = True
            continue
        top = scores[0].label
        out.share[q] = scores[0].score if head else shares(scores, router.vote_temperature)[0].score
        out.winner[q] = ids[top]
        winner = next((g for g in query_groups if g.label == top), None)
        similarities = [h.similarity for h in winner.hits] if winner is not None else []
        out.best[q] = similarities[0] if similarities else -np.inf
        out.sims[q, : len(similarities)] = similarities
        if len(scores) > 1:
            out.margin[q] = scores[0].score - scores[1].score
        _zero_shot_fact(out, q, candidates, zero_shot[q], ids, single)
    return out


def _zero_shot_fact(
    out: VoteArrays,
    q: int,
    candidates: Sequence[str],
    scores: Mapping[str, float],
    ids: dict[str, int],
    single: bool,
) -> None:
    """Query ``q``'s best zero-shot label among ``candidates`` and its score (renormalised
    over them when ``single``: the classifier's softmax runs over its candidates)."""
    scored = [(scores[c], c) for c in candidates if c in scores]
    if not scored:
        return
    score, label = max(scored)
    if single:
        total = sum(s for s, _ in scored)
        score = score / total if total > 0 else score
    out.zs_label[q], out.zs_score[q] = ids.setdefault(label, len(ids)), score


def answer_confidence(
    a: VoteArrays,
    used: npt.NDArray[np.bool_],
    calibration: Mapping[Any, Sequence[tuple[float, float]]] | None,
) -> FloatArray:
    """Each query's answer confidence, as the classifier reports it: the calibrated
    zero-shot score where the zero-shot scorer answered (``used``), else the calibrated
    vote share (head probability where the head picked)."""
    calibration = calibration or {}
    knn = np.where(
        a.via_head,
        calibrate(a.share, calibration.get("head")),
        calibrate(a.share, calibration.get("knn")),
    )
    out: FloatArray = np.where(used, calibrate(a.zs_score, calibration.get("zero_shot")), knn)
    return out


def replay(
    a: VoteArrays,
    thresholds: FloatArray,
    margin: float,
    min_agreeing: int,
    zs_threshold: float,
    single: bool,
    method: str,
    calibration: Mapping[Any, Sequence[tuple[float, float]]] | None = None,
    min_confidence: float = 0.0,
) -> tuple[IntArray, npt.NDArray[np.bool_]]:
    """The decision for every query at once, ``thresholds`` per query: (predicted label
    id or -1 for NO_MATCH, whether the zero-shot scorer answered)."""
    calibration = calibration or {}
    agreeing = (a.sims >= thresholds[:, None]).sum(axis=1)
    low, ambiguous, few = leave_reasons(
        a.best, a.margin, agreeing, thresholds, margin, min_agreeing
    )
    confidence = answer_confidence(a, np.zeros(len(a.winner), dtype=bool), calibration)
    leave = (low | ambiguous | few | (confidence < min_confidence)) & ~a.none
    if not method:
        zs_answer = np.full_like(a.winner, -1)
    else:
        accepts = zero_shot_accepts(
            a.zs_score, zs_threshold, single, calibration.get("zero_shot"), min_confidence
        )
        zs_answer = np.where(accepts, a.zs_label, -1)
    pred = np.where(a.none, -1, np.where(leave, zs_answer, a.winner))
    return pred, leave & bool(method)

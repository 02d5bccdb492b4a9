"""The review store (SQLite) and its writer: what a row keeps, filters, bounds, and a
recorder that never holds its caller back."""

from __future__ import annotations

import asyncio
import hashlib
import random
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from qroute.config import Settings
from qroute.routing.learning import FeedbackLoop
from qroute.routing.review import (
    ReviewRecord,
    ReviewRecorder,
    ShadowTally,
    answer_reasons,
    record_of,
    text_fields,
)
from qroute.routing.review_store import ReviewStore
from qroute.types import Decision, LabelScore, Prediction, Query, Thresholds

THRESHOLDS = Thresholds(0.8, 0.0, 1, 0.5)


def prediction(decision: Decision, label: str | None, confidence: float) -> Prediction:
    return Prediction(
        label=label,
        confidence=confidence,
        decision=decision,
        reason=f"{decision.value} because",
        index_version="v1",
        config_version="c1",
        thresholds=THRESHOLDS,
        top_labels=(LabelScore(label or "x", confidence),),
        request_id="r-" + decision.value,
    )


def record(text: str, reasons: tuple[str, ...] = ("NO_MATCH",), **fields: object) -> ReviewRecord:
    return ReviewRecord(
        kind="answer", reasons=reasons, request_id=text, text=text, text_hash=None, **fields
    )  # type: ignore[arg-type]


def test_text_fields_keep_full_text_hash_or_nothing() -> None:
    digest = hashlib.sha256("코스닥 지수".encode()).hexdigest()
    # The hash is of the normalised text: spacing differences hash alike.
    assert text_fields("  코스닥   지수 ", "full") == ("  코스닥   지수 ", digest)
    assert text_fields("코스닥 지수", "hash") == (None, digest)
    assert text_fields("코스닥 지수", "none") == (None, None)


def test_answer_reasons_name_each_kind_of_doubt() -> None:
    review = Settings().review.model_copy(update={"confidence_below": 0.6})
    assert answer_reasons(prediction(Decision.NO_MATCH, None, 0.9), review) == ("NO_MATCH",)
    assert answer_reasons(prediction(Decision.NO_MATCH, None, 0.1), review) == ("NO_MATCH",)
    assert answer_reasons(prediction(Decision.ZERO_SHOT, "금융", 0.9), review) == ("ZERO_SHOT",)
    assert answer_reasons(prediction(Decision.KNN, "금융", 0.5), review) == ("LOW_CONFIDENCE",)
    assert answer_reasons(prediction(Decision.KNN, "금융", 0.7), review) == ()


def test_a_row_keeps_the_explanation_and_versions(tmp_path: Path) -> None:
    store = ReviewStore(tmp_path / "r.sqlite")
    answer = prediction(Decision.ZERO_SHOT, "금융", 0.7)
    review = Settings().review
    store.add([record_of("환율 알려줘", answer, ("ZERO_SHOT",), review)])
    [row] = store.rows()
    assert (row.text, row.label, row.path, row.confidence) == (
        "환율 알려줘",
        "금융",
        "ZERO_SHOT",
        0.7,
    )
    assert (row.explanation, row.config_version, row.index_version) == (
        "ZERO_SHOT because",
        "c1",
        "v1",
    )
    assert row.top_labels == (("금융", 0.7),)
    assert row.request_id == "r-ZERO_SHOT" and row.status == "pending"
    assert store.by_request("r-ZERO_SHOT") == row


def test_rows_filter_by_reason_label_time_and_status(tmp_path: Path) -> None:
    store = ReviewStore(tmp_path / "r.sqlite")
    store.add(
        [
            record("a", ("NO_MATCH",), created_at="2026-01-01T00:00:00"),
            record("b", ("ZERO_SHOT", "SHADOW_DISAGREE"), label="금융", created_at="2026-02-01"),
            record("c", ("LOW_CONFIDENCE",), shadow_label="날씨", created_at="2026-03-01"),
        ]
    )
    assert [r.text for r in store.rows()] == ["c", "b", "a"]
    assert [r.text for r in store.rows(reason="SHADOW_DISAGREE")] == ["b"]
    assert [r.text for r in store.rows(reason="ZERO_SHOT")] == ["b"]
    assert [r.text for r in store.rows(label="날씨")] == ["c"]
    assert [r.text for r in store.rows(since="2026-02-01")] == ["c", "b"]
    a = store.rows(reason="NO_MATCH")[0]
    store.review(a.id, "accepted", "금융")
    assert [r.text for r in store.rows(status="accepted")] == ["a"]
    assert store.get(a.id).reviewed_label == "금융"  # type: ignore[union-attr]


def test_max_rows_drops_the_oldest_pending_rows_and_keeps_reviewed_ones(tmp_path: Path) -> None:
    store = ReviewStore(tmp_path / "r.sqlite", max_rows=3)
    store.add([record("first")])
    store.review(store.rows()[0].id, "accepted", "금융")
    store.add([record(str(i)) for i in range(5)])
    pending = [r.text for r in store.rows(status="pending")]
    assert pending == ["4", "3", "2"]
    assert [r.text for r in store.rows(status="accepted")] == ["first"]


def test_shadow_tallies_add_up(tmp_path: Path) -> None:
    store = ReviewStore(tmp_path / "r.sqlite")
    store.add([], [ShadowTally("cand", Counter({("금융", "금융"): 2, ("", "날씨"): 1}))])
    store.add([], [ShadowTally("cand", Counter({("금융", "금융"): 3}))])
    assert store.tally() == {"cand": Counter({("금융", "금융"): 5, ("", "날씨"): 1})}


class SlowSink:
    def __init__(self, delay: float, fail: bool = False) -> None:
        self.delay, self.fail = delay, fail
        self.records: list[ReviewRecord] = []

    def add(self, records: Sequence[ReviewRecord], tallies: Sequence[ShadowTally]) -> None:
        time.sleep(self.delay)
        if self.fail:
            raise sqlite3.OperationalError("disk I/O error")
        self.records += records


async def test_a_full_queue_drops_records_and_counts_them() -> None:
    recorder = ReviewRecorder(SlowSink(0.0), max_queue=2)
    # Not started: nothing drains the queue.
    assert [recorder.offer(record(str(i))) for i in range(4)] == [True, True, False, False]
    assert recorder.counts["dropped"] == 2


@pytest.mark.parametrize("fail", [False, True])
async def test_a_slow_or_failing_store_never_holds_the_caller(fail: bool) -> None:
    sink = SlowSink(1.0, fail=fail)
    recorder = ReviewRecorder(sink, max_queue=100)
    recorder.start()
    started = time.perf_counter()
    for i in range(50):
        recorder.offer(record(str(i)))
        await asyncio.sleep(0)
    assert time.perf_counter() - started < 0.2
    await recorder.stop(timeout=3)
    result = "failed" if fail else "written"
    assert recorder.counts[result] == 50


class Live:
    """A stand-in for the classifier the loop reads the index labels from."""

    index = None


async def test_sample_rate_records_about_that_fraction(tmp_path: Path) -> None:
    settings = Settings(review={"enabled": True, "sample_rate": 0.3, "path": str(tmp_path / "r")})
    sink = SlowSink(0.0)
    loop = FeedbackLoop(settings, lambda: None, sink=sink, rng=random.Random(7))
    loop.start()
    answers = [prediction(Decision.NO_MATCH, None, 0.0) for _ in range(1000)]
    named = loop.observe([Query(f"t{i}") for i in range(1000)], answers)
    await loop.stop()
    assert len({p.request_id for p in named}) == 1000
    assert 240 <= len(sink.records) <= 360


async def test_observe_records_only_doubtful_answers(tmp_path: Path) -> None:
    settings = Settings(
        review={"enabled": True, "confidence_below": 0.6, "path": str(tmp_path / "r")}
    )
    sink = SlowSink(0.0)
    loop = FeedbackLoop(settings, lambda: None, sink=sink)
    loop.start()
    answers = [
        prediction(Decision.KNN, "금융", 0.9),
        prediction(Decision.KNN, "금융", 0.5),
        prediction(Decision.ZERO_SHOT, "날씨", 0.9),
        prediction(Decision.NO_MATCH, None, 0.9),
    ]
    loop.observe([Query(t) for t in "abcd"], answers)
    await loop.stop()
    assert [(r.text, r.reasons) for r in sink.records] == [
        ("b", ("LOW_CONFIDENCE",)),
        ("c", ("ZERO_SHOT",)),
        ("d", ("NO_MATCH",)),
    ]


def test_review_off_records_nothing_and_names_answers(tmp_path: Path) -> None:
    loop = FeedbackLoop(Settings(), lambda: None)
    assert loop.recorder is None
    [named] = loop.observe([Query("a")], [prediction(Decision.NO_MATCH, None, 0.0)])
    assert named.request_id


def test_a_full_shadow_queue_drops_requests_counts_them_and_still_records_them(
    tmp_path: Path,
) -> None:
    settings = Settings(
        review={"enabled": True, "path": str(tmp_path / "r")},
        shadow={"index_version": "v0", "max_queue": 1},
    )
    outcomes: list[tuple[str, int]] = []
    loop = FeedbackLoop(settings, lambda: None, sink=SlowSink(0.0), on_shadow=_append(outcomes))
    assert loop.shadow is not None and loop.recorder is not None
    # Not started: nothing drains the shadow's queue, so the second request finds it full.
    for text in ("a", "b"):
        loop.observe([Query(text)], [prediction(Decision.NO_MATCH, None, 0.0)])
    assert loop.shadow.counts["dropped"] == 1 and outcomes == [("dropped", 1)]
    # The dropped answer still goes to the review queue (without a shadow answer); the
    # queued one waits for the candidate.
    assert loop.recorder.counts["dropped"] == 0
    assert loop.recorder._queue.qsize() == 1


def _append(into: list[tuple[str, int]]) -> Callable[[str, int], None]:
    return lambda outcome, n: into.append((outcome, n))

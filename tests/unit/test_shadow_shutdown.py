"""The shadow candidate's queue at drain and at stop: answers that wait for the candidate
are review records too, and must not be lost when the router stops."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path

from qroute.config import Settings, ShadowSettings
from qroute.routing.learning import FeedbackLoop
from qroute.routing.review import ReviewRecord, ShadowTally
from qroute.routing.shadow import Shadow, ShadowResult
from qroute.types import Decision, LabelScore, Prediction, Query, Thresholds


def _no_match() -> Prediction:
    return Prediction(
        label=None,
        confidence=0.0,
        decision=Decision.NO_MATCH,
        reason="nothing near",
        index_version="v1",
        config_version="c1",
        thresholds=Thresholds(0.8, 0.0, 1, 0.5),
        top_labels=(LabelScore("x", 0.1),),
        request_id="",
    )


class ListSink:
    def __init__(self) -> None:
        self.records: list[ReviewRecord] = []

    def add(self, records: Sequence[ReviewRecord], tallies: Sequence[ShadowTally]) -> None:
        self.records += records


async def test_drain_returns_once_merged_batches_are_evaluated() -> None:
    """The shadow task merges queued requests into one batch; drain must see each of them
    done, not wait out its timeout."""
    results: list[ShadowResult] = []
    shadow = Shadow(None, lambda: None, ShadowSettings(), results.extend)
    shadow.start()
    for i in range(5):
        shadow.offer([(Query(f"t{i}"), _no_match())])
    started = time.monotonic()
    await shadow.drain(timeout=3.0)
    took = time.monotonic() - started
    await shadow.stop()
    assert len(results) == 5
    assert took < 1.0, f"drain waited {took:.1f} s for work already done"


async def test_stop_records_the_answers_still_waiting_for_the_candidate(tmp_path: Path) -> None:
    """A sampled answer is recorded once the candidate has answered; stopping the router
    right after must still record it (evaluated or, past the timeout, without it)."""
    settings = Settings(
        review={"enabled": True, "path": str(tmp_path / "r")},
        shadow={"index_version": "v0", "sample_rate": 1.0},
    )
    sink = ListSink()
    loop = FeedbackLoop(settings, lambda: None, sink=sink)
    loop.start()
    loop.observe([Query(f"q{i}") for i in range(3)], [_no_match() for _ in range(3)])
    await loop.stop()
    assert sorted(r.text or "" for r in sink.records) == ["q0", "q1", "q2"]


async def test_answers_left_when_the_stop_times_out_are_recorded_without_the_candidate(
    tmp_path: Path,
) -> None:
    """A candidate that does not finish within stop's timeout: its answers are counted as
    dropped and recorded with the live answer alone, as a full queue does."""
    settings = Settings(
        review={"enabled": True, "path": str(tmp_path / "r")},
        shadow={"index_version": "v0", "sample_rate": 1.0, "max_batch": 1},
    )
    sink = ListSink()
    gate = asyncio.Event()

    class Stuck:
        async def classify(self, queries: Sequence[Query]) -> list[Prediction]:
            await gate.wait()
            raise AssertionError("never answers")

    loop = FeedbackLoop(settings, lambda: None, sink=sink)
    assert loop.shadow is not None

    async def stuck_candidate(live: object) -> Stuck:
        return Stuck()

    loop.shadow.candidate_for = stuck_candidate  # type: ignore[assignment,method-assign]
    loop.shadow._live = lambda: object()  # type: ignore[assignment,return-value]
    loop.start()
    loop.observe([Query(f"q{i}") for i in range(3)], [_no_match() for _ in range(3)])
    await asyncio.sleep(0.05)  # the first batch is with the candidate
    await loop.stop(timeout=0.1)
    assert sorted(r.text or "" for r in sink.records) == ["q0", "q1", "q2"]
    assert all(r.shadow_label is None and r.shadow_path is None for r in sink.records)
    assert loop.shadow.counts["dropped"] == 3

"""Review records the writer has not reached when the router stops: feedback a caller was
told was queued must not vanish without a trace (a warning naming how many, and the
``dropped`` count), when the review store is too slow to take it within the stop's time."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from qroute_indexer import run_index

from qroute.config import load_settings
from qroute.routing.review import ReviewRecord, ReviewRecorder, ShadowTally
from qroute.routing.review_store import ReviewStore
from tests.integration.test_review import TABLE, Router, start_router, write_config


class SlowSink:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.written = 0

    def add(self, records: Sequence[ReviewRecord], tallies: Sequence[ShadowTally]) -> None:
        time.sleep(self.seconds)
        self.written += len(records)


def _feedback(i: int) -> ReviewRecord:
    return ReviewRecord(
        kind="feedback", reasons=("FEEDBACK",), request_id=str(i), text="t", text_hash=None
    )


async def test_records_left_in_the_queue_at_stop_are_counted_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sink = SlowSink(0.5)
    recorder = ReviewRecorder(sink, max_queue=100, batch=2, gather_s=0.0)
    recorder.start()
    assert all(recorder.offer(_feedback(i)) for i in range(6))
    with caplog.at_level(logging.WARNING, logger="qroute.routing.review"):
        await recorder.stop(timeout=0.2)
    # The first batch of 2 is inside the slow write; the other 4 never reached the store.
    assert recorder.counts["dropped"] == 4
    [line] = [r.getMessage() for r in caplog.records if "not written" in r.getMessage()]
    assert "with 4 review record(s) not written and 2 whose write" in line, line
    await asyncio.sleep(0.6)  # let the write in its thread end before the loop closes


async def test_records_taken_but_not_yet_handed_to_the_store_are_counted() -> None:
    # The writer gathers for a while before it writes: a stop then finds them taken off
    # the queue but never written.
    sink = SlowSink(0.0)
    recorder = ReviewRecorder(sink, max_queue=100, gather_s=1.0)
    recorder.start()
    assert all(recorder.offer(_feedback(i)) for i in range(3))
    await asyncio.sleep(0.05)  # the writer has taken the first and sleeps
    await recorder.stop(timeout=0.1)
    assert sink.written == 0 and recorder.counts["dropped"] == 3


async def test_feedback_accepted_just_before_a_stop_is_not_lost_silently(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    config = write_config(tmp_path / "qroute.yaml", tmp_path)
    await run_index(load_settings(config), TABLE, progress=False)
    app, channel = await start_router(config)
    router = Router(app, channel)
    add = ReviewStore.add

    def slow_add(self: ReviewStore, *args: object) -> None:
        time.sleep(3.0)  # longer than the review writer's 2 s at stop
        add(self, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(ReviewStore, "add", slow_add)
    try:
        for i in range(3):
            # Each answered OK: the client now believes its feedback is queued.
            await router.feedback(text=f"환율 알려줘 {i}", correct_label="금융")
    finally:
        await channel.close()
        with caplog.at_level(logging.WARNING, logger="qroute.routing.review"):
            await app.stop(grace=0)
    # Each of the three is either counted as dropped or named as a write left unfinished
    # (the store may still write those from its thread): none goes unmentioned.
    [line] = [r.getMessage() for r in caplog.records if "not written" in r.getMessage()]
    found = re.search(r"with (\d+) review record\(s\) not written and (\d+) whose", line)
    assert found is not None, line
    left, writing = int(found[1]), int(found[2])
    assert left + writing == 3, line
    assert app.learning is not None and app.learning.recorder is not None
    assert app.learning.recorder.counts["dropped"] == left
    await asyncio.sleep(3.2)  # the slow write in its thread

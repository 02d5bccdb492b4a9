"""The review queue's records, and the writer that keeps them off the request path.

The router records an answer when it is ``NO_MATCH``, ``ZERO_SHOT``, below
``review.confidence_below``, or when the shadow candidate disagreed, with its
explanation and the config and index versions that gave it. Recording never holds a
request back: ``ReviewRecorder.offer`` only puts the record on a bounded queue, and one
background task writes batches in a thread. A full queue drops the record and counts it,
and a failing store is logged and counted; neither reaches the caller.

The SQLite store that keeps them, and that ``qroute review`` reads and updates, is
``review_store.ReviewStore`` (docs/review.md has the schema).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, Protocol

from qroute.config import ReviewSettings
from qroute.table import normalise
from qroute.types import Decision, Prediction

__all__ = [
    "ANSWER_REASONS",
    "RECORD_RESULTS",
    "Feedback",
    "ReviewRecord",
    "ReviewRecorder",
    "ReviewSink",
    "ShadowTally",
    "Status",
    "answer_reasons",
    "now",
    "record_of",
    "text_fields",
]

log = logging.getLogger(__name__)

# Why a row is in the queue.
NO_MATCH = "NO_MATCH"
ZERO_SHOT = "ZERO_SHOT"
LOW_CONFIDENCE = "LOW_CONFIDENCE"
SHADOW_DISAGREE = "SHADOW_DISAGREE"
FEEDBACK = "FEEDBACK"
ANSWER_REASONS = (NO_MATCH, ZERO_SHOT, LOW_CONFIDENCE, SHADOW_DISAGREE)
Status = Literal["pending", "accepted", "rejected"]
# What happened to a record handed to the recorder.
RECORD_RESULTS = ("written", "dropped", "failed")


def now() -> str:
    """The time a row records: UTC, ISO 8601, milliseconds."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def text_fields(text: str, mode: str) -> tuple[str | None, str | None]:
    """(text, text_hash) as ``review.store_texts`` keeps them: full keeps both, hash only
    the sha256 hex of the normalised text, none neither."""
    if mode == "none":
        return None, None
    digest = hashlib.sha256(normalise(text).encode("utf-8")).hexdigest()
    return (text if mode == "full" else None), digest


@dataclass(frozen=True, slots=True)
class Feedback:
    """A caller saying what the label of a text should have been, or (``none_of_these``)
    that none of the index's labels fits."""

    text: str
    request_id: str
    correct_label: str
    none_of_these: bool
    source: str


@dataclass(frozen=True, slots=True)
class ReviewRecord:
    """One row to write (see SCHEMA for the meaning of each column)."""

    kind: Literal["answer", "feedback"]
    reasons: tuple[str, ...]
    request_id: str
    text: str | None
    text_hash: str | None
    label: str | None = None
    path: str | None = None
    confidence: float | None = None
    explanation: str | None = None
    top_labels: tuple[tuple[str, float], ...] = ()
    config_version: str | None = None
    index_version: str | None = None
    shadow_label: str | None = None
    shadow_path: str | None = None
    shadow_config_version: str | None = None
    feedback_label: str | None = None
    source: str | None = None
    created_at: str = field(default_factory=now)


@dataclass(frozen=True, slots=True)
class ShadowTally:
    """How often the live answer was ``live`` while the candidate answered ``candidate``
    (labels, "" for NO_MATCH), for one candidate config version."""

    candidate: str
    counts: Counter[tuple[str, str]]


def answer_reasons(prediction: Prediction, settings: ReviewSettings) -> tuple[str, ...]:
    """Why an answer belongs in the review queue (empty: it does not, unless the shadow
    candidate disagrees with it)."""
    reasons = []
    if prediction.decision is Decision.NO_MATCH:
        reasons.append(NO_MATCH)
    elif prediction.decision is Decision.ZERO_SHOT:
        reasons.append(ZERO_SHOT)
    # A NO_MATCH's confidence is in "none of these": it has no label to doubt.
    if prediction.label is not None and prediction.confidence < settings.confidence_below:
        reasons.append(LOW_CONFIDENCE)
    return tuple(reasons)


def record_of(
    text: str,
    prediction: Prediction,
    reasons: Sequence[str],
    settings: ReviewSettings,
    shadow: Prediction | None = None,
) -> ReviewRecord:
    kept, digest = text_fields(text, settings.store_texts)
    return ReviewRecord(
        kind="answer",
        reasons=tuple(reasons),
        request_id=prediction.request_id,
        text=kept,
        text_hash=digest,
        label=prediction.label,
        path=prediction.decision.value,
        confidence=prediction.confidence,
        explanation=prediction.reason,
        top_labels=tuple((s.label, s.score) for s in prediction.top_labels),
        config_version=prediction.config_version,
        index_version=prediction.index_version,
        shadow_label=shadow.label if shadow is not None else None,
        shadow_path=shadow.decision.value if shadow is not None else None,
        shadow_config_version=shadow.config_version if shadow is not None else None,
    )


class ReviewSink(Protocol):
    """What the recorder writes to (``ReviewStore``; tests substitute slow or failing ones)."""

    def add(self, records: Sequence[ReviewRecord], tallies: Sequence[ShadowTally]) -> None: ...


class ReviewRecorder:
    """A bounded queue of records and the one task that writes them off the loop.

    ``counts`` says what happened to each record: written, dropped (the queue was
    full), failed (the store raised; logged at most every 10 s)."""

    def __init__(
        self,
        sink: ReviewSink,
        max_queue: int,
        *,
        batch: int = 256,
        gather_s: float = 0.05,
        on_count: Callable[[str, int], None] | None = None,
    ) -> None:
        self._sink = sink
        self._on_count = on_count
        self._queue: asyncio.Queue[ReviewRecord | ShadowTally] = asyncio.Queue(max_queue)
        self._batch = batch
        # One write per this many seconds at most under steady traffic: a write per
        # record would cost a transaction each.
        self._gather_s = gather_s
        self._task: asyncio.Task[None] | None = None
        # What the writer has taken off the queue and not finished with, and how many
        # records of it the store is writing now: what a stop that cannot wait may lose.
        self._taken: list[ReviewRecord | ShadowTally] = []
        self._writing = 0
        self.counts: Counter[str] = Counter()
        self._last_failure_log = -float("inf")

    def _count(self, result: str, n: int) -> None:
        self.counts[result] += n
        if self._on_count is not None and n:
            self._on_count(result, n)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._write(), name="qroute-review")

    def offer(self, item: ReviewRecord | ShadowTally) -> bool:
        """Queue ``item`` without waiting; False (and counted as dropped) when full."""
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self._count("dropped", 1)
            return False
        return True

    async def _write(self) -> None:
        while True:
            items = self._taken = [await self._queue.get()]
            if self._gather_s:
                await asyncio.sleep(self._gather_s)
            while len(items) < self._batch and not self._queue.empty():
                items.append(self._queue.get_nowait())
            try:
                await self._flush(items)
            finally:
                self._taken = []
                for _ in items:
                    self._queue.task_done()

    async def _flush(self, items: list[ReviewRecord | ShadowTally]) -> None:
        records = [i for i in items if isinstance(i, ReviewRecord)]
        tallies = [i for i in items if isinstance(i, ShadowTally)]
        self._writing = len(records)
        try:
            await asyncio.to_thread(self._sink.add, records, tallies)
        except Exception as exc:
            self._writing = 0
            self._count("failed", len(records))
            now = time.monotonic()
            if now - self._last_failure_log >= 10.0:
                self._last_failure_log = now
                log.warning(
                    "cannot write %d review record(s) (%s: %s); %d failed so far",
                    len(records),
                    type(exc).__name__,
                    exc,
                    self.counts["failed"],
                )
        else:
            self._writing = 0
            self._count("written", len(records))

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait (up to ``timeout`` s) until every queued record has been handed to the
        store: at stop, and in tests."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout)

    async def stop(self, timeout: float = 2.0) -> None:
        """Write what is queued (up to ``timeout`` s), then stop the writer; records still
        queued then are counted as dropped and, with any write left unfinished, logged."""
        if self._task is None:
            return
        await self.drain(timeout)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        # What the writer did not reach in time goes with the process. Feedback among it
        # was answered OK, so say how much, rather than let it vanish without a trace.
        writing, self._writing = self._writing, 0
        # Taken off the queue but never handed to the store (the stop came first).
        left = 0 if writing else sum(isinstance(i, ReviewRecord) for i in self._taken)
        self._taken = []
        while not self._queue.empty():
            if isinstance(self._queue.get_nowait(), ReviewRecord):
                left += 1
            self._queue.task_done()
        if left or writing:
            self._count("dropped", left)
            log.warning(
                "stopped with %d review record(s) not written and %d whose write had not "
                "finished after %.1f s: the review store (review.path) is too slow, and "
                "those rows (feedback included) may be lost",
                left,
                writing,
                timeout,
            )

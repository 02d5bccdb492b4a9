"""The review queue: answers worth a human look and caller feedback, kept in SQLite.

The router records an answer when it is ``NO_MATCH``, ``ZERO_SHOT``, below
``review.confidence_below``, or when the shadow candidate disagreed, with its
explanation and the config and index versions that gave it. Recording never holds a
request back: ``ReviewRecorder.offer`` only puts the record on a bounded queue, and one
background task writes batches in a thread. A full queue drops the record and counts it,
and a failing store is logged and counted; neither reaches the caller.

``ReviewStore`` is also what ``qroute review`` reads and updates (docs/review.md has
the schema).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, Protocol

from qroute.config import ReviewSettings
from qroute.table import normalise
from qroute.types import Decision, Prediction

__all__ = [
    "ANSWER_REASONS",
    "Feedback",
    "ReviewRecord",
    "ReviewRecorder",
    "ReviewRow",
    "ReviewSink",
    "ReviewStore",
    "ShadowTally",
    "answer_reasons",
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

SCHEMA = """
CREATE TABLE IF NOT EXISTS review (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    kind TEXT NOT NULL,
    reasons TEXT NOT NULL,
    request_id TEXT,
    text TEXT,
    text_hash TEXT,
    label TEXT,
    path TEXT,
    confidence REAL,
    explanation TEXT,
    top_labels TEXT NOT NULL DEFAULT '[]',
    config_version TEXT,
    index_version TEXT,
    shadow_label TEXT,
    shadow_path TEXT,
    shadow_config_version TEXT,
    feedback_label TEXT,
    source TEXT,
    status TEXT NOT NULL DEFAULT 'pending',
    reviewed_label TEXT,
    reviewed_at TEXT
);
CREATE INDEX IF NOT EXISTS review_status ON review (status, id);
CREATE INDEX IF NOT EXISTS review_request ON review (request_id);
CREATE TABLE IF NOT EXISTS shadow_tally (
    candidate TEXT NOT NULL,
    live_label TEXT NOT NULL,
    candidate_label TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (candidate, live_label, candidate_label)
);
"""


def _now() -> str:
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
    created_at: str = field(default_factory=_now)


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


@dataclass(frozen=True, slots=True)
class ReviewRow:
    """A stored row, as ``qroute review`` shows it."""

    id: int
    created_at: str
    kind: str
    reasons: tuple[str, ...]
    request_id: str | None
    text: str | None
    text_hash: str | None
    label: str | None
    path: str | None
    confidence: float | None
    explanation: str | None
    top_labels: tuple[tuple[str, float], ...]
    config_version: str | None
    index_version: str | None
    shadow_label: str | None
    shadow_path: str | None
    shadow_config_version: str | None
    feedback_label: str | None
    source: str | None
    status: str
    reviewed_label: str | None
    reviewed_at: str | None

    def as_dict(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__slots__}


_COLUMNS = [
    "created_at",
    "kind",
    "reasons",
    "request_id",
    "text",
    "text_hash",
    "label",
    "path",
    "confidence",
    "explanation",
    "top_labels",
    "config_version",
    "index_version",
    "shadow_label",
    "shadow_path",
    "shadow_config_version",
    "feedback_label",
    "source",
]


class ReviewSink(Protocol):
    """What the recorder writes to (``ReviewStore``; tests substitute slow or failing ones)."""

    def add(self, records: Sequence[ReviewRecord], tallies: Sequence[ShadowTally]) -> None: ...


class ReviewStore:
    """The SQLite file at ``review.path``. Each call opens its own connection, so the
    writer thread and the CLI never share one; SQLite's locking serialises writers."""

    def __init__(self, path: str | Path, max_rows: int = 100_000) -> None:
        self.path = Path(path)
        self.max_rows = max_rows
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.executescript(SCHEMA)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=10)
        # WAL: readers (`qroute review`) never block the writer; NORMAL: a commit does not
        # wait for fsync (a crash may lose the last records, never corrupt the file).
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        try:
            with db:  # one transaction: committed, or rolled back on an error
                yield db
        finally:
            db.close()

    def add(self, records: Sequence[ReviewRecord], tallies: Sequence[ShadowTally] = ()) -> None:
        """Insert ``records`` and add ``tallies``, then drop the oldest pending rows
        beyond ``max_rows``."""
        rows = [
            tuple(
                ",".join(r.reasons)
                if name == "reasons"
                else json.dumps(r.top_labels)
                if name == "top_labels"
                else getattr(r, name)
                for name in _COLUMNS
            )
            for r in records
        ]
        with self._connect() as db:
            db.executemany(
                f"INSERT INTO review ({', '.join(_COLUMNS)}) "
                f"VALUES ({', '.join('?' for _ in _COLUMNS)})",
                rows,
            )
            for tally in tallies:
                db.executemany(
                    "INSERT INTO shadow_tally VALUES (?, ?, ?, ?) ON CONFLICT "
                    "(candidate, live_label, candidate_label) DO UPDATE SET n = n + excluded.n",
                    [(tally.candidate, a, b, n) for (a, b), n in tally.counts.items()],
                )
            db.execute(
                "DELETE FROM review WHERE status = 'pending' AND id NOT IN (SELECT id FROM "
                "review WHERE status = 'pending' ORDER BY id DESC LIMIT ?)",
                (self.max_rows,),
            )

    def rows(
        self,
        *,
        reason: str | None = None,
        label: str | None = None,
        since: str | None = None,
        status: str | None = None,
        limit: int | None = None,
    ) -> list[ReviewRow]:
        """Rows, newest first. ``reason``: one of the row's reasons; ``label``: the
        answered, shadow, feedback or reviewed label; ``since``: an ISO time (UTC)."""
        where, params = [], []
        if reason:
            where.append("(',' || reasons || ',') LIKE ?")
            params.append(f"%,{reason},%")
        if label:
            where.append("? IN (label, shadow_label, feedback_label, reviewed_label)")
            params.append(label)
        if since:
            where.append("created_at >= ?")
            params.append(since)
        if status:
            where.append("status = ?")
            params.append(status)
        sql = "SELECT * FROM review" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY id DESC" + (f" LIMIT {int(limit)}" if limit else "")
        with self._connect() as db:
            return [_row(r) for r in db.execute(sql, params)]

    def get(self, row_id: int) -> ReviewRow | None:
        with self._connect() as db:
            found = db.execute("SELECT * FROM review WHERE id = ?", (row_id,)).fetchone()
        return _row(found) if found else None

    def by_request(self, request_id: str) -> ReviewRow | None:
        with self._connect() as db:
            found = db.execute(
                "SELECT * FROM review WHERE request_id = ? AND kind = 'answer' "
                "ORDER BY id DESC LIMIT 1",
                (request_id,),
            ).fetchone()
        return _row(found) if found else None

    def review(self, row_id: int, status: Status, label: str | None) -> None:
        """Set a row's status and the label accepted (None: none of the labels)."""
        with self._connect() as db:
            db.execute(
                "UPDATE review SET status = ?, reviewed_label = ?, reviewed_at = ? WHERE id = ?",
                (status, label, _now(), row_id),
            )

    def tally(self, candidate: str | None = None) -> dict[str, Counter[tuple[str, str]]]:
        """Live x candidate label counts per candidate config version."""
        sql = "SELECT candidate, live_label, candidate_label, n FROM shadow_tally"
        params: tuple[str, ...] = ()
        if candidate:
            sql, params = sql + " WHERE candidate = ?", (candidate,)
        found: dict[str, Counter[tuple[str, str]]] = {}
        with self._connect() as db:
            for version, live, cand, n in db.execute(sql, params):
                found.setdefault(version, Counter())[(live, cand)] += n
        return found


def _row(values: sqlite3.Row | tuple[object, ...]) -> ReviewRow:
    (
        id_, created_at, kind, reasons, request_id, text, text_hash, label, path, confidence,
        explanation, top_labels, config_version, index_version, shadow_label, shadow_path,
        shadow_config_version, feedback_label, source, status, reviewed_label, reviewed_at,
    ) = tuple(values)  # fmt: skip
    return ReviewRow(
        id=int(id_),
        created_at=str(created_at),
        kind=str(kind),
        reasons=tuple(str(reasons).split(",")) if reasons else (),
        request_id=request_id,
        text=text,
        text_hash=text_hash,
        label=label,
        path=path,
        confidence=confidence,
        explanation=explanation,
        top_labels=tuple((str(a), float(b)) for a, b in json.loads(str(top_labels))),
        config_version=config_version,
        index_version=index_version,
        shadow_label=shadow_label,
        shadow_path=shadow_path,
        shadow_config_version=shadow_config_version,
        feedback_label=feedback_label,
        source=source,
        status=str(status),
        reviewed_label=reviewed_label,
        reviewed_at=reviewed_at,
    )


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
            items = [await self._queue.get()]
            if self._gather_s:
                await asyncio.sleep(self._gather_s)
            while len(items) < self._batch and not self._queue.empty():
                items.append(self._queue.get_nowait())
            try:
                await self._flush(items)
            finally:
                for _ in items:
                    self._queue.task_done()

    async def _flush(self, items: list[ReviewRecord | ShadowTally]) -> None:
        records = [i for i in items if isinstance(i, ReviewRecord)]
        tallies = [i for i in items if isinstance(i, ShadowTally)]
        try:
            await asyncio.to_thread(self._sink.add, records, tallies)
        except Exception as exc:
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
            self._count("written", len(records))

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait (up to ``timeout`` s) until every queued record has been handed to the
        store: at stop, and in tests."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout)

    async def stop(self, timeout: float = 2.0) -> None:
        """Write what is queued (up to ``timeout`` s), then stop the writer."""
        if self._task is None:
            return
        await self.drain(timeout)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None

"""The review queue's SQLite file at ``review.path``: what the router's writer adds to,
and what ``qroute review`` lists and updates (docs/review.md has the schema)."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from qroute.errors import ConfigError
from qroute.routing.review import ReviewRecord, ShadowTally, Status, now

__all__ = ["SCHEMA", "ReviewRow", "ReviewStore"]

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
        try:
            db = sqlite3.connect(self.path, timeout=10)
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        try:
            # WAL: readers (`qroute review`) never block the writer; NORMAL: a commit does
            # not wait for fsync (a crash may lose the last records, never corrupt the file).
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            with db:  # one transaction: committed, or rolled back on an error
                yield db
        except sqlite3.DatabaseError as exc:
            # sqlite3's own message ("file is not a database") names neither the file nor
            # the setting; the CLI and the router's start would show it as a traceback.
            # Its subclasses for a wrong statement or constraint are this code's, not the
            # file's: raised as they are.
            if type(exc) not in (sqlite3.DatabaseError, sqlite3.OperationalError):
                raise
            raise self._error(exc) from exc
        finally:
            db.close()

    def _error(self, exc: sqlite3.Error) -> ConfigError:
        # Locked or unopenable (OperationalError) is not damage: no advice to move it.
        hint = (
            "; if the file is damaged, move it aside and the router starts a new one"
            if type(exc) is sqlite3.DatabaseError
            else ""
        )
        return ConfigError(f"review store {self.path} (review.path): {exc}{hint}")

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
                (status, label, now(), row_id),
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

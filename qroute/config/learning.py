"""The learning sections: the review queue and shadow evaluation (docs/review.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from qroute.config.section import Section


class ReviewSettings(Section):
    """The review queue: answers worth a human look, and caller feedback, in SQLite
    (restart-only; docs/review.md)."""

    enabled: bool = False
    path: str = ".qroute/review.sqlite"
    # Fraction of the answers that qualify (NO_MATCH, ZERO_SHOT, low confidence, shadow
    # disagreement) that is recorded. Feedback is always recorded.
    sample_rate: float = Field(1.0, ge=0.0, le=1.0)
    # Also record answers whose confidence is below this (0: none for this reason).
    confidence_below: float = Field(0.0, ge=0.0, le=1.0)
    # Rows waiting for review (pending) kept; the oldest are dropped beyond it. Reviewed
    # (accepted, rejected) rows are kept: they are the curated data.
    max_rows: int = Field(100_000, ge=1)
    # What a row keeps of the query text: full, hash (sha256 hex of the normalised
    # text), none. Only full rows can be exported as labelled examples.
    store_texts: Literal["full", "hash", "none"] = "full"
    # Records waiting for the writer; beyond it they are dropped and counted, so a slow
    # disk never holds a request back.
    max_queue: int = Field(1024, ge=1)
    # Recent answers remembered in memory so that feedback may name a request_id alone.
    remember_requests: int = Field(10_000, ge=0)


class ShadowSettings(Section):
    """Shadow evaluation of a candidate config on live traffic, after the live answer
    is sent (restart-only; docs/review.md)."""

    # A candidate config file (its hot-reloadable sections: thresholds, zero-shot,
    # retrieval weights); null: no shadow evaluation.
    config: str | None = None
    # A published (kept) index version the candidate searches instead of the live one
    # (`qroute index --list`); null: the live version. Either or both may be set.
    index_version: str | None = None
    # Fraction of the live requests the candidate also answers.
    sample_rate: float = Field(1.0, ge=0.0, le=1.0)
    # Requests waiting for the candidate; beyond it they are dropped and counted.
    max_queue: int = Field(256, ge=1)
    # Texts the candidate classifies per call.
    max_batch: int = Field(32, ge=1, le=4096)
    # `qroute shadow report`: agreement the candidate needs to be promoted.
    min_agreement: float = Field(0.9, ge=0.0, le=1.0)

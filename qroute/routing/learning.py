"""Learning from traffic: the one object the router calls after it has answered.

``observe`` names each answer (``request_id``) and hands what deserves it to the
review queue and the shadow candidate, without waiting for either; ``feedback``
validates and queues what a caller says the label should have been.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import replace

from qroute.config import Settings, load_settings
from qroute.errors import (
    FeatureDisabled,
    InvalidQuery,
    NotIndexed,
    NotReady,
    Overloaded,
    preview,
)
from qroute.routing.classifier import Classifier
from qroute.routing.review import (
    FEEDBACK,
    SHADOW_DISAGREE,
    Feedback,
    ReviewRecord,
    ReviewRecorder,
    ReviewSink,
    ShadowTally,
    answer_reasons,
    record_of,
    text_fields,
)
from qroute.routing.review_store import ReviewRow, ReviewStore
from qroute.routing.shadow import Shadow, ShadowResult
from qroute.types import Decision, LabelScore, Prediction, Query, Thresholds, is_blank

__all__ = ["FeedbackLoop"]

MAX_SOURCE_CHARS = 100
# The router's own request ids are 32 hex digits; room for a client's own scheme.
MAX_REQUEST_ID_CHARS = 128


class FeedbackLoop:
    """The review queue and the shadow candidate of one router (each only when its
    settings turn it on). ``sink`` replaces the SQLite store (tests)."""

    def __init__(
        self,
        settings: Settings,
        live: Callable[[], Classifier | None],
        *,
        sink: ReviewSink | None = None,
        rng: random.Random | None = None,
        on_shadow: Callable[[str, int], None] | None = None,
        on_review: Callable[[str, int], None] | None = None,
    ) -> None:
        self.settings = settings.review
        self._live = live
        self._rng = rng or random.Random()
        self.store: ReviewStore | None = None
        self.recorder: ReviewRecorder | None = None
        if self.settings.enabled:
            if sink is None:
                self.store = ReviewStore(self.settings.path, self.settings.max_rows)
                sink = self.store
            self.recorder = ReviewRecorder(sink, self.settings.max_queue, on_count=on_review)
        self.shadow: Shadow | None = None
        self._shadow_rate = settings.shadow.sample_rate
        if settings.shadow.config or settings.shadow.index_version:
            # A bad candidate file stops the start, naming the file and field.
            candidate = load_settings(settings.shadow.config) if settings.shadow.config else None
            self.shadow = Shadow(candidate, live, settings.shadow, self._shadow_results, on_shadow)
        # request_id -> (text, answer): feedback may name a recent answer alone.
        self._recent: OrderedDict[str, tuple[str, Prediction]] = OrderedDict()

    def start(self) -> None:
        if self.recorder is not None:
            self.recorder.start()
        if self.shadow is not None:
            self.shadow.start()

    async def stop(self, timeout: float = 2.0) -> None:
        """Stop the shadow candidate first: what it still holds goes to the review queue,
        which is written (each up to ``timeout`` s) before its writer stops."""
        if self.shadow is not None:
            await self.shadow.stop(timeout)
        if self.recorder is not None:
            await self.recorder.stop(timeout)

    async def drain(self, timeout: float = 5.0) -> None:
        """Wait until the shadow candidate and the review writer have caught up."""
        if self.shadow is not None:
            await self.shadow.drain(timeout)
        if self.recorder is not None:
            await self.recorder.drain(timeout)

    def _sampled(self) -> bool:
        return self._rng.random() < self.settings.sample_rate

    def observe(self, queries: Sequence[Query], predictions: list[Prediction]) -> list[Prediction]:
        """``predictions`` with a fresh ``request_id`` each; queues what the review
        queue and the shadow candidate take. Never waits."""
        named = [replace(p, request_id=uuid.uuid4().hex) for p in predictions]
        if self.recorder is not None and self.settings.remember_requests:
            for query, prediction in zip(queries, named, strict=True):
                self._recent[prediction.request_id] = (query.text, prediction)
            while len(self._recent) > self.settings.remember_requests:
                self._recent.popitem(last=False)
        shadowed: list[tuple[Query, Prediction]] = []
        for query, prediction in zip(queries, named, strict=True):
            if self.shadow is not None and self._rng.random() < self._shadow_rate:
                shadowed.append((query, prediction))
            else:
                self._record(query, prediction)
        if shadowed and not self.shadow.offer(shadowed):  # type: ignore[union-attr]
            for query, prediction in shadowed:
                self._record(query, prediction)
        return named

    def _record(
        self, query: Query, prediction: Prediction, shadow: Prediction | None = None
    ) -> None:
        if self.recorder is None:
            return
        reasons = answer_reasons(prediction, self.settings)
        if shadow is not None and shadow.label != prediction.label:
            reasons += (SHADOW_DISAGREE,)
        if reasons and self._sampled():
            self.recorder.offer(record_of(query.text, prediction, reasons, self.settings, shadow))

    def _shadow_results(self, results: Sequence[ShadowResult]) -> None:
        tallies: dict[str, ShadowTally] = {}
        for result in results:
            self._record(result.query, result.live, result.candidate)
            if result.candidate is not None:
                version = self.shadow.key(result.candidate)  # type: ignore[union-attr]
                tally = tallies.setdefault(version, ShadowTally(version, Counter()))
                tally.counts[(result.live.label or "", result.candidate.label or "")] += 1
        if self.recorder is not None:
            for tally in tallies.values():
                self.recorder.offer(tally)

    async def feedback(self, feedback: Feedback) -> None:
        """Validate ``feedback`` and queue it. Raises FeatureDisabled (review is off),
        InvalidQuery (naming the field), NotReady, Overloaded (the queue is full)."""
        if self.recorder is None:
            raise FeatureDisabled(
                "feedback goes to the review queue, which this router has off: set "
                "review.enabled: true"
            )
        classifier = self._live()
        if classifier is None:
            raise NotReady("the router is still loading its models")
        if is_blank(feedback.text):
            # Blank is no text: the proto lets a request_id stand for it.
            feedback = replace(feedback, text="")
        if not feedback.text and not feedback.request_id:
            raise InvalidQuery(
                "text is empty and no request_id names an answer: send one of them", "text"
            )
        if feedback.text:
            classifier.validate(Query(feedback.text))
        if feedback.correct_label and feedback.none_of_these:
            raise InvalidQuery(
                "correct_label and none_of_these are both set: send one of them",
                "correct_label",
            )
        if not feedback.correct_label and not feedback.none_of_these:
            raise InvalidQuery(
                "correct_label is empty: name the right label, or set none_of_these",
                "correct_label",
            )
        index = classifier.index
        if feedback.correct_label and index is None:
            # Nothing to check the label against: stored unchecked, a typo would become a
            # new label at the next `qroute index --extra`.
            raise NotIndexed(
                "no index has been published yet, so correct_label cannot be checked: run "
                "`qroute index TABLE`, then send the feedback again",
                classifier.settings.store.collection,
            )
        if (
            feedback.correct_label
            and index is not None
            and feedback.correct_label not in index.labels
        ):
            raise InvalidQuery(
                f"unknown correct_label {preview([feedback.correct_label])}; index "
                f"{index.version} knows {len(index.labels)} labels",
                "correct_label",
            )
        if len(feedback.request_id) > MAX_REQUEST_ID_CHARS:
            raise InvalidQuery(
                f"request_id has {len(feedback.request_id)} characters; the limit is "
                f"{MAX_REQUEST_ID_CHARS}: send the request_id of a response",
                "request_id",
            )
        if len(feedback.source) > MAX_SOURCE_CHARS:
            raise InvalidQuery(
                f"source has {len(feedback.source)} characters; the limit is {MAX_SOURCE_CHARS}",
                "source",
            )
        text, answer = feedback.text, None
        # The recorded row's text hash, where the feedback names an answer only by its id
        # and the review store keeps no texts (review.store_texts: hash or none).
        recorded_hash = None
        if feedback.request_id:
            text_answer = self._recent.get(feedback.request_id)
            if text_answer is None and self.store is not None:
                # Older than memory, but recorded: the row has what feedback needs (its
                # text only where texts are stored).
                row = await asyncio.to_thread(self.store.by_request, feedback.request_id)
                if row is not None:
                    text_answer = (row.text or "", _answer_of(row))
                    recorded_hash = row.text_hash
            if text_answer is not None:
                text = text or text_answer[0]
                answer = text_answer[1]
            elif not text:
                raise InvalidQuery(
                    f"request_id {preview([feedback.request_id])} is not among the last "
                    f"{self.settings.remember_requests} answers this router remembers "
                    "(review.remember_requests): send the text as well",
                    "request_id",
                )
        kept, digest = (
            text_fields(text, self.settings.store_texts) if text else (None, recorded_hash)
        )
        record = ReviewRecord(
            kind="feedback",
            reasons=(FEEDBACK,),
            request_id=feedback.request_id,
            text=kept,
            text_hash=digest,
            label=answer.label if answer else None,
            path=answer.decision.value if answer else None,
            confidence=answer.confidence if answer else None,
            explanation=answer.reason if answer else None,
            top_labels=tuple((s.label, s.score) for s in answer.top_labels) if answer else (),
            config_version=answer.config_version if answer else None,
            index_version=answer.index_version if answer else None,
            feedback_label="" if feedback.none_of_these else feedback.correct_label,
            source=feedback.source,
        )
        if not self.recorder.offer(record):
            raise Overloaded("the review queue is full (review.max_queue): retry later")


def _answer_of(row: ReviewRow) -> Prediction:
    """The parts of a recorded answer that a feedback row repeats."""
    return Prediction(
        label=row.label,
        confidence=row.confidence or 0.0,
        decision=Decision(row.path or Decision.NO_MATCH.value),
        reason=row.explanation or "",
        index_version=row.index_version or "",
        config_version=row.config_version or "",
        thresholds=Thresholds(0.0, 0.0, 0, 0.0),
        top_labels=tuple(LabelScore(label, score) for label, score in row.top_labels),
        request_id=row.request_id or "",
    )

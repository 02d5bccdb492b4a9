"""Shadow evaluation: a candidate config and/or index version answers a sample of live
requests after the live answer is sent, and its answers are compared with the live ones.

The candidate is the live classifier reconfigured with the candidate's hot-reloadable
settings (thresholds, zero-shot, retrieval weights): it shares the models, the store,
the index and the model thread. With ``shadow.index_version`` it searches that published
version instead, through its own store reader. Its work queues behind live work on the
one model thread, so a live batch waits for at most the one candidate batch
(``shadow.max_batch`` texts) already running; requests that find the queue full are not
evaluated (``dropped``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from qroute.config import Settings, ShadowSettings
from qroute.routing.classifier import Classifier
from qroute.store import VectorStore, open_store
from qroute.types import Prediction, Query

__all__ = ["OUTCOMES", "Shadow", "ShadowReport", "ShadowResult", "shadow_report", "tally_key"]

log = logging.getLogger(__name__)

OUTCOMES = ("agree", "disagree", "dropped", "error")


@dataclass(frozen=True, slots=True)
class ShadowResult:
    """One live answer and the candidate's (None when the candidate failed)."""

    query: Query
    live: Prediction
    candidate: Prediction | None

    @property
    def outcome(self) -> str:
        if self.candidate is None:
            return "error"
        return "agree" if self.candidate.label == self.live.label else "disagree"


class Shadow:
    """The candidate's queue and the one task that drains it. ``counts`` has each of
    OUTCOMES; ``on_outcome(outcome, n)`` is called as they happen (metrics)."""

    def __init__(
        self,
        candidate: Settings | None,
        live: Callable[[], Classifier | None],
        settings: ShadowSettings,
        on_results: Callable[[Sequence[ShadowResult]], None],
        on_outcome: Callable[[str, int], None] | None = None,
    ) -> None:
        self.candidate_settings = candidate
        self._live = live
        self._settings = settings
        self._on_results = on_results
        self._on_outcome = on_outcome
        self._queue: asyncio.Queue[list[tuple[Query, Prediction]]] = asyncio.Queue(
            settings.max_queue
        )
        self._candidate: Classifier | None = None
        self._built_from: Classifier | None = None
        # The candidate index version's own reader (a store follows one version).
        self._store: VectorStore | None = None
        self._task: asyncio.Task[None] | None = None
        # The batch with the candidate now (its answers are not recorded yet).
        self._current: list[tuple[Query, Prediction]] | None = None
        self.counts: Counter[str] = Counter({outcome: 0 for outcome in OUTCOMES})

    def _count(self, outcome: str, n: int = 1) -> None:
        self.counts[outcome] += n
        if self._on_outcome is not None:
            self._on_outcome(outcome, n)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="qroute-shadow")

    def offer(self, items: list[tuple[Query, Prediction]]) -> bool:
        """Queue live answers for the candidate without waiting; False (counted as
        dropped) when the queue is full."""
        try:
            self._queue.put_nowait(items)
        except asyncio.QueueFull:
            self._count("dropped", len(items))
            return False
        return True

    def key(self, candidate: Prediction) -> str:
        return tally_key(candidate.config_version, self._settings.index_version)

    async def candidate_for(self, live: Classifier) -> Classifier:
        """The candidate on ``live``'s models (and index, unless ``shadow.index_version``
        names another), rebuilt when the live classifier or its index changes."""
        version = self._settings.index_version
        if (
            self._candidate is None
            or self._built_from is not live
            or (version is None and self._candidate.index is not live.index)
        ):
            settings = live.settings
            if self.candidate_settings is not None:
                settings, _ = live.settings.reloaded(self.candidate_settings)
            if settings.zero_shot.method == "nli" and live.nli is None:
                log.warning(
                    "the shadow candidate wants zero_shot.method nli, which the live config "
                    "does not load: it runs without zero-shot"
                )
            if version is None:
                self._candidate = live.reconfigure(settings)
                # Its stage times are not the live requests': kept out of their metrics.
                self._candidate.observe = None
            else:
                if self._store is None:
                    self._store = open_store(live.settings.store)
                self._candidate = await live.pinned(settings, self._store, version)
            self._built_from = live
        return self._candidate

    async def _run(self) -> None:
        while True:
            batch = await self._queue.get()
            taken = 1
            while len(batch) < self._settings.max_batch and not self._queue.empty():
                batch = batch + self._queue.get_nowait()
                taken += 1
            # Until it is evaluated, the batch's answers are not recorded: ``stop`` records
            # what a cancellation leaves here.
            self._current = batch
            try:
                await self._evaluate(batch)
                self._current = None
            except Exception:
                self._current = None
                log.exception("shadow evaluation failed")
            finally:
                # One task_done per item taken off the queue, or ``drain`` (join) never
                # returns before its timeout.
                for _ in range(taken):
                    self._queue.task_done()

    async def _evaluate(self, batch: list[tuple[Query, Prediction]]) -> None:
        live = self._live()
        answers: Sequence[Prediction | None]
        if live is None:
            answers = [None] * len(batch)
        else:
            try:
                candidate = await self.candidate_for(live)
                answers = await candidate.classify([q for q, _ in batch])
            except Exception as exc:
                log.warning("the shadow candidate failed: %s: %s", type(exc).__name__, exc)
                answers = [None] * len(batch)
        results = [
            ShadowResult(query, prediction, answer)
            for (query, prediction), answer in zip(batch, answers, strict=True)
        ]
        for outcome, n in Counter(r.outcome for r in results).items():
            self._count(outcome, n)
        self._on_results(results)

    async def drain(self, timeout: float = 5.0) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), timeout)

    async def stop(self, timeout: float = 2.0) -> None:
        """Let the candidate answer what is queued (up to ``timeout`` s), then stop. The
        answers it did not reach are counted as dropped and handed on without a candidate
        answer, so that their review records are written as for a full queue."""
        if self._task is not None:
            await self.drain(timeout)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
            left = self._current or []
            self._current = None
            while not self._queue.empty():
                left = left + self._queue.get_nowait()
                self._queue.task_done()
            if left:
                self._count("dropped", len(left))
                self._on_results([ShadowResult(query, live, None) for query, live in left])
        if self._store is not None:
            await self._store.close()
            self._store = None


def tally_key(config_version: str, index_version: str | None) -> str:
    """What the tally of a candidate is stored under: its config version, and the
    index version it searched when that is not the live one."""
    return f"{config_version}@{index_version}" if index_version else config_version


@dataclass(frozen=True, slots=True)
class ShadowReport:
    """What ``qroute shadow report`` prints. Labels are "" for NO_MATCH."""

    candidate: str  # the candidate's config version
    compared: int
    agreement: float | None
    confusion: dict[tuple[str, str], int]
    reviewed: int
    live_accuracy: float | None
    candidate_accuracy: float | None
    min_agreement: float
    promote: bool
    why: str

    def as_dict(self) -> dict[str, object]:
        return {
            "candidate": self.candidate,
            "compared": self.compared,
            "agreement": self.agreement,
            "confusion": [
                {"live": live, "candidate": cand, "n": n}
                for (live, cand), n in sorted(self.confusion.items())
            ],
            "reviewed": self.reviewed,
            "live_accuracy": self.live_accuracy,
            "candidate_accuracy": self.candidate_accuracy,
            "min_agreement": self.min_agreement,
            "promote": self.promote,
            "why": self.why,
        }


async def shadow_report(
    live: Classifier,
    other: Classifier,
    key: str,
    tally: Counter[tuple[str, str]],
    reviewed: Sequence[tuple[str, str | None]],
    min_agreement: float,
) -> ShadowReport:
    """Agreement from the router's ``tally`` of candidate ``key``, and the accuracy of
    ``live`` and of the candidate ``other`` (``Shadow.candidate_for``) on ``reviewed``
    rows ((text, accepted label or None for none-of-these)), classified now."""
    compared = sum(tally.values())
    agreed = sum(n for (a, b), n in tally.items() if a == b)
    agreement = agreed / compared if compared else None
    live_accuracy = candidate_accuracy = None
    if reviewed:
        queries = [Query(text) for text, _ in reviewed]
        truth = [label for _, label in reviewed]
        answers = [await c.classify(queries) for c in (live, other)]
        live_accuracy, candidate_accuracy = (
            sum(p.label == t for p, t in zip(a, truth, strict=True)) / len(truth) for a in answers
        )
    if live_accuracy is None or candidate_accuracy is None:
        promote, why = False, "no reviewed rows yet: accept some with `qroute review accept`"
    elif candidate_accuracy < live_accuracy:
        promote, why = (
            False,
            (
                f"the candidate's accuracy on reviewed rows ({candidate_accuracy:.3f}) is below "
                f"the live config's ({live_accuracy:.3f})"
            ),
        )
    elif agreement is None:
        promote, why = False, "the router has compared no answers yet"
    elif agreement < min_agreement:
        promote, why = (
            False,
            (
                f"agreement {agreement:.3f} is below shadow.min_agreement {min_agreement:.3f}: "
                "review the disagreements (`qroute review list --reason SHADOW_DISAGREE`)"
            ),
        )
    else:
        promote, why = (
            True,
            (
                f"accuracy on reviewed rows {candidate_accuracy:.3f} >= live "
                f"{live_accuracy:.3f}, agreement {agreement:.3f} >= {min_agreement:.3f}"
            ),
        )
    return ShadowReport(
        candidate=key,
        compared=compared,
        agreement=agreement,
        confusion=dict(tally),
        reviewed=len(reviewed),
        live_accuracy=live_accuracy,
        candidate_accuracy=candidate_accuracy,
        min_agreement=min_agreement,
        promote=promote,
        why=why,
    )

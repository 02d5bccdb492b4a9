"""The classifier: embed -> nearest labelled examples -> vote -> NLI zero-shot fallback.

This is the one use-case object both the gRPC server and in-process callers drive.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from qroute.config import Settings
from qroute.encoder import Encoder
from qroute.errors import InvalidQuery, NotIndexed, VersionMissing
from qroute.store import VectorStore
from qroute.types import Decision, Hit, LabelScore, Prediction
from qroute.vote import vote

__all__ = ["Classifier", "IndexState", "ZeroShotScorer"]

log = logging.getLogger(__name__)


class ZeroShotScorer(Protocol):
    def score(
        self, items: Sequence[tuple[str, Sequence[str]]], template: str
    ) -> list[list[LabelScore]]: ...


@dataclass(frozen=True, slots=True)
class IndexState:
    """The published index version this classifier searches, and what it knows of it."""

    version: str
    labels: tuple[str, ...]


class Classifier:
    def __init__(
        self,
        settings: Settings,
        encoder: Encoder,
        zero_shot: ZeroShotScorer,
        store: VectorStore,
    ) -> None:
        self.settings = settings
        self.encoder = encoder
        self.zero_shot = zero_shot
        self.store = store
        self._index: IndexState | None = None

    @property
    def index(self) -> IndexState | None:
        return self._index

    async def refresh_index(self) -> IndexState | None:
        """Follow the store's published version; returns the state now in use."""
        version = await self.store.current_version()
        if version is None or (self._index is not None and self._index.version == version):
            return self._index
        metadata = await self.store.metadata(version)
        await self.store.open(version)
        self._index = IndexState(version=version, labels=tuple(metadata.get("labels", ())))
        log.info("serving index version %s (%d labels)", version, len(self._index.labels))
        return self._index

    def _validate(self, texts: Sequence[str]) -> None:
        limit = self.settings.router.max_text_chars
        for position, text in enumerate(texts):
            where = f"text #{position}" if len(texts) > 1 else "text"
            if not text.strip():
                raise InvalidQuery(f"{where} is empty")
            if len(text) > limit:
                raise InvalidQuery(f"{where} has {len(text)} characters; the limit is {limit}")

    async def _search(
        self, vectors: Sequence[Sequence[float]]
    ) -> tuple[IndexState, list[list[Hit]]]:
        index = self._index or await self.refresh_index()
        if index is None:
            raise NotIndexed("no index has been published yet: run `qroute index TABLE` first")
        try:
            return index, await self.store.search(index.version, vectors, self.settings.router.k)
        except VersionMissing:
            # The indexer published a newer version and dropped ours: follow it once.
            index = await self.refresh_index()
            if index is None:
                raise NotIndexed("no index has been published yet") from None
            return index, await self.store.search(index.version, vectors, self.settings.router.k)

    async def classify(self, texts: Sequence[str]) -> list[Prediction]:
        """Label each text. Raises InvalidQuery, NotIndexed or StoreUnavailable."""
        self._validate(texts)
        vectors = await asyncio.to_thread(self.encoder.encode, list(texts))
        index, all_hits = await self._search(vectors.tolist())
        router, nli = self.settings.router, self.settings.nli
        knn: list[tuple[list[Hit], list[LabelScore]]] = []
        fallback: list[int] = []
        for position, hits in enumerate(all_hits):
            scores = vote(hits, router.vote_temperature)
            knn.append((hits, scores))
            if not hits or hits[0].similarity < router.similarity_threshold:
                fallback.append(position)

        items: list[tuple[str, list[str]]] = []
        for position in fallback:
            hits = knn[position][0]
            if nli.candidates == "all" and index.labels:
                candidates = list(index.labels)
            else:
                candidates = list(dict.fromkeys(hit.label for hit in hits))
            items.append((texts[position], candidates))
        zero_shot: dict[int, list[LabelScore]] = {}
        if items:
            scored = await asyncio.to_thread(self.zero_shot.score, items, nli.template)
            zero_shot = dict(zip(fallback, scored, strict=True))

        return [
            self._decide(index.version, hits, scores, zero_shot.get(position))
            for position, (hits, scores) in enumerate(knn)
        ]

    def _decide(
        self,
        version: str,
        hits: list[Hit],
        scores: list[LabelScore],
        zero_shot: list[LabelScore] | None,
    ) -> Prediction:
        """The answer for one text, given its neighbours, its vote and, when the
        neighbours were not similar enough, its zero-shot scores."""
        router, nli = self.settings.router, self.settings.nli
        best = hits[0].similarity if hits else float("nan")
        if zero_shot is None:
            top = scores[0]
            agreeing = sum(1 for hit in hits if hit.label == top.label)
            decision, label, confidence = Decision.KNN, top.label, top.score
            reason = (
                f"best similarity {best:.3f} >= threshold {router.similarity_threshold:.3f}; "
                f"{agreeing} of {len(hits)} neighbours are {top.label!r}"
            )
        else:
            low = f"best similarity {best:.3f} < threshold {router.similarity_threshold:.3f}"
            top_score = zero_shot[0].score if zero_shot else 0.0
            if zero_shot and top_score >= nli.threshold:
                decision, label, confidence = Decision.ZERO_SHOT, zero_shot[0].label, top_score
                reason = (
                    f"{low}; NLI entailment {top_score:.3f} >= {nli.threshold:.3f} "
                    f"for {label!r} among {len(zero_shot)} candidate labels"
                )
            else:
                decision, label, confidence = Decision.NO_MATCH, None, 1.0 - top_score
                reason = (
                    f"{low}; best NLI entailment {top_score:.3f} < {nli.threshold:.3f} "
                    f"over {len(zero_shot)} candidate labels"
                )
        return Prediction(
            label=label,
            confidence=confidence,
            decision=decision,
            reason=reason,
            index_version=version,
            neighbours=tuple(hits),
            knn_scores=tuple(scores),
            zero_shot_scores=tuple(zero_shot or ()),
        )

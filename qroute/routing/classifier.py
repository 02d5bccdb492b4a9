"""The classifier: embed -> nearest examples grouped by label -> vote -> zero-shot fallback.

Where the index carries a linear head (``index.head``) and ``router.use_head`` is on, the
head's probabilities replace the vote's label scores; the neighbours still gate (the
head's label must have a neighbour above its threshold) and explain the answer.

Embedding and search go through a ``Retriever`` (dense, lexical or hybrid mode).

This is the one use-case object both the gRPC server and in-process callers drive. It
is immutable apart from following the published index version; a config reload builds
a new one with ``reconfigure`` that shares the loaded models and the store.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from qroute.config import Settings
from qroute.embedding.dense import Encoder
from qroute.embedding.lexical import LexicalEncoder, Lexicon
from qroute.errors import InvalidQuery, NotIndexed, VersionMissing
from qroute.routing.head import LinearHead
from qroute.routing.retrieval import Embedded, Retriever, load_encoder
from qroute.routing.vote import label_scores, shares
from qroute.routing.zeroshot import EmbeddingZeroShot, ZeroShotItem, ZeroShotScorer
from qroute.store import VectorStore
from qroute.types import (
    Decision,
    FallbackReason,
    Group,
    LabelScore,
    Prediction,
    Query,
    Thresholds,
)

__all__ = ["Classifier", "IndexState"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class IndexState:
    """The published index version this classifier searches, its labels, (lexical
    and hybrid modes) its document frequencies, and its linear head if it has one."""

    version: str
    labels: tuple[str, ...]
    lexicon: Lexicon | None = None
    head: LinearHead | None = None


@dataclass(frozen=True, slots=True)
class _Vote:
    groups: list[Group]
    scores: list[LabelScore]
    reasons: tuple[FallbackReason, ...]
    thresholds: Thresholds
    detail: str
    # The scores are the head's probabilities, not the vote's similarity scores.
    head: bool = False


class Classifier:
    def __init__(
        self,
        settings: Settings,
        encoder: Encoder | None,
        nli: ZeroShotScorer | None,
        store: VectorStore,
        *,
        index: IndexState | None = None,
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        self.settings = settings
        self.config_version = settings.version
        self.retriever = Retriever(
            settings.retrieval.mode, encoder, LexicalEncoder(settings.lexical)
        )
        self.encoder = self.retriever.encoder
        self.nli = nli
        self.embedding = EmbeddingZeroShot(self.encoder) if self.encoder is not None else None
        self.store = store
        self._index = index
        # One thread runs every model call: torch keeps one warm intra-op thread team
        # instead of one per worker thread, and model calls never overlap.
        self._executor = executor or ThreadPoolExecutor(1, thread_name_prefix="qroute-model")

    @classmethod
    def from_settings(cls, settings: Settings) -> Classifier:
        """Load the models and open the store (blocking: minutes for a hub download;
        lexical mode with zero-shot off loads no model at all)."""
        from qroute.hub import nli_alternative
        from qroute.routing.zeroshot import NLIZeroShot
        from qroute.store import open_store

        nli = None
        if settings.zero_shot.method == "nli":
            nli = NLIZeroShot(settings.nli, without=nli_alternative(settings.retrieval.mode))
        return cls(settings, load_encoder(settings), nli, open_store(settings.store))

    def tuning_warning(self) -> str | None:
        """Why the configured thresholds may not fit this classifier, or None."""
        tuned = self.settings.tuned
        fingerprint = self.retriever.fingerprint
        if tuned is None or not tuned.encoder or tuned.encoder == fingerprint:
            return None
        return (
            f"the thresholds in the config were tuned with encoder {tuned.encoder!r} "
            f"(index {tuned.index_version or '?'}), but this router runs "
            f"{fingerprint!r}: re-run `qroute tune`"
        )

    def reconfigure(self, settings: Settings, nli: ZeroShotScorer | None = None) -> Classifier:
        """A classifier on new (hot-reloadable) settings, sharing models, store and index."""
        clone = Classifier(
            settings,
            self.encoder,
            nli or self.nli,
            self.store,
            index=self._index,
            executor=self._executor,
        )
        clone.embedding = self.embedding
        return clone

    async def close(self) -> None:
        """Close the store and the model thread (shared with reconfigured clones)."""
        await self.store.close()
        self._executor.shutdown(wait=False, cancel_futures=True)

    @property
    def index(self) -> IndexState | None:
        return self._index

    @property
    def zero_shot(self) -> ZeroShotScorer | None:
        method = self.settings.zero_shot.method
        if method == "nli":
            return self.nli
        return self.embedding if method == "embedding" else None

    async def refresh_index(self) -> IndexState | None:
        """Follow the store's published version; returns the state now in use."""
        version = await self.store.current_version()
        if version is None or (self._index is not None and self._index.version == version):
            return self._index
        metadata = await self.store.metadata(version)
        # Raises EncoderMismatch for vectors this router cannot compare with its own;
        # the previous version, if any, keeps being served.
        lexicon = self.retriever.check(version, metadata)
        await self.store.open(version)
        head = LinearHead.from_metadata(metadata["head"]) if "head" in metadata else None
        self._index = IndexState(
            version=version,
            labels=tuple(metadata.get("labels", ())),
            lexicon=lexicon,
            head=head,
        )
        log.info(
            "serving index version %s (%d labels%s)",
            version,
            len(self._index.labels),
            ", with a linear head" if head is not None else "",
        )
        return self._index

    def validate(self, query: Query) -> None:
        """Raise InvalidQuery for a request no classification can answer."""
        limit = self.settings.router.max_text_chars
        if not query.text.strip():
            raise InvalidQuery("text is empty")
        if len(query.text) > limit:
            raise InvalidQuery(f"text has {len(query.text)} characters; the limit is {limit}")
        if query.top_labels < 0:
            raise InvalidQuery("top_labels must not be negative")
        if query.allowed_labels and self._index is not None:
            unknown = sorted(set(query.allowed_labels) - set(self._index.labels))
            if unknown:
                raise InvalidQuery(
                    f"unknown allowed_labels {unknown}; index {self._index.version} knows "
                    f"{len(self._index.labels)} labels"
                )

    async def neighbours(
        self,
        texts: Sequence[str],
        labels: Sequence[Sequence[str] | None],
        *,
        groups: int,
        group_size: int,
    ) -> tuple[IndexState, Embedded, list[list[Group]]]:
        """Embed ``texts`` (on the model thread) and find their label groups in the
        published version, following it if the indexer replaced it meanwhile."""
        loop = asyncio.get_running_loop()
        index = self._index or await self.refresh_index()
        for attempt in range(2):
            if index is None:
                raise NotIndexed("no index has been published yet: run `qroute index TABLE`")
            embedded = await loop.run_in_executor(
                self._executor, self.retriever.embed, texts, index.lexicon
            )
            try:
                found = await self.retriever.search_groups(
                    self.store,
                    index.version,
                    embedded,
                    self.settings.retrieval,
                    groups=groups,
                    group_size=group_size,
                    labels=labels,
                )
                return index, embedded, found
            except VersionMissing:
                if attempt:
                    raise
                # The indexer published a newer version and dropped ours: follow it.
                index = await self.refresh_index()
        raise AssertionError("unreachable")

    async def head_scores(
        self, index: IndexState, embedded: Embedded, allowed: Sequence[Sequence[str]]
    ) -> list[list[LabelScore] | None]:
        """The index's linear head's label probabilities per text (over its allowed
        labels), or None each where there is no head or ``router.use_head`` is off."""
        head = index.head
        if head is None or not self.settings.router.use_head:
            return [None] * len(embedded)
        scored = await asyncio.get_running_loop().run_in_executor(
            self._executor, head.scores, embedded.dense, embedded.sparse, index.lexicon
        )
        return [_allowed(s, labels) for s, labels in zip(scored, allowed, strict=True)]

    def _vote(self, groups: list[Group], head: list[LabelScore] | None = None) -> _Vote:
        router, zero_shot = self.settings.router, self.settings.zero_shot
        scores = head if head is not None else label_scores(groups, router.label_score)
        if not scores:
            thresholds = Thresholds(
                router.similarity_threshold,
                router.min_margin,
                router.min_agreeing,
                zero_shot.threshold,
            )
            return _Vote(
                groups, scores, (FallbackReason.LOW_SIMILARITY,), thresholds, "no neighbours"
            )
        top = scores[0]
        threshold = router.threshold_for(top.label)
        thresholds = Thresholds(
            threshold, router.min_margin, router.min_agreeing, zero_shot.threshold
        )
        winner = next((g for g in groups if g.label == top.label), None)
        hits = winner.hits if winner is not None else ()
        best = hits[0].similarity if hits else -1.0
        agreeing = sum(1 for hit in hits if hit.similarity >= threshold)
        margin = top.score - scores[1].score if len(scores) > 1 else float("inf")

        reasons = []
        parts = [f"head p={top.score:.3f} for {top.label!r}"] if head is not None else []
        if not hits:
            reasons.append(FallbackReason.LOW_SIMILARITY)
            parts.append(f"no example of {top.label!r} among the {router.k} nearest labels")
        elif best < threshold:
            reasons.append(FallbackReason.LOW_SIMILARITY)
            parts.append(f"best similarity {best:.3f} < threshold {threshold:.3f}")
        else:
            parts.append(f"best similarity {best:.3f} >= threshold {threshold:.3f}")
        if margin < router.min_margin:
            reasons.append(FallbackReason.AMBIGUOUS)
            second = scores[1].label
            parts.append(
                f"margin {margin:.3f} over {second!r} < {router.min_margin:.3f} (ambiguous)"
            )
        if router.min_agreeing > 1 and agreeing < router.min_agreeing:
            reasons.append(FallbackReason.FEW_AGREEING)
            parts.append(
                f"{agreeing} of {top.label!r}'s neighbours reach the threshold "
                f"< {router.min_agreeing} needed"
            )
        elif not reasons:
            parts.append(f"{agreeing} of the {len(hits)} nearest {top.label!r} examples reach it")
        return _Vote(
            groups, scores, tuple(reasons), thresholds, "; ".join(parts), head=head is not None
        )

    def _candidates(self, query: Query, vote: _Vote, index: IndexState) -> tuple[str, ...]:
        settings = self.settings.zero_shot
        if settings.candidates == "all" or not vote.scores:
            labels = query.allowed_labels or index.labels
        else:
            labels = tuple(s.label for s in vote.scores[: settings.top_n])
        return tuple(labels)

    async def classify(self, queries: Sequence[Query]) -> list[Prediction]:
        """Label each query: one encoder call, one search batch and at most one
        zero-shot pass for all of them. Raises InvalidQuery, NotIndexed, StoreUnavailable."""
        for query in queries:
            self.validate(query)
        loop = asyncio.get_running_loop()
        router = self.settings.router
        index, embedded, found = await self.neighbours(
            [q.text for q in queries],
            [q.allowed_labels or None for q in queries],
            groups=router.k,
            group_size=router.group_size,
        )
        heads = await self.head_scores(index, embedded, [q.allowed_labels for q in queries])
        votes = [self._vote(groups, h) for groups, h in zip(found, heads, strict=True)]

        scorer = self.zero_shot
        fallback = [i for i, vote in enumerate(votes) if vote.reasons]
        zero_shot: dict[int, list[LabelScore]] = {}
        if scorer is not None and fallback:
            items = [
                ZeroShotItem(
                    queries[i].text,
                    embedded.dense[i] if embedded.dense is not None else None,
                    self._candidates(queries[i], votes[i], index),
                )
                for i in fallback
            ]
            scored = await loop.run_in_executor(
                self._executor, scorer.score, items, self.settings.zero_shot
            )
            zero_shot = dict(zip(fallback, scored, strict=True))

        method = scorer.method(self.settings.zero_shot) if scorer is not None else ""
        return [
            self._decide(query, vote, index, zero_shot.get(i), method)
            for i, (query, vote) in enumerate(zip(queries, votes, strict=True))
        ]

    def _decide(
        self,
        query: Query,
        vote: _Vote,
        index: IndexState,
        zero_shot: list[LabelScore] | None,
        method: str,
    ) -> Prediction:
        settings = self.settings
        temperature = settings.router.vote_temperature
        knn_shares = list(vote.scores) if vote.head else shares(vote.scores, temperature)
        top_n = max(query.top_labels, 1)
        label: str | None
        if not vote.reasons:
            decision, label, confidence = Decision.KNN, knn_shares[0].label, knn_shares[0].score
            path = "head" if vote.head else "kNN"
            reason, top = f"{path}: {vote.detail}", knn_shares[:top_n]
        elif zero_shot is None:
            decision, label, confidence = Decision.NO_MATCH, None, 0.0
            reason, top, method = f"{vote.detail}; zero-shot is off", knn_shares[:top_n], ""
        else:
            threshold = settings.zero_shot.threshold
            best = zero_shot[0] if zero_shot else LabelScore("", 0.0)
            single = method == "nli-single"
            if zero_shot and (single or best.score >= threshold):
                decision, label, confidence = Decision.ZERO_SHOT, best.label, best.score
                rule = "single-label mode" if single else f">= {threshold:.3f}"
                verdict = f"{method} {best.score:.3f} for {best.label!r} ({rule})"
            else:
                decision, label, confidence = Decision.NO_MATCH, None, 1.0 - best.score
                verdict = f"best {method} score {best.score:.3f} < {threshold:.3f}: none of these"
            reason = f"{vote.detail}; {verdict} among {len(zero_shot)} candidate labels"
            top = zero_shot[:top_n]
        neighbours = sorted(
            (hit for group in vote.groups for hit in group.hits),
            key=lambda hit: hit.similarity,
            reverse=True,
        )
        return Prediction(
            label=label,
            confidence=confidence,
            decision=decision,
            reason=reason,
            index_version=index.version,
            config_version=self.config_version,
            thresholds=vote.thresholds,
            neighbours=tuple(neighbours),
            knn_scores=tuple(vote.scores),
            zero_shot_scores=tuple(zero_shot or ()),
            fallback_reasons=vote.reasons,
            top_labels=tuple(top),
            zero_shot_method=method if zero_shot is not None else "",
        )


def _allowed(scores: list[LabelScore], allowed: Sequence[str]) -> list[LabelScore]:
    """The head's probabilities over the allowed labels only, summing to one again."""
    if not allowed:
        return scores
    wanted = set(allowed)
    kept = [s for s in scores if s.label in wanted]
    total = sum(s.score for s in kept) or 1.0
    return [LabelScore(s.label, s.score / total) for s in kept]

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

from qroute.config import Settings
from qroute.embedding.dense import Encoder, same_encoder
from qroute.embedding.lexical import LexicalEncoder
from qroute.errors import (
    IndexRejected,
    NotIndexed,
    QrouteError,
    VersionMissing,
)
from qroute.routing.head import LinearHead
from qroute.routing.published import IndexState, follow_published, load_version
from qroute.routing.retrieval import Embedded, Retriever, load_encoder
from qroute.routing.validation import validate_queries, validate_query
from qroute.routing.vote import (
    Vote,
    calibrate,
    shares,
    take_vote,
    zero_shot_accepts,
    zero_shot_candidates,
)
from qroute.routing.zeroshot import EmbeddingZeroShot, ZeroShotItem, ZeroShotScorer
from qroute.store import VectorStore
from qroute.types import (
    Decision,
    Group,
    IndexInfo,
    LabelScore,
    Observe,
    Prediction,
    Query,
    RequestLimits,
    Stage,
    timed,
)

__all__ = ["Classifier"]

log = logging.getLogger(__name__)


def _not_indexed(collection: str) -> NotIndexed:
    return NotIndexed("no index has been published yet: run `qroute index TABLE`", collection)


class Classifier:
    def __init__(
        self,
        settings: Settings,
        encoder: Encoder | None,
        nli: ZeroShotScorer | None,
        store: VectorStore,
        *,
        index: IndexState | None = None,
        failure: QrouteError | None = None,
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        self.settings = settings
        self.config_version = settings.version
        mode = settings.retrieval.mode
        # Not in dense mode: the morph analyser would load a model for nothing.
        lexical = LexicalEncoder(settings.lexical) if mode != "dense" else None
        self.retriever = Retriever(mode, encoder, lexical)
        self.encoder = self.retriever.encoder
        self.nli = nli
        self.embedding = EmbeddingZeroShot(self.encoder) if self.encoder is not None else None
        self.store = store
        self._index = index
        # Why the published version could not be loaded last time, while none serves:
        # requests get this error instead of each retrying the load.
        self._failure = failure
        # One thread runs every model call: torch keeps one warm intra-op thread team
        # instead of one per worker thread, and model calls never overlap.
        self._executor = executor or ThreadPoolExecutor(1, thread_name_prefix="qroute-model")
        # Told how long each stage of a batch took (the app's metrics and tracing).
        self.observe: Observe | None = None
        # Pinned (``pinned``): searches one given version and never follows the pointer.
        self._pinned = False
        # Index versions whose head this router was told it cannot use: said once, not
        # on every batch (shared with the clones of a reload).
        self._unusable_heads: set[str] = set()

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
        if tuned is None or not tuned.encoder or same_encoder(tuned.encoder, fingerprint):
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
            failure=self._failure,
            executor=self._executor,
        )
        clone.embedding = self.embedding
        clone.observe = self.observe
        clone._unusable_heads = self._unusable_heads
        return clone

    async def pinned(self, settings: Settings, store: VectorStore, version: str) -> Classifier:
        """A classifier on (hot-reloadable) ``settings`` that searches ``version`` of
        ``store`` (its own reader: a store follows one version at a time), sharing this
        one's models and model thread, and never following the published version. Raises
        VersionMissing, EncoderMismatch. Close ``store`` yourself, not the clone: closing
        it would stop the shared model thread."""
        state = await load_version(store, self.retriever, version)
        clone = Classifier(
            settings, self.encoder, self.nli, store, index=state, executor=self._executor
        )
        clone.embedding = self.embedding
        clone._pinned = True
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
        """Follow the store's published version; returns the state now in use.

        A new version is opened and answers a probe search before it replaces the one
        in use. When it cannot be served this raises (EncoderMismatch, StoreUnavailable,
        IndexRejected for anything else, such as a corrupt segment or an unreadable
        pointer) and the version in use, if any, keeps serving; so it does when the
        published pointer disappears (IndexRejected)."""
        try:
            state = await follow_published(
                self.store, self.retriever, self.settings.retrieval, self._index
            )
        except QrouteError as exc:
            self._failure = exc
            raise
        except Exception as exc:
            # Unreadable bytes or files (a PermissionError, non-UTF-8 pointer, broken
            # JSON metadata) are the store's state, not a bug of this process.
            self._failure = IndexRejected(
                f"cannot read the published index: {type(exc).__name__}: {exc}", "read"
            )
            raise self._failure from exc
        self._index = state
        self._failure = None
        return state

    def batch_limit(self) -> tuple[int, str]:
        """The most queries one request may carry, and the setting that sets it: the
        batcher's queue caps router.max_batch_texts, as a larger batch could never fit."""
        return min(
            (self.settings.router.max_batch_texts, "router.max_batch_texts"),
            (self.settings.batching.max_queue, "batching.max_queue"),
        )

    def limits(self) -> RequestLimits:
        router = self.settings.router
        return RequestLimits(
            max_text_chars=router.max_text_chars,
            max_batch_texts=self.batch_limit()[0],
            max_allowed_labels=router.max_allowed_labels,
        )

    def index_info(self) -> IndexInfo:
        """What this classifier serves. Raises NotIndexed, or why the published version
        could not be loaded (EncoderMismatch, StoreUnavailable), while none serves."""
        index = self._index
        if index is None:
            if self._failure is not None:
                raise self._failure.with_traceback(None)
            raise _not_indexed(self.settings.store.collection)
        tuned = self.settings.tuned
        return IndexInfo(
            index_version=index.version,
            labels=index.labels,
            rows=index.rows,
            retrieval_mode=self.retriever.mode,
            encoder_fingerprint=self.retriever.fingerprint,
            config_version=self.config_version,
            tuned_encoder=tuned.encoder if tuned is not None else "",
            uses_head=self.usable_head(index) is not None,
            limits=self.limits(),
        )

    def validate(self, query: Query) -> None:
        """Raise InvalidQuery, naming the field, for a request no classification can
        answer (see ``validate_query``)."""
        validate_query(query, self.settings.router, self._index)

    def validate_all(self, queries: Sequence[Query]) -> None:
        """Raise one InvalidQuery for every bad query, by position (``validate_queries``)."""
        validate_queries(queries, self.settings.router, self._index)

    async def neighbours(
        self,
        texts: Sequence[str],
        labels: Sequence[Sequence[str] | None],
        *,
        groups: int,
        group_size: int,
        embedded: Embedded | None = None,
    ) -> tuple[IndexState, Embedded, list[list[Group]]]:
        """Embed ``texts`` (on the model thread; ``embedded``: already done) and find
        their label groups in the published version, following it if the indexer
        replaced it meanwhile."""
        loop = asyncio.get_running_loop()
        index = self._index
        if index is None:
            failure = self._failure
            if failure is not None:
                # The follower retries; until then every request says why.
                raise failure.with_traceback(None)
            index = await self.refresh_index()
        for attempt in range(2):
            if index is None:
                raise _not_indexed(self.settings.store.collection)
            if embedded is None or attempt:
                with timed(self.observe, Stage.EMBED):
                    embedded = await loop.run_in_executor(
                        self._executor, self.retriever.embed, texts, index.lexicon
                    )
            try:
                with timed(self.observe, Stage.SEARCH):
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
                if attempt or self._pinned:
                    raise
                # The indexer published a newer version and dropped ours: follow it.
                index = await self.refresh_index()
        raise AssertionError("unreachable")

    def usable_head(self, index: IndexState) -> LinearHead | None:
        """The index's linear head where ``router.use_head`` is on and this router
        computes every feature it was fitted on, else None (the vote decides)."""
        head = index.head
        if head is None or not self.settings.router.use_head:
            return None
        lacks = head.lacks(
            dense=self.retriever.encoder is not None, lexical=self.retriever.lexical is not None
        )
        if not lacks:
            return head
        if index.version not in self._unusable_heads:
            self._unusable_heads.add(index.version)
            log.warning(
                "index version %s has a linear head fitted on %s features this %s-mode "
                "router does not compute (retrieval.mode): the vote decides instead; "
                "re-index with index.head in this mode, or set retrieval.mode to the index's",
                index.version,
                lacks,
                self.retriever.mode,
            )
        return None

    async def head_scores(
        self, index: IndexState, embedded: Embedded, allowed: Sequence[Sequence[str]]
    ) -> list[list[LabelScore] | None]:
        """The index's linear head's label probabilities per text (over its allowed
        labels), or None each where there is no usable head (``usable_head``)."""
        head = self.usable_head(index)
        if head is None:
            return [None] * len(embedded)
        with timed(self.observe, Stage.HEAD):
            scored = await asyncio.get_running_loop().run_in_executor(
                self._executor, head.scores, embedded.dense, embedded.sparse, index.lexicon
            )
        none = self.settings.table.none_label
        return [_allowed(s, labels, none) for s, labels in zip(scored, allowed, strict=True)]

    async def classify(self, queries: Sequence[Query]) -> list[Prediction]:
        """Validate, then label each query (in-process callers; the server goes through
        ``qroute.routing.router.Router``, which validates once at the door). Raises
        InvalidQuery, NotIndexed, StoreUnavailable."""
        self.validate_all(queries)
        return await self.classify_validated(queries)

    async def votes(self, queries: Sequence[Query]) -> tuple[IndexState, Embedded, list[Vote]]:
        """Each (validated) query's vote over its label groups and the head's scores:
        the index's own answer, before the thresholds send it to any fallback. Raises
        NotIndexed, StoreUnavailable."""
        router = self.settings.router
        index, embedded, found = await self.neighbours(
            [q.text for q in queries],
            [q.allowed_labels or None for q in queries],
            groups=router.k,
            group_size=router.group_size,
        )
        heads = await self.head_scores(index, embedded, [q.allowed_labels for q in queries])
        zero_shot, none = self.settings.zero_shot, self.settings.table.none_label
        votes = [
            take_vote(groups, router, zero_shot, head, none)
            for groups, head in zip(found, heads, strict=True)
        ]
        return index, embedded, votes

    async def classify_validated(self, queries: Sequence[Query]) -> list[Prediction]:
        """Label each query, already validated: one encoder call, one search batch and
        at most one zero-shot pass for all of them. Raises NotIndexed, StoreUnavailable."""
        loop = asyncio.get_running_loop()
        index, embedded, votes = await self.votes(queries)
        scorer = self.zero_shot
        fallback = [i for i, vote in enumerate(votes) if vote.reasons and not vote.none]
        zero_shot: dict[int, list[LabelScore]] = {}
        if scorer is not None and fallback:
            items = [
                ZeroShotItem(
                    queries[i].text,
                    embedded.dense[i] if embedded.dense is not None else None,
                    zero_shot_candidates(
                        votes[i].scores,
                        queries[i].allowed_labels or index.labels,
                        self.settings.zero_shot,
                        self.settings.table.none_label,
                    ),
                )
                for i in fallback
            ]
            with timed(self.observe, Stage.ZERO_SHOT):
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
        vote: Vote,
        index: IndexState,
        zero_shot: list[LabelScore] | None,
        method: str,
    ) -> Prediction:
        settings = self.settings
        temperature = settings.router.vote_temperature
        knn_shares = list(vote.scores) if vote.head else shares(vote.scores, temperature)
        # The head's scores include the none label's probability; a ranked answer never.
        ranked = [s for s in knn_shares if s.label != settings.table.none_label]
        top_n = max(query.top_labels, 1)
        label: str | None
        if not vote.reasons:
            decision, label, confidence = Decision.KNN, knn_shares[0].label, vote.confidence
            path = "head" if vote.head else "kNN"
            reason, top = f"{path}: {vote.detail}", ranked[:top_n]
        elif vote.none:
            decision, label, confidence = Decision.NO_MATCH, None, knn_shares[0].score
            reason, top, method = vote.detail, ranked[:top_n], ""
        elif zero_shot is None:
            decision, label, confidence = Decision.NO_MATCH, None, 0.0
            reason, top, method = f"{vote.detail}; zero-shot is off", ranked[:top_n], ""
        else:
            threshold = settings.zero_shot.threshold
            best = zero_shot[0] if zero_shot else LabelScore("", 0.0)
            single = method == "nli-single"
            knots = settings.router.calibration.get("zero_shot")
            least = settings.router.min_confidence
            if zero_shot and zero_shot_accepts(best.score, threshold, single, knots, least):
                confidence = float(calibrate(best.score, knots))
                decision, label = Decision.ZERO_SHOT, best.label
                rule = "single-label mode" if single else f">= {threshold:.3f}"
                verdict = f"{method} {best.score:.3f} for {best.label!r} ({rule})"
            else:
                # 1 - the best score, cut to [0, 1]: an embedding cosine may be negative.
                confidence = 1.0 - float(calibrate(best.score, None))
                decision, label = Decision.NO_MATCH, None
                if zero_shot and zero_shot_accepts(best.score, threshold, single):
                    verdict = (
                        f"{method} {best.score:.3f} for {best.label!r}: confidence "
                        f"{calibrate(best.score, knots):.3f} < min_confidence {least:.3f}"
                    )
                else:
                    verdict = (
                        f"best {method} score {best.score:.3f} < {threshold:.3f}: none of these"
                    )
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


def _allowed(
    scores: list[LabelScore], allowed: Sequence[str], none_label: str | None = None
) -> list[LabelScore]:
    """The head's probabilities over the allowed labels only, summing to one again. The
    none label stays: it is never answered, only the head's way to say NO_MATCH, and
    without it an out-of-scope query would get an allowed label (even when the request
    lists every label)."""
    if not allowed:
        return scores
    wanted = set(allowed) | ({none_label} if none_label is not None else set())
    kept = [s for s in scores if s.label in wanted]
    if len(kept) == len(scores):
        return scores  # nothing dropped: the same probabilities, not renormalised ones
    total = sum(s.score for s in kept) or 1.0
    return [LabelScore(s.label, s.score / total) for s in kept]

"""Router: the serving path's one entry, whatever the transport.

A request goes validate (once) -> the micro-batcher -> the classifier current when its
batch runs. A config reload or a new classifier is one reference swap (``install``): a
batch never mixes two configs, and requests in flight finish on the one they started
with. Queries answered before under the same config and index version come from the
result cache (``router.cache_size``, see qroute.routing.cache) without being queued.
The gRPC app (``qroute_server.app``) wires this to the network and owns nothing of the
request path itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from qroute.config import BatchingSettings
from qroute.errors import InvalidQuery, NotReady
from qroute.routing.batching import MicroBatcher
from qroute.routing.cache import ResultCache
from qroute.routing.classifier import Classifier
from qroute.types import Observe, Prediction, Query

__all__ = ["Router"]


class Router:
    """Validates requests, batches them, and answers with the installed classifier.

    Raises NotReady before a classifier is installed and once ``stop_accepting`` was
    called; InvalidQuery (naming each bad query), Overloaded (the queue is full) and
    whatever the classifier raises."""

    def __init__(
        self,
        batching: BatchingSettings,
        *,
        on_batch: Callable[[int], None] | None = None,
        observe: Observe | None = None,
        on_cache: Callable[[str], None] | None = None,
    ) -> None:
        self._classifier: Classifier | None = None
        # Sized by the installed classifier's router.cache_size (hot-reloadable).
        self.cache = ResultCache(0, on_cache)
        self.batcher: MicroBatcher[Query, Prediction] = MicroBatcher(
            self._run,
            max_batch_size=batching.max_batch_size,
            max_wait_s=batching.max_wait_ms / 1000,
            max_queue=batching.max_queue,
            on_batch=on_batch,
            observe=observe,
        )
        self._accepting = True
        # Accepted requests not answered yet: a graceful stop waits for them.
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def classifier(self) -> Classifier | None:
        return self._classifier

    def current(self) -> Classifier:
        """The classifier a new request uses; NotReady while loading or shutting down."""
        if not self._accepting:
            raise NotReady("the router is shutting down")
        if self._classifier is None:
            raise NotReady("the router is still loading its models")
        return self._classifier

    def install(self, classifier: Classifier) -> None:
        """Serve with ``classifier`` from the next batch on."""
        self._classifier = classifier
        self.cache.resize(classifier.settings.router.cache_size)

    def start(self) -> None:
        self.batcher.start()

    async def classify(self, queries: Sequence[Query], deadline: float | None) -> list[Prediction]:
        """The predictions for one request's queries (``deadline`` in loop.time()
        seconds, or None)."""
        classifier = self.current()
        if not queries:
            raise InvalidQuery("requests is empty", "requests")
        limit, setting = classifier.batch_limit()
        if len(queries) > limit:
            raise InvalidQuery(
                f"requests has {len(queries)} texts; the limit is {limit} ({setting}): "
                "split the batch",
                "requests",
            )
        classifier.validate_all(queries)
        cache = self.cache
        index = classifier.index
        if not cache.size or index is None:
            return await self._submit(queries, deadline)
        # A reload or a newly published version empties the cache here.
        cache.enter((classifier.config_version, index.version))
        found = [cache.get(query) for query in queries]
        missing = [query for query, hit in zip(queries, found, strict=True) if hit is None]
        if not missing:
            return [hit for hit in found if hit is not None]
        computed = iter(await self._submit(missing, deadline))
        answers = []
        for query, hit in zip(queries, found, strict=True):
            if hit is None:
                hit = next(computed)
                cache.put(query, hit)
            answers.append(hit)
        return answers

    async def _submit(self, queries: Sequence[Query], deadline: float | None) -> list[Prediction]:
        self._in_flight += 1
        self._idle.clear()
        try:
            return await self.batcher.submit(queries, deadline)
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()

    async def _run(self, queries: list[Query]) -> list[Prediction]:
        # Whatever classifier is current when the batch runs; the queries were
        # validated when they were accepted.
        assert self._classifier is not None
        return await self._classifier.classify_validated(queries)

    @property
    def accepting(self) -> bool:
        return self._accepting

    def stop_accepting(self) -> None:
        """Refuse new requests (NotReady) from now on; accepted ones go on."""
        self._accepting = False

    async def drained(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for every accepted request to be answered."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        """Stop the batcher and close the classifier (and the store and model thread it
        shares with the classifiers it replaced)."""
        await self.batcher.stop()
        if self._classifier is not None:
            await self._classifier.close()

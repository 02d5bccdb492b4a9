"""ServerStore: a Qdrant server or cluster through qdrant-client (gRPC preferred).

Versions are collections ``<collection>_v<N>``; the published one is the alias
``<collection>``, switched atomically. Two bookkeeping collections, never versions:
``<collection>__qroute`` records the highest version number issued (metadata
``issued``), so a dropped draft's number is never reused, and ``<collection>__lock``
exists while an indexer or a rollback is writing. The same class runs over
qdrant-client's ``:memory:`` mode in the contract tests, where no server is available.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import grpc
from qdrant_client import AsyncQdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from qroute.errors import IndexWriteError, StoreUnavailable, VersionMissing
from qroute.store import qdrant_forms as forms
from qroute.store.base import (
    LEXICAL,
    RRF_K,
    Candidate,
    Group,
    Point,
    SearchVector,
    fused_candidates,
    version_name,
    version_number,
)
from qroute.store.metadata import LABEL_FIELD, hit_from_payload
from qroute.types import Hit, SparseVector

__all__ = ["ServerStore"]

log = logging.getLogger(__name__)

# A writer refreshes its lock this often; a lock not refreshed for _LEASE_S belongs to
# a writer that died (Qdrant has no lock primitive, and no session to end with it).
_HEARTBEAT_S = 10.0
_LEASE_S = 60.0


class ServerStore:
    """``endpoint``: where the client dials, named in StoreUnavailable messages.
    ``shard_number``, ``replication_factor`` and ``write_consistency_factor`` shape each
    version collection it creates; ``read_consistency`` is how many replicas each search
    asks. None leaves each to Qdrant; copies and consistency matter only in a cluster.
    ``hnsw_ef``: the HNSW beam of every dense search (None: Qdrant's default)."""

    def __init__(
        self,
        client: AsyncQdrantClient,
        collection: str,
        endpoint: str = "",
        *,
        shard_number: int | None = None,
        replication_factor: int | None = None,
        write_consistency_factor: int | None = None,
        read_consistency: int | str | None = None,
        hnsw_ef: int | None = None,
    ) -> None:
        self._hnsw_ef = hnsw_ef
        self._client = client
        self._collection = collection
        self._endpoint = endpoint
        self._state = f"{collection}__qroute"
        self._lock_name = f"{collection}__lock"
        self._shard_number = shard_number
        self._replication_factor = replication_factor
        self._write_consistency_factor = write_consistency_factor
        self._consistency: models.ReadConsistency | None = (
            models.ReadConsistencyType(read_consistency)
            if isinstance(read_consistency, str)
            else read_consistency
        )

    async def _call(self, what: str, coro: Any, version: str | None = None) -> Any:
        """Await a client call, translating transport failures into StoreUnavailable
        and a missing collection into VersionMissing."""
        try:
            return await coro
        except (ResponseHandlingException, ConnectionError, TimeoutError) as exc:
            raise StoreUnavailable(f"{self._unreachable()} ({what}): {exc}") from exc
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND and version is not None:
                raise VersionMissing(f"index version {version} does not exist") from exc
            if exc.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise StoreUnavailable(f"{self._unreachable()} ({what}): {exc.details()}") from exc
            if exc.code() in (
                grpc.StatusCode.UNAUTHENTICATED,
                grpc.StatusCode.PERMISSION_DENIED,
            ):
                raise StoreUnavailable(self._refused(what, exc.details())) from exc
            raise
        except (UnexpectedResponse, ValueError, KeyError) as exc:
            if isinstance(exc, UnexpectedResponse) and exc.status_code in (401, 403):
                raise StoreUnavailable(self._refused(what, str(exc).splitlines()[0])) from exc
            if version is not None and forms.is_not_found(exc):
                raise VersionMissing(f"index version {version} does not exist") from exc
            raise

    def _unreachable(self) -> str:
        return f"Qdrant{self._where()} is unreachable"

    def _where(self) -> str:
        return f" at {self._endpoint}" if self._endpoint else ""

    def _refused(self, what: str, details: str | None) -> str:
        # Without this a wrong key surfaced as a raw client error, and a read-only key
        # on the indexer as "another indexer is writing" (its lock could not be created).
        return (
            f"Qdrant{self._where()} refused the request ({what}): {details}; check "
            "store.api_key (QROUTE_STORE__API_KEY): the indexer needs a key that may "
            "write, the router one that may read"
        )

    async def current_version(self) -> str | None:
        response = await self._call("get aliases", self._client.get_aliases())
        for alias in response.aliases:
            if alias.alias_name == self._collection:
                return str(alias.collection_name)
        return None

    async def versions(self) -> list[str]:
        response = await self._call("list collections", self._client.get_collections())
        found = [
            (number, c.name)
            for c in response.collections
            if (number := version_number(self._collection, c.name)) is not None
        ]
        return [name for _, name in sorted(found)]

    async def create_version(
        self, dimension: int | None, metadata: Mapping[str, Any], *, sparse: bool = False
    ) -> str:
        name = version_name(self._collection, await self._issue())
        vectors: models.VectorParams | dict[str, models.VectorParams] = {}
        if dimension is not None:
            vectors = models.VectorParams(size=dimension, distance=models.Distance.COSINE)
        sparse_vectors = None
        if sparse:
            sparse_vectors = {LEXICAL: models.SparseVectorParams(modifier=models.Modifier.IDF)}
        await self._call(
            "create collection",
            self._client.create_collection(
                collection_name=name,
                vectors_config=vectors,
                sparse_vectors_config=sparse_vectors,
                shard_number=self._shard_number,
                replication_factor=self._replication_factor,
                write_consistency_factor=self._write_consistency_factor,
                metadata=dict(metadata),
            ),
        )
        await self._call(
            "index the label field",
            self._client.create_payload_index(
                collection_name=name,
                field_name=LABEL_FIELD,
                field_schema=models.PayloadSchemaType.KEYWORD,
            ),
            name,
        )
        return name

    async def _issue(self) -> int:
        """The next version number: above every version, and above every number issued
        before (recorded in the bookkeeping collection), so a dropped draft's number is
        never given to another version."""
        existing = [version_number(self._collection, v) or 0 for v in await self.versions()]
        current = await self.current_version()
        if current is not None:
            existing.append(version_number(self._collection, current) or 0)
        exists = await self._call(
            "find the bookkeeping collection", self._client.collection_exists(self._state)
        )
        if exists:
            state = await self.metadata(self._state)
            existing.append(int(state.get("issued", 0)))
        number = max(existing, default=0) + 1
        if exists:
            await self.add_metadata(self._state, {"issued": number})
        else:
            await self._call(
                "create the bookkeeping collection",
                # Replicated like the versions: the counter must outlive a node.
                self._client.create_collection(
                    collection_name=self._state,
                    vectors_config={},
                    replication_factor=self._replication_factor,
                    metadata={"issued": number},
                ),
            )
        return number

    async def upsert(self, version: str, points: Sequence[Point]) -> None:
        structs = [
            models.PointStruct(id=p.id, vector=forms.point_vector(p), payload=dict(p.payload))
            for p in points
        ]
        await self._call(
            "upsert",
            self._client.upsert(collection_name=version, points=structs, wait=True),
            version,
        )

    async def count(self, version: str, label: str | None = None) -> int:
        query_filter = None
        if label is not None:
            match = models.MatchValue(value=label)
            query_filter = models.Filter(must=[models.FieldCondition(key=LABEL_FIELD, match=match)])
        result = await self._call(
            "count",
            self._client.count(collection_name=version, count_filter=query_filter, exact=True),
            version,
        )
        return int(result.count)

    async def vectors(self, version: str, ids: Sequence[str]) -> dict[str, list[float]]:
        records = await self._call(
            "retrieve",
            self._client.retrieve(
                collection_name=version, ids=list(ids), with_payload=False, with_vectors=True
            ),
            version,
        )
        return {
            str(r.id): list(r.vector.get("", ()) if isinstance(r.vector, dict) else r.vector)
            for r in records
        }

    async def published(self, version: str) -> bool:
        # The live version counts even unmarked: publish marks it only after the alias
        # switch, and a mark lost then is written when the next publish replaces it.
        if (await self.metadata(version)).get("published_at"):
            return True
        return version == await self.current_version()

    async def metadata(self, version: str) -> dict[str, Any]:
        info = await self._call("get collection", self._client.get_collection(version), version)
        return dict(info.config.metadata or {})

    async def add_metadata(self, version: str, data: Mapping[str, Any]) -> None:
        # Qdrant merges the keys sent into the collection's metadata.
        await self._call(
            "update metadata",
            self._client.update_collection(collection_name=version, metadata=dict(data)),
            version,
        )

    async def publish(self, version: str) -> str | None:
        # The mark follows the switch: marked first, a switch that failed while the
        # store then stayed down (so the indexer could not drop it) left a version that
        # never served looking published, kept by retention and chosen by --rollback.
        previous = await self.current_version()
        # The version being replaced has served; make sure it says so (its own mark may
        # have been lost after its switch), or it would be removed as a draft.
        if (
            previous is not None
            and previous != version
            and not (await self.metadata(previous)).get("published_at")
        ):
            await self._mark_published(previous)
        operations: list[Any] = []
        if previous is not None:
            operations.append(
                models.DeleteAliasOperation(
                    delete_alias=models.DeleteAlias(alias_name=self._collection)
                )
            )
        operations.append(
            models.CreateAliasOperation(
                create_alias=models.CreateAlias(
                    collection_name=version, alias_name=self._collection
                )
            )
        )
        # One request: Qdrant applies alias changes atomically, so readers see
        # either the old version or the new one, never none.
        try:
            await self._call(
                "switch alias",
                self._client.update_collection_aliases(change_aliases_operations=operations),
                version,
            )
        except StoreUnavailable as failure:
            # A timeout says nothing of the outcome: a cluster commits alias changes
            # through consensus, which may finish after the client gave up. Reported as a
            # failure, an applied switch made the indexer drop its own live version
            # ("refusing to drop the published version"), hiding this error.
            applied = False
            with contextlib.suppress(StoreUnavailable):  # still down: report the switch
                applied = await self.current_version() == version
            if not applied:
                raise
            log.warning("the alias switch to %s was applied, though: %s", version, failure)
        try:
            await self._mark_published(version)
        except StoreUnavailable as exc:
            # It is live, and published() counts the live version; the next publish
            # writes the mark when it replaces it.
            log.warning("published %s, but could not mark it so yet: %s", version, exc)
        return previous if previous != version else None

    async def _mark_published(self, version: str) -> None:
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        await self.add_metadata(version, {"published_at": stamp})

    async def drop(self, version: str) -> None:
        if version == await self.current_version():
            raise IndexWriteError(f"refusing to drop the published version {version}")
        await self._call("delete collection", self._client.delete_collection(version), version)

    async def open(self, version: str) -> None:
        await self._call("get collection", self._client.get_collection(version), version)

    async def search(
        self, version: str, vectors: Sequence[SearchVector], k: int
    ) -> list[list[Hit]]:
        requests = [
            models.QueryRequest(
                query=forms.query(v),
                using=forms.using(v),
                limit=k,
                with_payload=True,
                params=forms.search_params(v, self._hnsw_ef),
            )
            for v in vectors
        ]
        responses = await self._call(
            "search",
            self._client.query_batch_points(
                collection_name=version, requests=requests, consistency=self._consistency
            ),
            version,
        )
        return [[hit_from_payload(p.id, p.score, p.payload) for p in r.points] for r in responses]

    async def search_fused(
        self,
        version: str,
        dense: Sequence[Sequence[float]],
        sparse: Sequence[SparseVector],
        *,
        limit: int,
        labels: Sequence[Sequence[str] | None],
    ) -> list[list[Candidate]]:
        if not dense:
            return []
        # 1. Candidates from both vectors, fused by rank (no vectors returned).
        fused = []
        for d, s, allowed in zip(dense, sparse, labels, strict=True):
            query_filter = forms.label_filter(allowed)
            prefetch = [
                models.Prefetch(
                    query=forms.query(d),
                    limit=limit,
                    filter=query_filter,
                    params=forms.search_params(d, self._hnsw_ef),
                ),
                models.Prefetch(
                    query=forms.query(s), using=LEXICAL, limit=limit, filter=query_filter
                ),
            ]
            fused.append(
                models.QueryRequest(
                    prefetch=prefetch,
                    query=models.RrfQuery(rrf=models.Rrf(k=RRF_K)),
                    limit=2 * limit,
                    with_payload=True,
                )
            )
        found = await self._call(
            "hybrid search",
            self._client.query_batch_points(
                collection_name=version, requests=fused, consistency=self._consistency
            ),
            version,
        )
        # 2. Both similarities of exactly those candidates, scored by Qdrant itself.
        scoring = []
        for d, s, response in zip(dense, sparse, found, strict=True):
            ids = models.Filter(
                must=[models.HasIdCondition(has_id=[p.id for p in response.points])]
            )
            n = max(len(response.points), 1)
            scoring.append(models.QueryRequest(query=forms.query(d), filter=ids, limit=n))
            scoring.append(
                models.QueryRequest(query=forms.query(s), using=LEXICAL, filter=ids, limit=n)
            )
        scores = await self._call(
            "hybrid scores",
            self._client.query_batch_points(
                collection_name=version, requests=scoring, consistency=self._consistency
            ),
            version,
        )
        return [
            fused_candidates(response.points, scores[2 * i].points, scores[2 * i + 1].points)
            for i, response in enumerate(found)
        ]

    async def search_groups(
        self,
        version: str,
        vectors: Sequence[SearchVector],
        *,
        groups: int,
        group_size: int,
        labels: Sequence[Sequence[str] | None],
    ) -> list[list[Group]]:
        # Qdrant's own grouping; it has no batch form, so the queries run concurrently.
        async def one(vector: SearchVector, allowed: Sequence[str] | None) -> list[Group]:
            result = await self._call(
                "search groups",
                self._client.query_points_groups(
                    collection_name=version,
                    group_by=LABEL_FIELD,
                    query=forms.query(vector),
                    using=forms.using(vector),
                    query_filter=forms.label_filter(allowed),
                    search_params=forms.search_params(vector, self._hnsw_ef),
                    limit=groups,
                    group_size=group_size,
                    with_payload=True,
                    consistency=self._consistency,
                ),
                version,
            )
            return [
                Group(
                    str(group.id),
                    tuple(hit_from_payload(p.id, p.score, p.payload) for p in group.hits),
                )
                for group in result.groups
            ]

        if not vectors:
            return []
        return list(
            await asyncio.gather(*(one(v, a) for v, a in zip(vectors, labels, strict=True)))
        )

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        # Creating a collection that exists fails, so the lock is a collection; its
        # heartbeat lets the next writer take over from one that was killed.
        if not await self._take_lock():
            raise IndexWriteError(
                f"another indexer is writing {self._collection} (the lock collection "
                f"{self._lock_name} exists); retry when it finishes (a killed writer's lock "
                f"expires {_LEASE_S:.0f} s after its last heartbeat)"
            )
        heartbeat = asyncio.create_task(self._heartbeat())
        try:
            yield
        finally:
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await heartbeat
            await self._call("release the lock", self._client.delete_collection(self._lock_name))

    async def _take_lock(self) -> bool:
        refusal: Exception | None = None
        for _ in range(2):
            try:
                await self._call(
                    "take the lock",
                    self._client.create_collection(
                        collection_name=self._lock_name,
                        vectors_config={},
                        metadata={"owner": uuid.uuid4().hex, "heartbeat": time.time()},
                    ),
                )
                return True
            except StoreUnavailable:
                raise
            except Exception as exc:  # exists (each transport words it differently), or not
                refusal = None
                try:
                    held = await self.metadata(self._lock_name)
                except VersionMissing:
                    refusal = exc  # released meanwhile, or refused for another reason
                    continue
                if time.time() - float(held.get("heartbeat", 0)) < _LEASE_S:
                    return False
                await self._call(
                    "remove an expired lock", self._client.delete_collection(self._lock_name)
                )
        if refusal is not None:
            # Refused twice with no lock there: not another writer, so not "retry later".
            raise IndexWriteError(
                f"Qdrant{self._where()} refused to create the lock collection "
                f"{self._lock_name}: {refusal}"
            ) from refusal
        return False

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(_HEARTBEAT_S)
            # A missed beat is retried at the next one; the run itself reports outages.
            with contextlib.suppress(StoreUnavailable):
                await self.add_metadata(self._lock_name, {"heartbeat": time.time()})

    async def close(self) -> None:
        await self._client.close()

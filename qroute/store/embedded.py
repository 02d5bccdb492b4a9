"""EmbeddedStore: Qdrant Edge (the Qdrant engine in-process), no server needed.

Chosen over qdrant-client's local mode by measurement (bench/RESULTS.md): the
same search is faster, and each version is its own
directory, so an indexer process can write a new version while a router process
serves the published one.

Layout under ``<location>/<collection>/``::

    CURRENT                 name of the published version (replaced atomically)
    ISSUED                  the highest version number ever created (replaced atomically),
                            so a dropped draft's name is never given to another version
    <collection>_v<N>/      one Qdrant Edge shard per version, plus
        qroute.json         the version's metadata
        .readers            a router holds a shared flock here while it has the version open

A version directory belongs to one writer; a reader opens only published versions.
A reader needs only read access: the store may be a read-only mount (it then takes no
reader lock, and nothing can remove the version under it either).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from qroute.atomicfile import replace_file
from qroute.errors import IndexCorrupt, IndexWriteError, StoreUnavailable, VersionMissing
from qroute.store import edge, sharing
from qroute.store.base import (
    Candidate,
    Group,
    Point,
    SearchVector,
    version_name,
    version_number,
)
from qroute.store.metadata import LABEL_FIELD, hit_from_payload
from qroute.types import Hit, SparseVector

__all__ = ["EmbeddedStore"]

log = logging.getLogger(__name__)

_META = "qroute.json"
_CURRENT = "CURRENT"
_ISSUED = "ISSUED"
_PUBLISHED = ".published"
# A writing shard keeps what it was sent in memory until it is closed; closing and
# reopening it this often keeps a million-row index under a few hundred MB of RSS
# (see bench/RESULTS.md, indexer) at no measurable cost.
_REOPEN_EVERY = 50_000


class EmbeddedStore:
    """A VectorStore on local disk. ``drain_s``: how long ``drop`` waits for readers
    of a superseded version to let go before leaving it for the retention of the next
    successful run to remove. ``hnsw_ef``: the HNSW beam of every dense search (None:
    Qdrant's default); sparse searches have no graph and ignore it."""

    def __init__(
        self,
        location: str | Path,
        collection: str,
        *,
        drain_s: float = 30.0,
        hnsw_ef: int | None = None,
    ) -> None:
        self._location = location
        self._hnsw_ef = hnsw_ef
        self._root = Path(location).expanduser() / collection
        self._collection = collection
        self._drain_s = drain_s
        self._writers: dict[str, Any] = {}
        self._unflushed: dict[str, int] = {}
        self._readers: dict[str, sharing.Reader] = {}
        self._lock = threading.Lock()
        self._loading = threading.Lock()
        self._make_root()

    def _make_root(self) -> None:
        """Create the collection's directory; StoreUnavailable naming store.location when
        it cannot be one (a file in the way, a read-only or virtual file system)."""
        try:
            self._root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            blocker = next(
                (p for p in (self._root, *self._root.parents) if p.exists() and not p.is_dir()),
                None,
            )
            why = (
                f"{blocker} is a file, not a directory"
                if blocker is not None
                else f"cannot create {self._root} ({exc.strerror})"
            )
            raise StoreUnavailable(
                f"store.location {str(self._location)!r}: {why}; set store.location "
                "(QROUTE_STORE__LOCATION) to a directory qroute may write, or to a Qdrant "
                "server's http(s):// URL"
            ) from None

    # -- pointer and listing -------------------------------------------------

    async def current_version(self) -> str | None:
        try:
            name = (self._root / _CURRENT).read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreUnavailable(f"cannot read {self._root / _CURRENT}: {exc}") from exc
        return name or None

    async def versions(self) -> list[str]:
        if not self._root.is_dir():
            return []
        found = [
            (number, path.name)
            for path in self._root.iterdir()
            if path.is_dir() and (number := version_number(self._collection, path.name)) is not None
        ]
        return [name for _, name in sorted(found)]

    # -- writing -------------------------------------------------------------

    async def create_version(
        self, dimension: int | None, metadata: Mapping[str, Any], *, sparse: bool = False
    ) -> str:
        self._make_root()
        name = version_name(self._collection, await self._issue())
        path = self._root / name
        path.mkdir()
        (path / _META).write_text(json.dumps(dict(metadata), ensure_ascii=False), encoding="utf-8")
        # Created by the writer so that a reader on a read-only mount can still lock it.
        (path / sharing.READERS).touch()
        shard = await asyncio.to_thread(edge.create_shard, path, dimension, sparse)
        self._writers[name] = shard
        return name

    async def _issue(self) -> int:
        """The next version number: above every version on disk, drafts included, and
        above every number issued before (a dropped draft's number is never reused, so
        a name always means one index)."""
        existing = [version_number(self._collection, v) or 0 for v in await self.versions()]
        current = await self.current_version()
        if current is not None:
            existing.append(version_number(self._collection, current) or 0)
        issued = self._root / _ISSUED
        try:
            existing.append(int(issued.read_text(encoding="utf-8").strip() or 0))
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            raise StoreUnavailable(
                f"cannot read {issued}: {exc}; it holds the highest version number issued "
                "(remove it only if no version was ever dropped)"
            ) from exc
        number = max(existing, default=0) + 1
        replace_file(issued, f"{number}\n")
        return number

    async def upsert(self, version: str, points: Sequence[Point]) -> None:
        from qdrant_edge import Point as EdgePoint
        from qdrant_edge import UpdateOperation

        shard = self._writers.get(version)
        if shard is None:
            raise IndexWriteError(f"version {version} is not open for writing in this process")
        operation = UpdateOperation.upsert_points(
            [
                EdgePoint(edge.point_key(p.id), edge.point_vector(p), {"row_id": p.id, **p.payload})
                for p in points
            ]
        )
        await asyncio.to_thread(shard.update, operation)
        written = self._unflushed.get(version, 0) + len(points)
        if written >= _REOPEN_EVERY:
            self._writers[version] = await asyncio.to_thread(self._reopen, shard, version)
            written = 0
        self._unflushed[version] = written

    def _reopen(self, shard: Any, version: str) -> Any:
        from qdrant_edge import EdgeShard

        shard.flush()
        shard.close()
        return EdgeShard.load(str(self._root / version))

    async def count(self, version: str, label: str | None = None) -> int:
        from qdrant_edge import CountRequest, FieldCondition, Filter, MatchValue

        query_filter = None
        if label is not None:
            query_filter = Filter(must=[FieldCondition(key=LABEL_FIELD, match=MatchValue(label))])
        request = CountRequest(exact=True, filter=query_filter)
        reader = await self._acquire(version)
        try:
            return int(await asyncio.to_thread(reader.shard.count, request))
        finally:
            await self._release(version, reader)

    async def vectors(self, version: str, ids: Sequence[str]) -> dict[str, list[float]]:
        keys = {edge.point_key(i): i for i in ids}
        # This release's versions hold each row under its point_key; older ones under the
        # row id itself (a UUID), which a live version being reused may still be.
        wanted = [*keys, *(i for i in ids if _is_uuid(i))]
        reader = await self._acquire(version)
        try:
            records = await asyncio.to_thread(reader.shard.retrieve, wanted, False, True)
        finally:
            await self._release(version, reader)
        return {
            keys[r.id] if type(r.id) is int else str(r.id): list(
                r.vector.get("", ()) if isinstance(r.vector, dict) else r.vector
            )
            for r in records
        }

    async def published(self, version: str) -> bool:
        return (self._root / version / _PUBLISHED).exists()

    async def metadata(self, version: str) -> dict[str, Any]:
        path = self._root / version / _META
        try:
            # Off the loop: a large version's lexicon and head make this file megabytes.
            data = await asyncio.to_thread(lambda: json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError as exc:
            raise VersionMissing(f"index version {version} does not exist in {self._root}") from exc
        except ValueError as exc:  # not JSON, or not UTF-8
            raise IndexCorrupt(
                f"{path} is damaged ({exc}): publish a new version (qroute index) or the "
                "previous one (qroute index --rollback)"
            ) from None
        if not isinstance(data, dict):
            raise IndexCorrupt(f"{path} does not hold a JSON object")
        return dict(data)

    async def add_metadata(self, version: str, data: Mapping[str, Any]) -> None:
        merged = {**await self.metadata(version), **data}
        replace_file(self._root / version / _META, json.dumps(merged, ensure_ascii=False))

    async def publish(self, version: str) -> str | None:
        shard = self._writers.pop(version, None)
        if shard is not None:
            # Qdrant Edge builds search indexes (HNSW for dense vectors past its indexing
            # threshold) only when asked; a version is read-only once published, so
            # this is the one time: without it a large version is searched by brute force.
            log.info("building the search indexes of %s", version)
            await asyncio.to_thread(shard.optimize)
            await asyncio.to_thread(shard.flush)
            await asyncio.to_thread(shard.close)
        if not (self._root / version).is_dir():
            raise VersionMissing(f"index version {version} does not exist in {self._root}")
        (self._root / version / _PUBLISHED).touch()
        previous = await self.current_version()
        replace_file(self._root / _CURRENT, version + "\n")
        return previous if previous != version else None

    async def drop(self, version: str) -> None:
        if version == await self.current_version():
            raise IndexWriteError(f"refusing to drop the published version {version}")
        shard = self._writers.pop(version, None)
        if shard is not None:
            await asyncio.to_thread(shard.close)
        # This store's own reader (an incremental run reads the live version's vectors,
        # which retention then drops when keep_versions is 1) would hold the version's
        # reader lock against itself: let it go now, or once its searches finish.
        with self._lock:
            own = self._readers.get(version)
            if own is not None:
                with own.guard:
                    own.retired = True
                    if own.active == 0:
                        del self._readers[version]
                    else:
                        own = None
        if own is not None:
            await asyncio.to_thread(own.close)
        path = self._root / version
        if not path.is_dir():
            return
        deadline = time.monotonic() + self._drain_s
        # The published mark goes first: a removal cut short (a kill, a full disk) then
        # leaves a draft, which the next run removes, not a published-looking half that
        # a rollback would publish and no router could open.
        while not sharing.try_remove(path, first=_PUBLISHED):
            if time.monotonic() >= deadline:
                log.warning(
                    "version %s is still open by a reader; a later run's retention will remove it",
                    version,
                )
                return
            await asyncio.sleep(0.1)

    # -- reading -------------------------------------------------------------

    async def _acquire(self, version: str) -> sharing.Reader:
        """The open reader of ``version`` (counted active until ``_release``), opening it
        off the event loop when it is not open: a shard load takes long for a large
        version. (Qdrant Edge holds the GIL while it loads, so the loop still pauses for
        the load itself; it no longer waits for anything else, such as a close.)"""
        writer = self._writers.get(version)
        if writer is not None:
            # The indexer checks its own unpublished version through its writer.
            return sharing.Reader(writer, None, owned=False)
        with self._lock:
            reader = self._readers.get(version)
            if reader is not None:
                with reader.guard:
                    reader.active += 1
                return reader
        return await asyncio.to_thread(self._load, version)

    def _load(self, version: str) -> sharing.Reader:
        from qdrant_edge import EdgeShard

        # One load at a time; the event loop only ever takes the short ``_lock``, which
        # is never held across a load or a close.
        with self._loading:
            with self._lock:
                reader = self._readers.get(version)
                if reader is not None:
                    with reader.guard:
                        reader.active += 1
                    return reader
            path = self._root / version
            if not (path / _META).is_file():
                raise VersionMissing(f"index version {version} does not exist in {self._root}")
            lock_file = sharing.reader_lock(path)
            try:
                shard = EdgeShard.load(str(path))
            except Exception as exc:
                if lock_file is not None:
                    lock_file.close()
                hint = ""
                if not os.access(path, os.W_OK):
                    hint = (
                        " (Qdrant Edge opens its segment files for writing: give the router "
                        "write access to the store, or serve it from a Qdrant server)"
                    )
                raise StoreUnavailable(f"cannot open index version {path}: {exc}{hint}") from exc
            reader = sharing.Reader(shard, lock_file, active=1)
            idle = []
            with self._lock:
                # A router only ever needs the newest version it was asked for:
                # older readers close once their in-flight searches finish.
                for name, old in list(self._readers.items()):
                    with old.guard:
                        old.retired = True
                        if old.active == 0:
                            idle.append(old)
                            del self._readers[name]
                self._readers[version] = reader
            for old in idle:
                old.close()
            return reader

    async def _release(self, version: str, reader: sharing.Reader) -> None:
        if not reader.owned:
            return
        with reader.guard:
            reader.active -= 1
            close = reader.retired and reader.active == 0
        if close:
            with self._lock:
                if self._readers.get(version) is reader:
                    del self._readers[version]
            await asyncio.to_thread(reader.close)

    async def open(self, version: str) -> None:
        reader = await self._acquire(version)
        await self._release(version, reader)

    async def search(
        self, version: str, vectors: Sequence[SearchVector], k: int
    ) -> list[list[Hit]]:
        from qdrant_edge import QueryBatchRequest, QueryRequest

        requests = [
            QueryRequest(
                limit=k,
                query=edge.query(v),
                with_payload=True,
                params=edge.search_params(v, self._hnsw_ef),
            )
            for v in vectors
        ]
        reader = await self._acquire(version)
        try:
            results = await asyncio.to_thread(reader.shard.query_batch, QueryBatchRequest(requests))
        finally:
            await self._release(version, reader)
        return [[hit_from_payload(p.id, p.score, p.payload) for p in points] for points in results]

    async def search_fused(
        self,
        version: str,
        dense: Sequence[Sequence[float]],
        sparse: Sequence[SparseVector],
        *,
        limit: int,
        labels: Sequence[Sequence[str] | None],
    ) -> list[list[Candidate]]:
        reader = await self._acquire(version)
        try:
            return await asyncio.to_thread(
                edge.fused, reader.shard, dense, sparse, limit, labels, self._hnsw_ef
            )
        finally:
            await self._release(version, reader)

    async def search_groups(
        self,
        version: str,
        vectors: Sequence[SearchVector],
        *,
        groups: int,
        group_size: int,
        labels: Sequence[Sequence[str] | None],
    ) -> list[list[Group]]:
        reader = await self._acquire(version)
        try:
            return await asyncio.to_thread(
                _grouped, reader, vectors, groups, group_size, labels, self._hnsw_ef
            )
        finally:
            await self._release(version, reader)

    @contextlib.asynccontextmanager
    async def exclusive(self) -> AsyncIterator[None]:
        self._make_root()
        with (self._root / ".indexer.lock").open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise IndexWriteError(
                    f"another indexer is writing {self._root}; retry when it finishes"
                ) from None
            # The kernel releases the lock when the process dies, even by kill -9.
            yield

    async def close(self) -> None:
        with self._lock:
            readers, self._readers = self._readers, {}
            writers, self._writers = self._writers, {}
        for reader in readers.values():
            await asyncio.to_thread(reader.close)
        for shard in writers.values():
            shard.close()


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _grouped(
    reader: sharing.Reader,
    vectors: Sequence[SearchVector],
    groups: int,
    group_size: int,
    labels: Sequence[Sequence[str] | None],
    hnsw_ef: int | None,
) -> list[list[Group]]:
    if not reader.owned:
        # A borrowed writer: the indexer's version is still changing, so its labels are
        # read with each search's payloads.
        return edge.grouped(reader.shard, vectors, groups, group_size, labels, hnsw_ef)
    # A version is read-only once published, so its labels can be read once: grouping
    # by them spares reading the payloads of every point a search returns (see
    # edge.grouped_by_map); the router's load probe reads them before the version serves.
    label_of, known = reader.labels(edge.version_labels)
    if vectors and all(isinstance(v, SparseVector) for v in vectors):
        return edge.grouped_by_map(
            reader.shard, vectors, groups, group_size, labels, label_of, known
        )
    return edge.grouped(reader.shard, vectors, groups, group_size, labels, hnsw_ef, label_of)

"""The published versions of a collection: list them, roll back, keep ``keep_versions``,
remove drafts. Every change here takes the indexer's lock (``VectorStore.exclusive``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from qroute.config import Settings
from qroute.errors import IndexWriteError, QrouteError
from qroute.store import VectorStore, open_store
from qroute.store.metadata import IndexMetadata

__all__ = ["VersionRow", "list_versions", "remove_drafts", "retain", "rollback"]

log = logging.getLogger(__name__)


async def remove_drafts(store: VectorStore) -> list[str]:
    """Drop versions that were never published: leftovers of killed or failed runs.
    The caller holds the lock."""
    current = await store.current_version()
    removed = []
    for version in await store.versions():
        if version != current and not await store.published(version):
            await store.drop(version)
            removed.append(version)
            log.info("removed unpublished draft %s", version)
    return removed


async def retain(store: VectorStore, keep: int) -> list[str]:
    """Drop the oldest published versions beyond ``keep`` (the live one counts). Run
    only after a successful publish, with the lock held: a failed run never removes a
    rollback target."""
    current = await store.current_version()
    published = [v for v in await store.versions() if await store.published(v)]
    older = [v for v in published if v != current]
    dropped = older[: max(len(older) - (keep - 1), 0)]
    for version in dropped:
        await store.drop(version)
    return dropped


async def rollback(settings: Settings, store: VectorStore | None = None) -> tuple[str, str]:
    """Point the published version back to the newest kept version older than it."""
    own_store = store is None
    store = store or open_store(settings.store)
    try:
        # The indexer's lock: a running indexer would otherwise publish over the
        # rollback, or drop its target by retention.
        async with store.exclusive():
            current = await store.current_version()
            if current is None:
                raise IndexWriteError("nothing is published: there is nothing to roll back")
            versions = await store.versions()
            older = [v for v in versions[: versions.index(current)] if await store.published(v)]
            if not older:
                raise IndexWriteError(
                    f"{current} is the oldest kept version: nothing to roll back to"
                )
            await store.publish(older[-1])
            return current, older[-1]
    finally:
        if own_store:
            await store.close()


@dataclass(frozen=True, slots=True)
class VersionRow:
    name: str
    current: bool
    published: bool
    points: int | None  # None for an unpublished draft (another run may be writing it)
    labels: int
    head: bool  # the version carries a linear head (index.head)
    encoder: str
    created_at: str


async def list_versions(settings: Settings, store: VectorStore | None = None) -> list[VersionRow]:
    """Every version of the collection, oldest first; a damaged one is listed with "?"."""
    own_store = store is None
    store = store or open_store(settings.store)
    try:
        current = await store.current_version()
        rows = []
        for version in await store.versions():
            published = await store.published(version)
            try:
                meta = IndexMetadata.from_json(await store.metadata(version), version)
            except QrouteError as exc:
                log.warning("%s", exc)
                meta = None
            rows.append(
                VersionRow(
                    name=version,
                    current=version == current,
                    published=published,
                    points=await store.count(version) if published else None,
                    labels=len(meta.labels) if meta else 0,
                    head=meta is not None and meta.head is not None,
                    encoder=(meta.encoder or meta.lexical or "?") if meta else "?",
                    created_at=(meta.created_at or "?") if meta else "?",
                )
            )
        return rows
    finally:
        if own_store:
            await store.close()

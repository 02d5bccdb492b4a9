"""The published versions of a collection: list them, roll back, keep ``keep_versions``,
remove drafts. Every change here takes the indexer's lock (``VectorStore.exclusive``)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from qroute.config import Settings
from qroute.embedding.dense import same_encoder
from qroute.errors import IndexWriteError, QrouteError
from qroute.store import VectorStore, open_store
from qroute.store.base import version_number
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


async def rollback(
    settings: Settings, store: VectorStore | None = None, *, replace_mode: bool = False
) -> tuple[str, str]:
    """Point the published version back to the newest kept version older than it.

    Refuses (IndexWriteError, nothing moved) a target the routers would not serve: one
    whose metadata or files cannot be read, or, unless ``replace_mode``, one built with
    other vectors than the live version (another encoder, other n-grams) or without the
    vectors ``retrieval.mode`` searches. A router refuses such a version only when it
    polls, keeps serving the old one, and one restarted then serves nothing."""
    own_store = store is None
    store = store or open_store(settings.store)
    try:
        # The indexer's lock: a running indexer would otherwise publish over the
        # rollback, or drop its target by retention.
        async with store.exclusive():
            current = await store.current_version()
            if current is None:
                raise IndexWriteError("nothing is published: there is nothing to roll back")
            collection = settings.store.collection
            number = version_number(collection, current)
            versions = await store.versions()
            # By number, not by position: the published version's own files may be gone
            # (removed by hand), which is when a rollback is needed most.
            older = [
                v
                for v in versions
                if number is not None
                and (version_number(collection, v) or 0) < number
                and await store.published(v)
            ]
            if not older:
                raise IndexWriteError(
                    f"{current} is the oldest kept version: nothing to roll back to"
                )
            target = older[-1]
            await _check_target(store, settings, current, target, replace_mode=replace_mode)
            await store.publish(target)
            return current, target
    finally:
        if own_store:
            await store.close()


async def _check_target(
    store: VectorStore, settings: Settings, live: str, target: str, *, replace_mode: bool
) -> None:
    """Raise IndexWriteError, naming both versions, when routers would refuse ``target``."""
    stays = f"the published version stays {live}"
    try:
        meta = IndexMetadata.from_json(await store.metadata(target), target)
        # Opens its files, as a router's load does: a damaged version fails here.
        await store.count(target)
    except QrouteError as exc:
        raise IndexWriteError(f"cannot roll back to {target}: {exc}; {stays}") from exc
    if replace_mode:
        return
    try:
        live_meta: IndexMetadata | None = IndexMetadata.from_json(await store.metadata(live), live)
    except QrouteError:
        # A live version that cannot be read is what the rollback is for: no routers
        # serve it to compare with.
        live_meta = None
    mode = settings.retrieval.mode
    needs = {"dense": ("dense",), "lexical": ("lexical",), "hybrid": ("dense", "lexical")}[mode]
    override = "restart the routers with its settings and pass --replace-mode to publish it anyway"
    for kind in needs:
        built = meta.encoder if kind == "dense" else meta.lexical
        if built is None:
            raise IndexWriteError(
                f"cannot roll back to {target}: {target} has no {kind} vectors "
                f"(a {meta.retrieval} index), and retrieval.mode {mode} searches them; "
                f"routers would refuse it; {stays} ({override})"
            )
        serving = None
        if live_meta is not None:
            serving = live_meta.encoder if kind == "dense" else live_meta.lexical
        if serving is None or same_encoder(built, serving) or same_encoder(serving, built):
            continue
        what = "encoder" if kind == "dense" else "n-grams"
        raise IndexWriteError(
            f"cannot roll back to {target}: it was built with {what} {built!r}, the "
            f"published {live} with {serving!r}; routers serving {live} would refuse "
            f"{target} (EncoderMismatch); {stays} ({override})"
        )


@dataclass(frozen=True, slots=True)
class VersionRow:
    name: str
    current: bool
    published: bool
    # None for an unpublished draft (another run may be writing it), or a version whose
    # files cannot be opened.
    points: int | None
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
        versions = await store.versions()
        if current is not None and current not in versions:
            # The pointer names a version whose files are gone: listed where it would
            # be, or the listing would show nothing published while routers fail.
            log.warning("the published version %s is missing from the store", current)
            collection = settings.store.collection
            versions = sorted(
                [*versions, current], key=lambda v: version_number(collection, v) or 0
            )
        rows = []
        for version in versions:
            try:
                published = await store.published(version)
            except QrouteError:
                published = False  # the missing published version, on a Qdrant server
            try:
                meta = IndexMetadata.from_json(await store.metadata(version), version)
            except QrouteError as exc:
                log.warning("%s", exc)
                meta = None
            points = None
            if published:
                try:
                    points = await store.count(version)
                except QrouteError as exc:
                    # One damaged version must not hide the others: the listing is how
                    # a rollback target is chosen.
                    log.warning("%s", exc)
            rows.append(
                VersionRow(
                    name=version,
                    current=version == current,
                    published=published,
                    points=points,
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

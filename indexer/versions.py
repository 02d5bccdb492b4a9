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

__all__ = [
    "VersionRow",
    "list_versions",
    "remove_drafts",
    "retain",
    "rollback",
    "rollback_chain",
]

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


async def rollback_chain(store: VectorStore, collection: str, current: str) -> list[str]:
    """``current``, then what each rollback from it would publish in turn: the kept
    version each one replaced when it was published (``replaces``), or, for a version
    that does not record it (or whose record is gone), the newest kept version numbered
    below it. A version rolled away from is in no chain once something replaces it."""
    published = [v for v in await store.versions() if await store.published(v)]
    chain = [current]
    while True:
        last = chain[-1]
        try:
            replaced = IndexMetadata.from_json(await store.metadata(last), last).replaces
        except QrouteError:
            # A version whose metadata cannot be read (or whose files are gone) is when a
            # rollback is needed most: step by number.
            replaced = None
        if replaced not in published or replaced in chain:
            number = version_number(collection, last)
            older = [
                v
                for v in published
                if number is not None
                and v not in chain
                and (version_number(collection, v) or 0) < number
            ]
            replaced = max(older, key=lambda v: version_number(collection, v) or 0, default=None)
        if replaced is None:
            return chain
        chain.append(replaced)


async def retain(store: VectorStore, collection: str, keep: int) -> list[str]:
    """Drop the published versions beyond ``keep`` (the live one counts), oldest first:
    the live version's rollback chain is kept before any other. Run only after a
    successful publish, with the lock held: a failed run never removes a rollback
    target."""
    current = await store.current_version()
    if current is None:
        return []
    kept = set((await rollback_chain(store, collection, current))[:keep])
    published = [v for v in await store.versions() if await store.published(v)]
    # A chain shorter than ``keep`` (versions indexed before ``replaces`` was recorded)
    # is filled with the newest others.
    others = [v for v in published if v not in kept]
    room = max(keep - len(kept), 0)
    kept.update(others[len(others) - room :] if room else ())
    dropped = [v for v in published if v not in kept]
    for version in dropped:
        await store.drop(version)
    return dropped


async def rollback(
    settings: Settings, store: VectorStore | None = None, *, replace_mode: bool = False
) -> tuple[str, str]:
    """Point the published version back to the one it replaced (``rollback_chain``).

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
            chain = await rollback_chain(store, settings.store.collection, current)
            if len(chain) < 2:
                raise IndexWriteError(
                    f"{current} is the oldest kept version: nothing to roll back to"
                )
            target = chain[1]
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
    # What ``rollback`` would publish now (``rollback_chain``).
    rollback_target: bool = False


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
        target = None
        if current is not None:
            chain = await rollback_chain(store, settings.store.collection, current)
            target = chain[1] if len(chain) > 1 else None
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
                    rollback_target=version == target,
                )
            )
        return rows
    finally:
        if own_store:
            await store.close()

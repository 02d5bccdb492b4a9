"""Following the published index version: what a version holds once loaded
(``IndexState``), and the checks a new version passes before it serves."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from qroute.config import RetrievalSettings
from qroute.embedding.lexical import Lexicon
from qroute.errors import IndexRejected
from qroute.routing.head import LinearHead
from qroute.routing.retrieval import Retriever
from qroute.store import VectorStore
from qroute.store.metadata import IndexMetadata

__all__ = ["IndexState", "follow_published", "load_version"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class IndexState:
    """The published index version this classifier searches, its labels, (lexical
    and hybrid modes) its document frequencies, and its linear head if it has one."""

    version: str
    labels: tuple[str, ...]
    lexicon: Lexicon | None = None
    head: LinearHead | None = None
    # Examples (table rows) the version holds, as its metadata records.
    rows: int = 0


async def follow_published(
    store: VectorStore,
    retriever: Retriever,
    retrieval: RetrievalSettings,
    current: IndexState | None,
) -> IndexState | None:
    """The state of the store's published version: ``current`` while it is still the one
    published, else the new version, opened and answering a probe search. Raises
    IndexRejected when the pointer disappeared or the version cannot be served, and
    EncoderMismatch for vectors this router cannot compare with its own."""
    version = await store.current_version()
    if version is None:
        if current is not None:
            raise IndexRejected(
                f"the store has no published index version any more (was its pointer "
                f"removed?); still serving {current.version}",
                "unpublished",
            )
        return None
    if current is not None and current.version == version:
        return current
    metadata = IndexMetadata.from_json(await store.metadata(version), version)
    # Raises EncoderMismatch for vectors this router cannot compare with its own.
    # Parsing a large version's lexicon and head takes a while: off the loop.
    state = await asyncio.to_thread(_state, retriever, version, metadata)
    try:
        await store.open(version)
        found = await retriever.search_groups(
            store,
            version,
            retriever.probe(state.lexicon),
            retrieval,
            groups=1,
            group_size=1,
            labels=[None],
        )
    except Exception as exc:
        raise IndexRejected(f"index version {version} cannot be served: {exc}", "load") from exc
    if metadata.rows > 0 and not any(group.hits for group in found[0]):
        raise IndexRejected(
            f"index version {version} cannot be served: a probe search found none of "
            f"its {metadata.rows} examples (damaged files?)",
            "probe",
        )
    log.info(
        "serving index version %s (%d labels%s)",
        version,
        len(state.labels),
        ", with a linear head" if state.head is not None else "",
    )
    return state


async def load_version(store: VectorStore, retriever: Retriever, version: str) -> IndexState:
    """The state of one given (kept) ``version``, opened on ``store``, published or not:
    what a pinned classifier (the shadow candidate's index) searches. Raises
    VersionMissing, EncoderMismatch."""
    metadata = IndexMetadata.from_json(await store.metadata(version), version)
    state = await asyncio.to_thread(_state, retriever, version, metadata)
    await store.open(version)
    return state


def _state(retriever: Retriever, version: str, metadata: IndexMetadata) -> IndexState:
    lexicon = retriever.check(version, metadata)
    head = LinearHead.from_metadata(metadata.head) if metadata.head is not None else None
    return IndexState(
        version=version,
        labels=metadata.labels,
        lexicon=lexicon,
        head=head,
        rows=metadata.rows,
    )

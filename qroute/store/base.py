"""The vector store interface both backends implement.

An index is a series of *versions* (one Qdrant collection or edge shard each) and one
published pointer (a Qdrant alias, or a pointer file for the embedded store). The
indexer writes a new version completely, then publishes it; readers search a named
version, so the version they report is the one that answered.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from qroute.store.metadata import hit_from_payload
from qroute.types import Group, Hit, SparseVector

__all__ = [
    "LEXICAL",
    "RRF_K",
    "Candidate",
    "Group",
    "Point",
    "SearchVector",
    "VectorStore",
    "fused_candidates",
    "version_name",
    "version_number",
]

# The named sparse vector (character n-grams, IDF modifier); the dense one is unnamed.
LEXICAL = "lexical"

# Reciprocal rank fusion's k, the same on both backends (their defaults differ).
RRF_K = 60

# A dense vector searches the dense (cosine) vectors, a SparseVector the lexical ones.
SearchVector = Sequence[float] | SparseVector


@dataclass(frozen=True, slots=True)
class Point:
    id: str
    vector: Sequence[float]  # empty in an index without dense vectors
    payload: Mapping[str, Any]
    sparse: SparseVector | None = None


@dataclass(frozen=True, slots=True)
class Candidate:
    """A hybrid search result, in fused order: the example (its ``similarity`` is the
    fused rank score, not a similarity) and its two real similarities to the query,
    scored by the store (lexical 0.0 when they share no term)."""

    hit: Hit
    dense: float
    lexical: float


def version_name(collection: str, number: int) -> str:
    return f"{collection}_v{number}"


def version_number(collection: str, name: str) -> int | None:
    """The number of a version name of ``collection``, or None for any other name."""
    prefix = f"{collection}_v"
    if name.startswith(prefix) and name[len(prefix) :].isdigit():
        return int(name[len(prefix) :])
    return None


def fused_candidates(
    points: Iterable[Any], dense: Iterable[Any], lexical: Iterable[Any]
) -> list[Candidate]:
    """Fused points (in fused order) joined with the same points scored by each vector
    (either backend's scored points: ``id``, ``score``, ``payload``). A point the lexical
    search did not return shares no term with the query: similarity 0."""
    by_dense = {p.id: p.score for p in dense}
    by_lexical = {p.id: p.score for p in lexical}
    return [
        Candidate(
            hit_from_payload(p.id, p.score, p.payload),
            float(by_dense.get(p.id, 0.0)),
            float(by_lexical.get(p.id, 0.0)),
        )
        for p in points
    ]


class VectorStore(Protocol):
    """Cosine-similarity store of labelled examples, versioned and published by pointer.

    Raises StoreUnavailable when the backend cannot be reached, VersionMissing when a
    named version does not exist.
    """

    async def current_version(self) -> str | None:
        """The published version, or None before the first publish."""
        ...

    async def versions(self) -> list[str]:
        """Every version of the collection, oldest first, published or not."""
        ...

    async def create_version(
        self, dimension: int | None, metadata: Mapping[str, Any], *, sparse: bool = False
    ) -> str:
        """Create an empty, unpublished version and return its name: dense vectors of
        ``dimension`` (None: none), and the ``LEXICAL`` sparse vectors (IDF modifier)
        when ``sparse``."""
        ...

    async def upsert(self, version: str, points: Sequence[Point]) -> None: ...

    async def count(self, version: str, label: str | None = None) -> int:
        """Points in ``version``, or only those of ``label``."""
        ...

    async def vectors(self, version: str, ids: Sequence[str]) -> dict[str, list[float]]:
        """The stored vectors of those ``ids`` that exist in ``version``."""
        ...

    async def published(self, version: str) -> bool:
        """Whether ``version`` was ever published (an unpublished one is a draft or
        the leftover of a crashed run)."""
        ...

    async def metadata(self, version: str) -> dict[str, Any]: ...

    async def add_metadata(self, version: str, data: Mapping[str, Any]) -> None:
        """Merge ``data`` into an unpublished version's metadata (what is known only
        after its points are written, such as its head)."""
        ...

    async def publish(self, version: str) -> str | None:
        """Atomically make ``version`` the published one (marking it published); returns
        the one it replaced. Also how a rollback points back to an earlier version."""
        ...

    async def drop(self, version: str) -> None:
        """Delete a version. Refuses to delete the published one."""
        ...

    async def open(self, version: str) -> None:
        """Get ``version`` ready for searching, and let go of any other version this
        store has open (a reader follows one published version at a time)."""
        ...

    async def search(
        self, version: str, vectors: Sequence[SearchVector], k: int
    ) -> list[list[Hit]]:
        """The ``k`` nearest examples of each vector, most similar first."""
        ...

    async def search_fused(
        self,
        version: str,
        dense: Sequence[Sequence[float]],
        sparse: Sequence[SparseVector],
        *,
        limit: int,
        labels: Sequence[Sequence[str] | None],
    ) -> list[list[Candidate]]:
        """For each query, the ``limit`` nearest examples by each vector, fused by
        Qdrant's reciprocal rank fusion (best first), each with both similarities."""
        ...

    async def search_groups(
        self,
        version: str,
        vectors: Sequence[SearchVector],
        *,
        groups: int,
        group_size: int,
        labels: Sequence[Sequence[str] | None],
    ) -> list[list[Group]]:
        """For each vector, the ``groups`` labels whose best example is nearest, each with
        its ``group_size`` nearest examples; groups ordered by their best similarity.
        ``labels[i]``, when not None, restricts vector i to those labels. A label with many
        near-duplicates fills one group, not the whole answer."""
        ...

    def exclusive(self) -> AbstractAsyncContextManager[None]:
        """Held by an indexer for its whole run: one writer per collection at a time."""
        ...

    async def close(self) -> None: ...

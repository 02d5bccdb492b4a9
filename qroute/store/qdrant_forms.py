"""qdrant-client's forms of qroute's points, query vectors and label filters (the server
store's; ``edge.py`` holds Qdrant Edge's)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qdrant_client import models
from qdrant_client.http.exceptions import UnexpectedResponse

from qroute.store.base import LEXICAL, Point, SearchVector
from qroute.store.metadata import LABEL_FIELD
from qroute.types import SparseVector

__all__ = ["is_not_found", "label_filter", "point_vector", "query", "search_params", "using"]


def point_vector(point: Point) -> Any:
    dense = [float(x) for x in point.vector]
    if point.sparse is None:
        return dense
    named: dict[str, Any] = {
        LEXICAL: models.SparseVector(
            indices=list(point.sparse.indices), values=list(point.sparse.values)
        )
    }
    if dense:
        named[""] = dense
    return named


def query(vector: SearchVector) -> Any:
    if isinstance(vector, SparseVector):
        return models.SparseVector(indices=list(vector.indices), values=list(vector.values))
    return [float(x) for x in vector]


def using(vector: SearchVector) -> str | None:
    return LEXICAL if isinstance(vector, SparseVector) else None


def search_params(vector: SearchVector, hnsw_ef: int | None) -> models.SearchParams | None:
    """The HNSW beam of a dense search (None: Qdrant's default); a sparse one has no graph."""
    if hnsw_ef is None or isinstance(vector, SparseVector):
        return None
    return models.SearchParams(hnsw_ef=hnsw_ef)


def label_filter(allowed: Sequence[str] | None) -> models.Filter | None:
    if allowed is None:
        return None
    match = models.MatchAny(any=list(allowed))
    return models.Filter(must=[models.FieldCondition(key=LABEL_FIELD, match=match)])


def is_not_found(exc: Exception) -> bool:
    """Whether a client error says the collection or alias does not exist (each
    transport words it differently)."""
    if isinstance(exc, UnexpectedResponse):
        return exc.status_code == 404
    text = str(exc).lower()
    return "not found" in text or "doesn't exist" in text or "not_found" in text

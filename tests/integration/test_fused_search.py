"""The embedded store's hybrid search fuses the two rankings itself and finds each
candidate's other similarity in the lexical page: the same candidates, fused scores and
similarities as Qdrant Edge's own fusion followed by scoring every candidate by id (what
it did before, two more searches per query), whether the page holds them or not."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qroute.config import LexicalSettings
from qroute.embedding.lexical import LexicalEncoder, Lexicon
from qroute.store import Point, edge
from qroute.store.base import RRF_K, Candidate
from qroute.store.embedded import EmbeddedStore
from qroute.table import row_id
from qroute.types import SparseVector

DIM = 8


def _qdrant_fused(
    shard: Any, dense: list[float], sparse: SparseVector, limit: int, allowed: list[str] | None
) -> tuple[dict[str, tuple[float, float, float]], bool]:
    """Qdrant Edge's fusion, then both similarities of its candidates scored by id: row id
    -> (fused score, dense, lexical); and whether each ranking is free of ties down to
    one past the cut (ties may come in either order at any page size, so only then are
    the ranks, and the fused scores, the same at every page size)."""
    from qdrant_edge import (
        Filter,
        Fusion,
        HasIdCondition,
        Prefetch,
        QueryBatchRequest,
        QueryRequest,
    )

    only = edge.query_filter(allowed, ())
    fusion = QueryRequest(
        limit=2 * limit,
        prefetches=[
            Prefetch(limit=limit, query=edge.query(dense), filter=only),
            Prefetch(limit=limit, query=edge.query(sparse), filter=only),
        ],
        query=Fusion.Rrf(k=RRF_K),  # type: ignore[arg-type]
        with_payload=True,
    )
    by_dense, by_lexical, points = shard.query_batch(
        QueryBatchRequest(
            [
                QueryRequest(limit=limit + 1, query=edge.query(dense), filter=only),
                QueryRequest(limit=limit + 1, query=edge.query(sparse), filter=only),
                fusion,
            ]
        )
    )
    untied = all(
        len({round(p.score, 6) for p in ranking}) == len(ranking)
        for ranking in (by_dense, by_lexical)
    )
    ids = Filter(must=[HasIdCondition({p.id for p in points})])
    scored_dense, scored_lexical = shard.query_batch(
        QueryBatchRequest(
            [
                QueryRequest(limit=len(points), query=edge.query(dense), filter=ids),
                QueryRequest(limit=len(points), query=edge.query(sparse), filter=ids),
            ]
        )
    )
    dense_of = {p.id: p.score for p in scored_dense}
    lexical_of = {p.id: p.score for p in scored_lexical}
    found = {
        p.payload["row_id"]: (p.score, dense_of.get(p.id, 0.0), lexical_of.get(p.id, 0.0))
        for p in points
    }
    return found, untied


@pytest.fixture
async def index(tmp_path: Path) -> AsyncIterator[tuple[EmbeddedStore, str, list[Any]]]:
    rng = random.Random(5)
    vectors = np.random.default_rng(5)
    words = ["".join(rng.choices("abcdefg", k=rng.randint(2, 5))) for _ in range(40)]
    rows = sorted(
        {(" ".join(rng.sample(words, rng.randint(2, 5))), f"l{i % 6}") for i in range(300)}
    )
    encoder = LexicalEncoder(LexicalSettings())
    lexicon = Lexicon.count(encoder.terms(text) for text, _ in rows)
    store = EmbeddedStore(tmp_path / "store", "fused")
    version = await store.create_version(DIM, {"labels": []}, sparse=True)
    await store.upsert(
        version,
        [
            Point(
                row_id(text, label),
                vectors.normal(size=DIM).tolist(),
                {"text": text, "label": label},
                sparse=lexicon.vector(encoder.terms(text)),
            )
            for text, label in rows
        ],
    )
    await store.publish(version)
    queries = [
        (
            vectors.normal(size=DIM).tolist(),
            lexicon.vector(encoder.terms(" ".join(rng.sample(words, 3)))),
        )
        for _ in range(20)
    ]
    yield store, version, queries
    await store.close()


def _same(got: list[Candidate], want: dict[str, tuple[float, float, float]]) -> None:
    assert {c.hit.row_id for c in got} == set(want)
    for candidate in got:
        fused, dense, lexical = want[candidate.hit.row_id]
        assert candidate.hit.similarity == pytest.approx(fused, abs=1e-6)
        assert candidate.dense == pytest.approx(dense, abs=1e-5)
        assert candidate.lexical == pytest.approx(lexical, abs=1e-5)


# A page of 256 holds every lexical match of this small version; one of 12 is full, so
# the dense candidates beyond it are scored by id.
@pytest.mark.parametrize("page", [edge.LEXICAL_PAGE, 12])
@pytest.mark.parametrize("allowed", [None, ["l1", "l3"]])
async def test_the_same_candidates_and_similarities_as_qdrants_fusion(
    index: tuple[EmbeddedStore, str, list[Any]],
    monkeypatch: pytest.MonkeyPatch,
    page: int,
    allowed: list[str] | None,
) -> None:
    store, version, queries = index
    monkeypatch.setattr(edge, "LEXICAL_PAGE", page)
    found = await store.search_fused(
        version,
        [d for d, _ in queries],
        [s for _, s in queries],
        limit=10,
        labels=[allowed] * len(queries),
    )
    compared = 0
    reader = await store._acquire(version)
    try:
        for (dense, sparse), got in zip(queries, found, strict=True):
            fused_scores = [c.hit.similarity for c in got]
            assert fused_scores == sorted(fused_scores, reverse=True)
            assert {c.hit.label for c in got} <= set(allowed or {c.hit.label for c in got})
            want, untied = _qdrant_fused(reader.shard, dense, sparse, 10, allowed)
            if untied:
                _same(got, want)
                compared += 1
    finally:
        await store._release(version, reader)
    assert compared >= len(queries) // 2

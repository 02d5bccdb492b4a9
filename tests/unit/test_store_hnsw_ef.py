"""store.hnsw_ef reaches every dense search of both stores, and no sparse one (a sparse
vector has no HNSW graph). The result of a small index is the same at any beam, so the
requests the stores build are recorded instead."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import qdrant_client
import qdrant_edge
from pydantic import ValidationError
from qdrant_client import AsyncQdrantClient

from qroute.config import Settings, StoreSettings
from qroute.store import Point, VectorStore, open_store
from qroute.types import SparseVector

DENSE = [1.0, 0.0, 0.0, 0.0]
SPARSE = SparseVector((1, 2), (0.5, 0.5))


def _ef(params: Any) -> int | None:
    return None if params is None else params.hnsw_ef


async def _version(store: VectorStore) -> str:
    version = await store.create_version(len(DENSE), {"labels": ["a"]}, sparse=True)
    point = Point(
        "00000000-0000-0000-0000-000000000001", DENSE, {"text": "t", "label": "a"}, SPARSE
    )
    await store.upsert(version, [point])
    await store.publish(version)
    await store.open(version)
    return version


async def test_embedded_store_sets_the_beam_of_dense_searches_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, list[int | None]] = {"QueryRequest": [], "Prefetch": []}
    for name in seen:
        real: Callable[..., Any] = getattr(qdrant_edge, name)

        def recording(*args: Any, _name: str = name, _real: Any = real, **kwargs: Any) -> Any:
            seen[_name].append(_ef(kwargs.get("params")))
            return _real(*args, **kwargs)

        monkeypatch.setattr(qdrant_edge, name, recording)
    store = open_store(StoreSettings(location=str(tmp_path / "store"), hnsw_ef=7))
    try:
        version = await _version(store)
        await store.search(version, [DENSE], k=1)
        await store.search_groups(version, [DENSE], groups=1, group_size=1, labels=[None])
        assert seen["QueryRequest"] and set(seen["QueryRequest"]) == {7}
        seen["QueryRequest"].clear()
        await store.search(version, [SPARSE], k=1)
        assert seen["QueryRequest"] == [None]
        seen["QueryRequest"].clear()
        await store.search_fused(version, [DENSE], [SPARSE], limit=1, labels=[None])
        # The dense candidates, the lexical ones, then any scored by id: dense ones only,
        # as the lexical page of this small version holds every lexical similarity.
        assert seen["QueryRequest"][:2] == [7, None]
        assert set(seen["QueryRequest"][2:]) <= {7}
    finally:
        await store.close()


# The in-memory client searches exhaustively and says the beam has no effect there.
@pytest.mark.filterwarnings("ignore:Local mode performs exact")
async def test_server_store_sets_the_beam_of_dense_searches_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: dict[str, list[dict[str, Any]]] = {}

    def client(**_: Any) -> AsyncQdrantClient:
        memory = AsyncQdrantClient(location=":memory:")
        for name in ("query_batch_points", "query_points_groups"):
            original: Callable[..., Any] = getattr(memory, name)

            def wrapper(*args: Any, _name: str = name, _f: Any = original, **kwargs: Any) -> Any:
                calls.setdefault(_name, []).append(kwargs)
                return _f(*args, **kwargs)

            setattr(memory, name, wrapper)
        return memory

    monkeypatch.setattr(qdrant_client, "AsyncQdrantClient", client)
    store = open_store(StoreSettings(location="http://qdrant:6333", hnsw_ef=7))
    try:
        version = await _version(store)
        await store.search(version, [DENSE, SPARSE], k=1)
        await store.search_groups(version, [DENSE], groups=1, group_size=1, labels=[None])
        await store.search_fused(version, [DENSE], [SPARSE], limit=1, labels=[None])
    finally:
        await store.close()
    searched, fused, _scoring = calls["query_batch_points"]
    assert [_ef(r.params) for r in searched["requests"]] == [7, None]
    assert [_ef(p.params) for p in fused["requests"][0].prefetch] == [7, None]
    (grouped,) = calls["query_points_groups"]
    assert _ef(grouped["search_params"]) == 7


def test_hnsw_ef_is_checked_at_load(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().store.hnsw_ef is None  # Qdrant's own default
    monkeypatch.setenv("QROUTE_STORE__HNSW_EF", "64")
    assert Settings().store.hnsw_ef == 64
    monkeypatch.setenv("QROUTE_STORE__HNSW_EF", "0")
    with pytest.raises(ValidationError, match="hnsw_ef"):
        Settings()

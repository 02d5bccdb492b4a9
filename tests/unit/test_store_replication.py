"""store.shard_number / replication_factor / write_consistency_factor reach Qdrant's
collection creation, and store.read_consistency every search. qdrant-client's in-memory
mode ignores both, so the calls the store makes are recorded instead."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import qdrant_client
from pydantic import ValidationError
from qdrant_client import AsyncQdrantClient, models

from qroute.config import Settings, StoreSettings
from qroute.store import Point, open_store
from qroute.types import SparseVector

DIM = 4


def _recording(client: AsyncQdrantClient, calls: dict[str, list[dict[str, Any]]]) -> None:
    """Record the keyword arguments of the client calls that carry the layout."""
    for name in ("create_collection", "query_batch_points", "query_points_groups"):
        original: Callable[..., Any] = getattr(client, name)

        def wrapper(*args: Any, _name: str = name, _f: Any = original, **kwargs: Any) -> Any:
            calls.setdefault(_name, []).append(kwargs)
            return _f(*args, **kwargs)

        setattr(client, name, wrapper)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[dict[str, Any]]]:
    """open_store on an http:// location builds its client through this in-memory one."""
    recorded: dict[str, list[dict[str, Any]]] = {}

    def client(**kwargs: Any) -> AsyncQdrantClient:
        memory = AsyncQdrantClient(location=":memory:")
        _recording(memory, recorded)
        return memory

    monkeypatch.setattr(qdrant_client, "AsyncQdrantClient", client)
    return recorded


async def _exercise(settings: StoreSettings) -> None:
    store = open_store(settings)
    try:
        version = await store.create_version(DIM, {"labels": ["a"]}, sparse=True)
        sparse = SparseVector((1, 2), (0.5, 0.5))
        await store.upsert(
            version,
            [
                Point(
                    "00000000-0000-0000-0000-000000000001",
                    [1.0, 0.0, 0.0, 0.0],
                    {"text": "t", "label": "a", "row_id": "r"},
                    sparse,
                )
            ],
        )
        await store.search(version, [[1.0, 0.0, 0.0, 0.0]], k=1)
        await store.search_groups(
            version, [[1.0, 0.0, 0.0, 0.0]], groups=1, group_size=1, labels=[None]
        )
        await store.search_fused(version, [[1.0, 0.0, 0.0, 0.0]], [sparse], limit=1, labels=[None])
    finally:
        await store.close()


async def test_layout_and_read_consistency_reach_qdrant(
    calls: dict[str, list[dict[str, Any]]],
) -> None:
    settings = StoreSettings(
        location="http://qdrant-1:6333",
        shard_number=6,
        replication_factor=2,
        write_consistency_factor=2,
        read_consistency="majority",
    )
    await _exercise(settings)
    (created,) = [c for c in calls["create_collection"] if c["collection_name"] == "qroute_v1"]
    assert (created["shard_number"], created["replication_factor"]) == (6, 2)
    assert created["write_consistency_factor"] == 2
    searches = calls["query_batch_points"] + calls["query_points_groups"]
    assert len(searches) == 4  # search, groups, and the two steps of a fused search
    assert {s["consistency"] for s in searches} == {models.ReadConsistencyType.MAJORITY}


async def test_defaults_leave_the_layout_to_qdrant(calls: dict[str, list[dict[str, Any]]]) -> None:
    await _exercise(StoreSettings(location="http://qdrant:6333"))
    (created,) = [c for c in calls["create_collection"] if c["collection_name"] == "qroute_v1"]
    assert created["shard_number"] is None and created["replication_factor"] is None
    assert created["write_consistency_factor"] is None
    assert {s["consistency"] for s in calls["query_batch_points"]} == {None}


def test_read_consistency_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QROUTE_STORE__READ_CONSISTENCY", "2")
    assert Settings().store.read_consistency == 2
    monkeypatch.setenv("QROUTE_STORE__READ_CONSISTENCY", "quorum")
    assert Settings().store.read_consistency == "quorum"
    monkeypatch.setenv("QROUTE_STORE__READ_CONSISTENCY", "most")
    with pytest.raises(ValidationError, match="read_consistency"):
        Settings()


def test_write_consistency_cannot_exceed_the_copies() -> None:
    with pytest.raises(ValidationError, match="cannot exceed replication_factor"):
        StoreSettings(replication_factor=2, write_consistency_factor=3)

"""The server store when a Qdrant call fails part-way: the alias switch that times out
after it was applied (a cluster commits alias changes through consensus, which can
outlast the client's deadline), a switch that fails while the store then stays down,
and a key Qdrant refuses. qdrant-client's in-memory mode stands in for the server; the
failures are injected into its calls."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import httpx
import pytest
from qdrant_client import AsyncQdrantClient
from qdrant_client.http.exceptions import UnexpectedResponse

from qroute.errors import StoreUnavailable
from qroute.store import Point
from qroute.store.server import ServerStore

DIM = 4
ENDPOINT = "qdrant:6334 (gRPC, store.grpc_port)"


def _rpc_error(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details=details)


def _rest_error(status: int, text: str) -> UnexpectedResponse:
    return UnexpectedResponse(
        status_code=status,
        reason_phrase=text,
        content=f'{{"status":{{"error":"{text}"}}}}'.encode(),
        headers=httpx.Headers(),
    )


def _points(n: int, seed: int) -> list[Point]:
    return [
        Point(
            str(uuid.uuid5(uuid.NAMESPACE_OID, f"{seed}-{i}")),
            [float(i + 1), float(seed), 1.0, 0.5],
            {"text": f"t{i}", "label": "a", "row_id": f"r{seed}-{i}"},
        )
        for i in range(n)
    ]


async def _store_with_live_version() -> tuple[AsyncQdrantClient, ServerStore, str, str]:
    """A store with v1 published and v2 written, ready to publish."""
    client = AsyncQdrantClient(location=":memory:")
    store = ServerStore(client, "faults", ENDPOINT)
    v1 = await store.create_version(DIM, {"labels": ["a"]})
    await store.upsert(v1, _points(3, 1))
    await store.publish(v1)
    v2 = await store.create_version(DIM, {"labels": ["a"]})
    await store.upsert(v2, _points(3, 2))
    return client, store, v1, v2


def _replace(
    client: AsyncQdrantClient, name: str, make: Callable[[Any], Any]
) -> Callable[[], None]:
    original = getattr(client, name)
    setattr(client, name, make(original))
    return lambda: setattr(client, name, original)


async def test_a_switch_applied_but_timed_out_is_a_publish() -> None:
    client, store, v1, v2 = await _store_with_live_version()

    def applied_then_deadline(original: Callable[..., Awaitable[Any]]) -> Any:
        async def call(**kwargs: Any) -> Any:
            await original(**kwargs)
            raise _rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")

        return call

    restore = _replace(client, "update_collection_aliases", applied_then_deadline)
    try:
        # Before: StoreUnavailable, and the indexer's cleanup then failed with
        # "refusing to drop the published version", though v2 was live.
        assert await store.publish(v2) == v1
    finally:
        restore()
    assert await store.current_version() == v2
    assert await store.published(v2)
    await store.close()


async def test_a_failed_switch_leaves_a_draft_even_when_the_store_then_goes_down() -> None:
    from indexer.versions import remove_drafts

    client, store, v1, v2 = await _store_with_live_version()

    def unavailable(original: Callable[..., Awaitable[Any]]) -> Any:
        async def call(*args: Any, **kwargs: Any) -> Any:
            raise _rpc_error(grpc.StatusCode.UNAVAILABLE, "connection reset")

        return call

    restore_switch = _replace(client, "update_collection_aliases", unavailable)
    with pytest.raises(StoreUnavailable, match="switch alias"):
        await store.publish(v2)
    # The indexer's cleanup (drop) cannot reach the store either.
    restore_aliases = _replace(client, "get_aliases", unavailable)
    with pytest.raises(StoreUnavailable):
        await store.drop(v2)
    restore_switch()
    restore_aliases()

    # Back up: v2 never served, so it is a draft, not a rollback target or a kept version.
    assert await store.current_version() == v1
    assert not await store.published(v2)
    assert await remove_drafts(store) == [v2]
    assert await store.versions() == [v1]
    assert await store.published(v1)
    await store.close()


async def test_a_failed_rollback_switch_keeps_its_target_published() -> None:
    client, store, v1, v2 = await _store_with_live_version()
    await store.publish(v2)

    def unavailable(original: Callable[..., Awaitable[Any]]) -> Any:
        async def call(**kwargs: Any) -> Any:
            raise _rpc_error(grpc.StatusCode.UNAVAILABLE, "connection reset")

        return call

    restore = _replace(client, "update_collection_aliases", unavailable)
    with pytest.raises(StoreUnavailable):
        await store.publish(v1)  # a rollback to v1
    restore()
    assert await store.current_version() == v2
    assert await store.published(v1) and await store.published(v2)
    await store.close()


@pytest.mark.parametrize(
    "refusal",
    [
        _rpc_error(grpc.StatusCode.PERMISSION_DENIED, "Write access denied"),
        _rest_error(403, "Forbidden: Write access denied"),
    ],
    ids=["grpc", "rest"],
)
async def test_a_read_only_key_is_not_reported_as_another_indexer(refusal: Exception) -> None:
    client = AsyncQdrantClient(location=":memory:")
    store = ServerStore(client, "faults", ENDPOINT)

    def refused(original: Callable[..., Awaitable[Any]]) -> Any:
        async def call(**kwargs: Any) -> Any:
            raise refusal

        return call

    _replace(client, "create_collection", refused)
    # Before: IndexWriteError "another indexer is writing ... (the lock collection exists)".
    with pytest.raises(StoreUnavailable, match=r"store\.api_key") as info:
        async with store.exclusive():
            pass
    assert ENDPOINT in str(info.value)
    assert "another indexer" not in str(info.value)
    await store.close()


@pytest.mark.parametrize(
    "refusal",
    [
        _rpc_error(grpc.StatusCode.UNAUTHENTICATED, "Invalid api-key"),
        _rest_error(401, "Unauthorized"),
    ],
    ids=["grpc", "rest"],
)
async def test_a_refused_key_names_the_setting(refusal: Exception) -> None:
    client = AsyncQdrantClient(location=":memory:")
    store = ServerStore(client, "faults", ENDPOINT)

    def refused(original: Callable[..., Awaitable[Any]]) -> Any:
        async def call(*args: Any, **kwargs: Any) -> Any:
            raise refusal

        return call

    _replace(client, "get_aliases", refused)
    # Before: the raw client error (a gRPC status or "Unexpected Response: 401").
    with pytest.raises(StoreUnavailable, match=r"QROUTE_STORE__API_KEY") as info:
        await store.current_version()
    assert ENDPOINT in str(info.value)
    await store.close()


async def test_a_mark_lost_after_the_switch_is_written_by_the_next_publish() -> None:
    from indexer.versions import remove_drafts

    client, store, v1, v2 = await _store_with_live_version()
    marks = 0

    def lost_once(original: Callable[..., Awaitable[Any]]) -> Any:
        async def call(**kwargs: Any) -> Any:
            nonlocal marks
            if "published_at" in (kwargs.get("metadata") or {}) and marks == 0:
                marks += 1
                raise _rpc_error(grpc.StatusCode.UNAVAILABLE, "connection reset")
            return await original(**kwargs)

        return call

    restore = _replace(client, "update_collection", lost_once)
    assert await store.publish(v2) == v1  # live: the lost mark is no failure
    restore()
    assert await store.current_version() == v2 and await store.published(v2)
    v3 = await store.create_version(DIM, {"labels": ["a"]})
    await store.upsert(v3, _points(3, 3))
    assert await store.publish(v3) == v2
    assert await store.published(v2)  # marked as it was replaced: a rollback target
    assert await remove_drafts(store) == []
    await store.close()

"""A caller whose deadline passed while queued no longer counts against
batching.max_queue (nor qroute_queue_depth): a live caller is not refused with
RESOURCE_EXHAUSTED by a queue of requests nobody waits for."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from tests.integration.conftest import ServeRouter
from tests.integration.test_serving import _gated, _hold_a_batch


async def test_callers_who_timed_out_leave_room_for_a_live_one(
    serve_router: ServeRouter,
) -> None:
    router, encoder = await _gated(serve_router, batching={"max_queue": 2})
    first = await _hold_a_batch(router, encoder)
    gone = [asyncio.create_task(router.classify(f"gone {i}", timeout=0.3)) for i in range(2)]
    for outcome in await asyncio.gather(*gone, return_exceptions=True):
        assert isinstance(outcome, grpc.aio.AioRpcError)
        assert outcome.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    async def nobody_waits() -> bool:
        return router.app.metrics.registry.get_sample_value("qroute_queue_depth") == 0

    await router.wait_for(nobody_waits, timeout=5)
    live = asyncio.create_task(router.classify("kospi index today", timeout=30))
    await router.wait_for(lambda: _is(router.app.batcher.waiting == 1), timeout=5)
    encoder.gate.set()
    await first
    try:
        assert (await live).label
    except grpc.aio.AioRpcError as exc:  # pragma: no cover - the fault this test is for
        pytest.fail(f"a live caller was refused: {exc.code()}: {exc.details()}")
    assert all(not any(t.startswith("gone") for t in call) for call in encoder.calls)


async def _is(value: bool) -> bool:
    return value

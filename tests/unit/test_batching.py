from __future__ import annotations

import asyncio

import pytest

from qroute.errors import Overloaded
from qroute.routing.batching import MicroBatcher


async def test_concurrent_items_form_one_batch_and_results_keep_their_order() -> None:
    batches: list[list[int]] = []
    release = asyncio.Event()

    async def handle(items: list[int]) -> list[int]:
        batches.append(items)
        await release.wait()
        return [i * 10 for i in items]

    batcher: MicroBatcher[int, int] = MicroBatcher(
        handle, max_batch_size=8, max_wait_s=0, max_queue=100
    )
    first = asyncio.create_task(batcher.submit([0]))
    await asyncio.sleep(0.05)
    rest = [asyncio.create_task(batcher.submit([i])) for i in range(1, 6)]
    await asyncio.sleep(0.05)
    release.set()
    assert await first == [0]
    assert [await task for task in rest] == [[10], [20], [30], [40], [50]]
    assert batches == [[0], [1, 2, 3, 4, 5]]
    await batcher.stop()


async def test_a_lone_request_is_not_held_for_the_batching_wait() -> None:
    async def handle(items: list[int]) -> list[int]:
        return items

    # A wait this long would time the test out if a lone request were held for it.
    batcher: MicroBatcher[int, int] = MicroBatcher(
        handle, max_batch_size=8, max_wait_s=600, max_queue=10
    )
    assert await asyncio.wait_for(batcher.submit([7]), timeout=30) == [7]
    await batcher.stop()


async def test_a_full_queue_refuses_instead_of_queueing() -> None:
    async def handle(items: list[int]) -> list[int]:
        await asyncio.sleep(3600)
        return items

    batcher: MicroBatcher[int, int] = MicroBatcher(
        handle, max_batch_size=1, max_wait_s=0, max_queue=2
    )
    busy = asyncio.create_task(batcher.submit([1]))
    await asyncio.sleep(0.05)
    queued = asyncio.create_task(batcher.submit([2, 3]))
    await asyncio.sleep(0.05)
    with pytest.raises(Overloaded, match="2 requests are already waiting"):
        await batcher.submit([4])
    busy.cancel()
    queued.cancel()
    await batcher.stop()

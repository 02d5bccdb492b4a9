"""Items whose caller has gone neither hold a place in the bounded queue nor take a slot
in a batch, and the rest of a request that already failed is not computed."""

from __future__ import annotations

import asyncio

import pytest

from qroute.routing.batching import MicroBatcher


class _Gated:
    """A handler that records each batch and holds it until ``release``."""

    def __init__(self, fail_first: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.fail_first = fail_first

    async def __call__(self, items: list[int]) -> list[int]:
        self.batches.append(items)
        await self.release.wait()
        if self.fail_first and len(self.batches) == 1:
            raise RuntimeError("the first batch fails")
        return items


async def test_items_of_a_caller_who_has_gone_leave_room_in_the_queue() -> None:
    handle = _Gated()
    batcher: MicroBatcher[int, int] = MicroBatcher(
        handle, max_batch_size=8, max_wait_s=0, max_queue=2
    )
    busy = asyncio.create_task(batcher.submit([0]))
    await asyncio.sleep(0.05)  # the worker holds [0]
    gone = asyncio.create_task(batcher.submit([1, 2]))
    await asyncio.sleep(0.05)
    assert batcher.waiting == 2
    gone.cancel()
    await asyncio.sleep(0.05)
    # Nobody waits for 1 and 2 any more: the queue has room for a live caller.
    assert batcher.waiting == 0
    live = asyncio.create_task(batcher.submit([3, 4]))
    await asyncio.sleep(0.05)
    assert batcher.waiting == 2
    handle.release.set()
    assert await busy == [0]
    assert await live == [3, 4]
    assert handle.batches == [[0], [3, 4]]
    await batcher.stop()


async def test_items_of_a_caller_who_has_gone_take_no_slot_in_a_batch() -> None:
    handle = _Gated()
    batcher: MicroBatcher[int, int] = MicroBatcher(
        handle, max_batch_size=2, max_wait_s=0, max_queue=100
    )
    busy = asyncio.create_task(batcher.submit([0]))
    await asyncio.sleep(0.05)
    gone = asyncio.create_task(batcher.submit([1, 2, 3]))
    live = asyncio.create_task(batcher.submit([5, 6]))
    await asyncio.sleep(0.05)
    gone.cancel()
    handle.release.set()
    assert await busy == [0]
    assert await live == [5, 6]
    # One full batch of live items, not two batches padded by the gone ones.
    assert handle.batches == [[0], [5, 6]]
    await batcher.stop()


async def test_the_rest_of_a_failed_request_is_not_computed() -> None:
    handle = _Gated(fail_first=True)
    batcher: MicroBatcher[int, int] = MicroBatcher(
        handle, max_batch_size=2, max_wait_s=0, max_queue=100
    )
    request = asyncio.create_task(batcher.submit([1, 2, 3, 4, 5, 6]))
    await asyncio.sleep(0.05)
    handle.release.set()
    with pytest.raises(RuntimeError, match="the first batch fails"):
        await request
    await asyncio.sleep(0.05)
    assert batcher.waiting == 0
    assert await batcher.submit([7]) == [7]
    # 3..6 belonged to a request that had already failed: never handed to the model.
    assert handle.batches == [[1, 2], [7]]
    await batcher.stop()

"""Faults of the micro-batcher and the result cache: a batch that fails in an unexpected
way fails only its own callers and the batcher keeps serving; stopping it answers every
caller still waiting; a caller who goes away takes no one else's answer; an answer
computed on a version the cache has left is not kept.

A caller that would hang forever is caught by ``_HANG_S``: the tests wait on events and
futures, and the timeout only turns a hang into a failure."""

from __future__ import annotations

import asyncio
import logging

import pytest

from qroute.errors import NotReady
from qroute.routing.batching import MicroBatcher
from qroute.routing.cache import ResultCache
from qroute.types import Decision, Prediction, Query, StageTime, Thresholds

# Far longer than any answer here takes: only a caller that nobody answers reaches it.
_HANG_S = 10


async def _echo(items: list[int]) -> list[int]:
    return items


async def _until(condition: object) -> None:
    """Yield to the loop until ``condition()`` holds (no wall-clock wait)."""
    assert callable(condition)
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the batcher never got there")


async def _answered(batcher: MicroBatcher[int, int], items: list[int]) -> list[int]:
    return await asyncio.wait_for(batcher.submit(items), _HANG_S)


async def test_a_batch_size_hook_that_raises_neither_fails_nor_stalls_requests(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def on_batch(size: int) -> None:
        raise RuntimeError("metrics backend broke")

    batcher: MicroBatcher[int, int] = MicroBatcher(
        _echo, max_batch_size=8, max_wait_s=0, max_queue=10, on_batch=on_batch
    )
    with caplog.at_level(logging.ERROR, logger="qroute.routing.batching"):
        assert await _answered(batcher, [1, 2]) == [1, 2]
        assert await _answered(batcher, [3]) == [3]
    assert "metrics backend broke" in caplog.text
    await batcher.stop()


async def test_a_timing_hook_that_raises_neither_fails_nor_stalls_requests() -> None:
    def observe(timing: StageTime) -> None:
        raise RuntimeError("tracer broke")

    batcher: MicroBatcher[int, int] = MicroBatcher(
        _echo, max_batch_size=8, max_wait_s=0, max_queue=10, observe=observe
    )
    assert await _answered(batcher, [1]) == [1]
    assert await _answered(batcher, [2]) == [2]
    await batcher.stop()


async def test_a_handler_returning_too_few_results_fails_its_batch_and_serving_goes_on() -> None:
    calls = 0

    async def short(items: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        return items[:-1] if calls == 1 else items

    batcher: MicroBatcher[int, int] = MicroBatcher(
        short, max_batch_size=8, max_wait_s=0, max_queue=10
    )
    # Both items in one batch: one answer would be missing.
    with pytest.raises(RuntimeError, match="returned 1 results for 2 items"):
        await _answered(batcher, [1, 2])
    assert await _answered(batcher, [3, 4]) == [3, 4]
    await batcher.stop()


async def test_a_handler_whose_work_is_cancelled_under_it_fails_its_batch_only() -> None:
    # What a model call does when the model thread shuts down under it: the batch's
    # own await raises CancelledError although nobody cancelled the batcher.
    started = asyncio.Event()
    work: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    calls = 0

    async def handle(items: list[int]) -> list[int]:
        nonlocal calls
        calls += 1
        if calls == 1:
            started.set()
            await work
        return items

    batcher: MicroBatcher[int, int] = MicroBatcher(
        handle, max_batch_size=8, max_wait_s=0, max_queue=10
    )
    first = asyncio.create_task(batcher.submit([1]))
    await started.wait()
    work.cancel()
    # A clear error for this caller (UNAVAILABLE over gRPC), not a CancelledError that
    # reads as if the caller itself had hung up.
    with pytest.raises(NotReady, match="cancelled"):
        await asyncio.wait_for(first, _HANG_S)
    assert await _answered(batcher, [2]) == [2]
    await batcher.stop()


async def test_stop_answers_the_running_batch_and_the_queued_callers() -> None:
    started = asyncio.Event()
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def handle(items: list[int]) -> list[int]:
        started.set()
        await never
        return items

    batcher: MicroBatcher[int, int] = MicroBatcher(
        handle, max_batch_size=1, max_wait_s=0, max_queue=10
    )
    running = asyncio.create_task(batcher.submit([1]))
    await started.wait()
    queued = asyncio.create_task(batcher.submit([2, 3]))
    await _until(lambda: batcher.waiting == 2)
    await batcher.stop()
    for caller in (running, queued):
        with pytest.raises(NotReady, match="shutting down"):
            await asyncio.wait_for(caller, _HANG_S)
    assert batcher.waiting == 0


async def test_stop_answers_the_callers_of_a_batch_still_being_gathered() -> None:
    # A long batching wait: the worker holds two items and waits for a third.
    batcher: MicroBatcher[int, int] = MicroBatcher(
        _echo, max_batch_size=3, max_wait_s=600, max_queue=10
    )
    callers = [asyncio.create_task(batcher.submit([i])) for i in range(2)]
    await _until(lambda: batcher.waiting == 2)
    await _until(lambda: batcher.waiting == 0)  # both taken, the worker waits for more
    await batcher.stop()
    for caller in callers:
        with pytest.raises(NotReady, match="shutting down"):
            await asyncio.wait_for(caller, _HANG_S)


async def test_a_caller_who_goes_away_mid_batch_takes_no_one_elses_answer() -> None:
    batches: list[list[int]] = []
    started = [asyncio.Event(), asyncio.Event()]
    release = [asyncio.Event(), asyncio.Event()]

    async def handle(items: list[int]) -> list[int]:
        n = len(batches)
        batches.append(items)
        started[n].set()
        await release[n].wait()
        return [i * 10 for i in items]

    batcher: MicroBatcher[int, int] = MicroBatcher(
        handle, max_batch_size=8, max_wait_s=0, max_queue=100
    )
    busy = asyncio.create_task(batcher.submit([0]))
    await started[0].wait()
    first = asyncio.create_task(batcher.submit([1, 2]))
    gone = asyncio.create_task(batcher.submit([3]))
    last = asyncio.create_task(batcher.submit([4]))
    await _until(lambda: batcher.waiting == 4)
    release[0].set()
    assert await asyncio.wait_for(busy, _HANG_S) == [0]
    # The next batch holds all three callers' items; the middle one hangs up during it.
    await started[1].wait()
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    release[1].set()
    assert await asyncio.wait_for(first, _HANG_S) == [10, 20]
    assert await asyncio.wait_for(last, _HANG_S) == [40]
    assert batches == [[0], [1, 2, 3, 4]]
    await batcher.stop()


def _prediction(config: str, index: str, label: str) -> Prediction:
    return Prediction(
        label=label,
        confidence=0.9,
        decision=Decision.KNN,
        reason="kNN",
        index_version=index,
        config_version=config,
        thresholds=Thresholds(0.5, 0.1, 1, 0.5),
    )


def test_an_answer_computed_on_the_version_the_cache_left_is_not_kept() -> None:
    cache = ResultCache(8)
    query = Query("kospi index today")
    cache.enter(("c1", "v1"))
    assert cache.get(query) is None  # a miss: computed on v1 while ...
    cache.enter(("c1", "v2"))  # ... another request already serves the new version
    cache.put(query, _prediction("c1", "v1", "finance"))
    assert cache.get(query) is None
    cache.put(query, _prediction("c1", "v2", "movie"))
    found = cache.get(query)
    assert found is not None and found.label == "movie"
    cache.enter(("c2", "v2"))  # a config reload
    assert cache.get(query) is None and len(cache) == 0

"""MicroBatcher: gathers concurrently submitted items into batches for one handler call.

One worker task owns the queue. It takes everything queued, up to ``max_batch_size``,
waiting at most ``max_wait_s`` for more, and hands the batch to ``handle``. While a batch
runs, new items queue up and form the next batch, so the batch size follows the load
with no artificial delay (``max_wait_s`` can be 0). The queue is bounded: past
``max_queue`` waiting items a submit fails at once with Overloaded instead of adding
latency for everyone. Items whose caller has gone (cancelled) are skipped, and items
whose deadline has passed fail with DeadlineExceeded without being computed.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from qroute.errors import DeadlineExceeded, Overloaded
from qroute.types import Observe, Stage, StageTime

__all__ = ["MicroBatcher", "batch_contexts"]

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

# The contexts of the submitters whose items the worker is handling now.
_SERVING: contextvars.ContextVar[tuple[contextvars.Context, ...]] = contextvars.ContextVar(
    "qroute_batch_contexts", default=()
)


def batch_contexts() -> tuple[contextvars.Context, ...]:
    """The ``contextvars`` contexts of the ``submit`` calls whose items are being handled
    (one per call, however many items it submitted), for code called back from inside the
    batch (the timing hook), so that a tracer can attach a stage to each request it
    served. Empty outside a batch."""
    return _SERVING.get()


@dataclass(slots=True)
class _Pending(Generic[T, R]):
    item: T
    future: asyncio.Future[R]
    deadline: float | None
    context: contextvars.Context
    queued_at: float  # time.perf_counter()
    queued_ns: int  # time.time_ns()


class MicroBatcher(Generic[T, R]):
    def __init__(
        self,
        handle: Callable[[list[T]], Awaitable[list[R]]],
        *,
        max_batch_size: int,
        max_wait_s: float,
        max_queue: int,
        on_batch: Callable[[int], None] | None = None,
        observe: Observe | None = None,
    ) -> None:
        self._handle = handle
        self._max_batch_size = max_batch_size
        self._max_wait_s = max_wait_s
        self._queue: asyncio.Queue[_Pending[T, R]] = asyncio.Queue(maxsize=max_queue)
        self._on_batch = on_batch
        self._observe = observe
        self._worker: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        """Items queued and not yet taken into a batch."""
        return self._queue.qsize()

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.create_task(self._run(), name="qroute-batcher")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None

    async def submit(self, items: Sequence[T], deadline: float | None = None) -> list[R]:
        """Results for ``items``, in order. ``deadline`` is in ``loop.time()`` seconds.
        Raises Overloaded when the queue cannot take all of them."""
        self.start()
        if self._queue.maxsize - self._queue.qsize() < len(items):
            raise Overloaded(
                f"the router is overloaded: {self._queue.qsize()} texts are already waiting "
                f"and this request adds {len(items)}, over the queue's "
                f"{self._queue.maxsize} (batching.max_queue); retry later"
            )
        loop = asyncio.get_running_loop()
        context, queued_at, queued_ns = (
            contextvars.copy_context(),
            time.perf_counter(),
            time.time_ns(),
        )
        pending = [
            _Pending(item, loop.create_future(), deadline, context, queued_at, queued_ns)
            for item in items
        ]
        for entry in pending:
            self._queue.put_nowait(entry)
        return list(await asyncio.gather(*(p.future for p in pending)))

    async def _next_batch(self) -> list[_Pending[T, R]]:
        batch = [await self._queue.get()]
        loop = asyncio.get_running_loop()
        until = loop.time() + self._max_wait_s
        while len(batch) < self._max_batch_size:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
                continue
            remaining = until - loop.time()
            # Waiting pays only under concurrent load (several items were already
            # queued): a lone request is never held back.
            if remaining <= 0 or len(batch) == 1:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            now = loop.time()
            live = []
            for entry in batch:
                if entry.future.done():  # the caller went away
                    continue
                if entry.deadline is not None and entry.deadline <= now:
                    entry.future.set_exception(DeadlineExceeded("deadline passed while queued"))
                    continue
                live.append(entry)
            if not live:
                continue
            if self._on_batch is not None:
                self._on_batch(len(live))
            self._observe_waits(live)
            # One context per submit call, not per item: the items of one ClassifyBatch
            # share theirs, and a stage of the batch is one span under that call, not one
            # per text (contexts are unhashable: by identity, in order).
            _SERVING.set(tuple({id(entry.context): entry.context for entry in live}.values()))
            try:
                results = await self._handle([entry.item for entry in live])
            except asyncio.CancelledError:
                for entry in live:
                    entry.future.cancel()
                raise
            except Exception as exc:
                for entry in live:
                    if not entry.future.done():
                        entry.future.set_exception(exc)
                continue
            finally:
                _SERVING.set(())
            for entry, result in zip(live, results, strict=True):
                if not entry.future.done():
                    entry.future.set_result(result)

    def _observe_waits(self, live: list[_Pending[T, R]]) -> None:
        if self._observe is None:
            return
        now = time.perf_counter()
        for entry in live:
            _SERVING.set((entry.context,))
            self._observe(StageTime(Stage.QUEUE_WAIT, entry.queued_ns, now - entry.queued_at))
        _SERVING.set(())

"""MicroBatcher: gathers concurrently submitted items into batches for one handler call.

One worker task owns the queue. It takes everything queued, up to ``max_batch_size``,
waiting at most ``max_wait_s`` for more, and hands the batch to ``handle``. While a batch
runs, new items queue up and form the next batch, so the batch size follows the load
with no artificial delay (``max_wait_s`` can be 0). The queue is bounded: past
``max_queue`` waiting items a submit fails at once with Overloaded instead of adding
latency for everyone. Items whose caller has gone (cancelled, or its request already
failed) are skipped: they neither count against ``max_queue`` nor take a place in a
batch. Items whose deadline has passed fail with DeadlineExceeded without being computed.

A batch that fails fails its own callers only (with the handler's error, or a
RuntimeError for a fault of the batcher's own), and the worker goes on with the next
batch; a hook that raises is logged and does not fail the batch. ``stop`` answers every
caller still waiting with NotReady.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from qroute.errors import DeadlineExceeded, NotReady, Overloaded
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
    # Counted in ``MicroBatcher.waiting``: queued, not yet taken, and its caller still
    # waits for it.
    waiting: bool = True
    # Every entry of the same submit call (this one included): once one fails, the
    # call has failed, and nobody waits for the others.
    siblings: list[_Pending[T, R]] = field(default_factory=list)


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
        # The bound is on the items someone still waits for (``_waiting``), not on the
        # queue's length: a caller who has gone leaves its entries behind until the worker
        # reaches them, and they must not refuse live callers meanwhile.
        self._max_queue = max_queue
        self._waiting = 0
        self._queue: asyncio.Queue[_Pending[T, R]] = asyncio.Queue()
        self._on_batch = on_batch
        self._observe = observe
        self._worker: asyncio.Task[None] | None = None

    @property
    def waiting(self) -> int:
        """Items queued, not yet taken into a batch, whose caller still waits."""
        return self._waiting

    def start(self) -> None:
        if self._worker is None:
            self._worker = asyncio.create_task(self._run(), name="qroute-batcher")

    async def stop(self) -> None:
        """Stop the worker. Every caller still waiting, in the batch it was running or
        in the queue, fails with NotReady: nothing would ever answer it otherwise."""
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
            self._worker = None
        while not self._queue.empty():
            entry = self._queue.get_nowait()
            if entry.waiting:
                self._release(entry)
                if not entry.future.done():
                    entry.future.set_exception(_stopping())

    async def submit(self, items: Sequence[T], deadline: float | None = None) -> list[R]:
        """Results for ``items``, in order. ``deadline`` is in ``loop.time()`` seconds.
        Raises Overloaded when the queue cannot take all of them."""
        self.start()
        if self._max_queue - self._waiting < len(items):
            raise Overloaded(
                f"the router is overloaded: {self._waiting} texts are already waiting "
                f"and this request adds {len(items)}, over the queue's "
                f"{self._max_queue} (batching.max_queue); retry later"
            )
        if self._queue.qsize() - self._waiting > self._max_queue:
            self._compact()
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
            entry.siblings = pending
            self._queue.put_nowait(entry)
        self._waiting += len(pending)
        try:
            return list(await asyncio.gather(*(p.future for p in pending)))
        except asyncio.CancelledError:
            # The caller went away (gather has cancelled every item): its items no
            # longer count as waiting, and the worker skips them.
            self._drop(pending)
            raise

    def _drop(self, entries: Sequence[_Pending[T, R]]) -> None:
        """Nobody waits for those of ``entries`` still queued any more."""
        for entry in entries:
            if entry.waiting:
                self._release(entry)
                entry.future.cancel()

    def _fail(self, entry: _Pending[T, R], exc: BaseException) -> None:
        """Fail ``entry``, and with it its submit call: the call's items still queued
        are never computed. (Its caller sees ``exc``: gather reports the first item to
        finish, and the cancelled ones finish after it.)"""
        entry.future.set_exception(exc)
        self._drop(entry.siblings)

    def _release(self, entry: _Pending[T, R]) -> None:
        """``entry`` no longer counts as waiting (taken into a batch, or its caller has
        gone)."""
        if entry.waiting:
            entry.waiting = False
            self._waiting -= 1

    def _compact(self) -> None:
        """Drop the entries nobody waits for, so that callers who keep going away while a
        long batch runs cannot grow the queue without bound."""
        kept = []
        while not self._queue.empty():
            entry = self._queue.get_nowait()
            if entry.waiting:
                kept.append(entry)
        for entry in kept:
            self._queue.put_nowait(entry)

    async def _take(self, timeout: float | None) -> _Pending[T, R] | None:
        """The next entry someone waits for (skipping the others), or None when none
        came within ``timeout`` seconds (None: wait as long as it takes)."""
        loop = asyncio.get_running_loop()
        until = None if timeout is None else loop.time() + timeout
        while True:
            if not self._queue.empty():
                entry = self._queue.get_nowait()
            elif until is None:
                entry = await self._queue.get()
            else:
                remaining = until - loop.time()
                if remaining <= 0:
                    return None
                try:
                    entry = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    return None
            if not entry.waiting:
                continue
            self._release(entry)
            if not entry.future.done():  # else its caller went away
                return entry

    async def _next_batch(self, batch: list[_Pending[T, R]]) -> None:
        """Fill ``batch`` (the caller's, so that whatever it holds when this is
        cancelled is still answered)."""
        first = await self._take(None)
        assert first is not None
        batch.append(first)
        loop = asyncio.get_running_loop()
        until = loop.time() + self._max_wait_s
        while len(batch) < self._max_batch_size:
            if self._waiting:
                entry = await self._take(0)
            else:
                remaining = until - loop.time()
                # Waiting pays only under concurrent load (several items were already
                # queued): a lone request is never held back.
                if remaining <= 0 or len(batch) == 1:
                    break
                entry = await self._take(remaining)
            if entry is None:
                break
            batch.append(entry)

    async def _run(self) -> None:
        while True:
            # Taken from the queue: from here on only this loop can answer them.
            batch: list[_Pending[T, R]] = []
            try:
                await self._next_batch(batch)
                await self._serve(batch)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():  # stop(), or the loop closing
                    self._fail_all(batch, _stopping())
                    raise
                # An await inside the handler was cancelled under it (the model thread
                # shut down), not this worker: only this batch is lost.
                self._fail_all(
                    batch,
                    NotReady(
                        "the batch was cancelled before it finished (the router is "
                        "shutting down or closed its models); retry"
                    ),
                )
            except Exception as exc:
                # A bug past the handler's own errors: those callers get it (INTERNAL
                # over gRPC) and the next batch is served as usual.
                log.exception("a batch of %d items failed", len(batch))
                self._fail_all(batch, exc)
            finally:
                _SERVING.set(())

    async def _serve(self, batch: list[_Pending[T, R]]) -> None:
        now = asyncio.get_running_loop().time()
        live = []
        for entry in batch:
            if entry.future.done():  # the caller went away
                continue
            if entry.deadline is not None and entry.deadline <= now:
                self._fail(entry, DeadlineExceeded("deadline passed while queued"))
                continue
            live.append(entry)
        if not live:
            return
        if self._on_batch is not None:
            try:
                self._on_batch(len(live))
            except Exception:
                # A metrics hook's fault must not refuse traffic.
                log.exception("the batch-size hook (on_batch) raised; serving the batch anyway")
        self._observe_waits(live)
        # One context per submit call, not per item: the items of one ClassifyBatch
        # share theirs, and a stage of the batch is one span under that call, not one
        # per text (contexts are unhashable: by identity, in order).
        _SERVING.set(tuple({id(entry.context): entry.context for entry in live}.values()))
        try:
            results = await self._handle([entry.item for entry in live])
        except Exception as exc:
            self._fail_all(live, exc)
            return
        finally:
            _SERVING.set(())
        if len(results) != len(live):
            # Checked before any is delivered: zipped, the callers past the shorter
            # list would never be answered.
            raise RuntimeError(
                f"the batch handler returned {len(results)} results for {len(live)} items"
            )
        for entry, result in zip(live, results, strict=True):
            if not entry.future.done():
                entry.future.set_result(result)

    def _fail_all(self, entries: Sequence[_Pending[T, R]], exc: BaseException) -> None:
        """Fail those of ``entries`` (taken into a batch) still unanswered."""
        for entry in entries:
            if not entry.future.done():
                self._fail(entry, exc)

    def _observe_waits(self, live: list[_Pending[T, R]]) -> None:
        if self._observe is None:
            return
        now = time.perf_counter()
        try:
            for entry in live:
                _SERVING.set((entry.context,))
                self._observe(StageTime(Stage.QUEUE_WAIT, entry.queued_ns, now - entry.queued_at))
        except Exception:
            # A metrics or tracing hook's fault must not refuse traffic.
            log.exception("the timing hook (observe) raised; serving the batch anyway")
        finally:
            _SERVING.set(())


def _stopping() -> NotReady:
    return NotReady("the router is shutting down; retry on another replica or once it is back")

"""The last step of a graceful stop: callers wait on this router, not race gRPC's stop.

gRPC's own server stop cancels every call that reaches the server after the stop began,
and every call it had received but not yet handed to a handler: the caller sees
CANCELLED, not UNAVAILABLE (grpc/grpc#41785, still open in grpcio 1.85). A caller that
retries a refused call after a short pause keeps such calls on the way for as long as the
process listens, so refusing them faster only moves the race.

``Drain`` closes it from the server side. While it holds, each new call waits in the
interceptor (gRPC has handed it over, so its stop waits for it instead of cancelling it)
until ``release``. Callers that wait on an answer send nothing new; once no call arrived
for a quiet spell, nothing is on the way that the stop could cancel. The app then starts
gRPC's stop (listener closed, GOAWAY sent on every connection) and only after that
releases the held calls, which are answered as usual (UNAVAILABLE while stopping); a
caller's retry then goes to a new connection, which is refused (UNAVAILABLE).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

if TYPE_CHECKING:
    Handler = grpc.RpcMethodHandler[Any, Any]

__all__ = ["Drain"]


class Drain(grpc.aio.ServerInterceptor):
    """Outermost server interceptor: passes calls through until ``hold_until_quiet``."""

    def __init__(self) -> None:
        self._holding = False
        self._released = asyncio.Event()
        self._last_arrival = 0.0
        self.held = 0

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        if self._holding and not self._released.is_set():
            self._last_arrival = time.monotonic()
            self.held += 1
            await self._released.wait()
        return await continuation(details)

    async def hold_until_quiet(self, quiet_s: float, limit_s: float) -> bool:
        """Hold every new call from now on; return once none arrived for ``quiet_s``
        (True), or after ``limit_s`` when callers never pause (False)."""
        self._holding = True
        start = self._last_arrival = time.monotonic()
        while True:
            now = time.monotonic()
            if now - self._last_arrival >= quiet_s:
                return True
            if now - start >= limit_s:
                return False
            await asyncio.sleep(min(quiet_s - (now - self._last_arrival), start + limit_s - now))

    def release(self) -> None:
        """Let every held call (and any later one) through to its handler."""
        self._released.set()

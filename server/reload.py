"""Watch the config file; validate a changed file and hand it over, or keep the old one.

Polling the file's content (not inotify) also catches the symlink swaps with which
Kubernetes updates a mounted ConfigMap.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from qroute.config import Settings, load_settings
from qroute.errors import ConfigError

__all__ = ["ConfigWatcher"]

log = logging.getLogger(__name__)


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


# The longest wait before a valid config whose apply failed is tried again.
RETRY_MAX_S = 60.0


class ConfigWatcher:
    """Calls ``apply`` with the new Settings when ``path`` changes to a valid config;
    calls ``rejected`` with the reason when it changes to an invalid one. A valid config
    whose ``apply`` failed (an NLI model switched on whose directory is not mounted yet)
    is tried again, at doubling intervals up to ``RETRY_MAX_S``, until it applies or the
    file changes: it is what the operator asked for, and the cause may pass."""

    def __init__(
        self,
        path: Path,
        interval_s: Callable[[], float],
        apply: Callable[[Settings], Awaitable[None]],
        rejected: Callable[[str], None],
    ) -> None:
        self._path = path
        self._interval_s = interval_s
        self._apply = apply
        self._rejected = rejected
        self._seen = _digest(path)
        # Failed applies of the file seen, and when (loop time) to try it again.
        self._failures = 0
        self._retry_at: float | None = None

    async def check(self) -> None:
        digest = _digest(self._path)
        now = asyncio.get_running_loop().time()
        if digest == self._seen and (self._retry_at is None or now < self._retry_at):
            return
        if digest != self._seen:
            self._seen, self._failures, self._retry_at = digest, 0, None
        try:
            settings = await asyncio.to_thread(load_settings, self._path)
        except ConfigError as exc:
            self._retry_at = None  # only the file changing can fix it
            log.error("config reload rejected, the previous config keeps serving: %s", exc)
            self._rejected(str(exc))
            return
        try:
            await self._apply(settings)
        except Exception:
            self._failures += 1
            wait = min(RETRY_MAX_S, self._interval_s() * 2**self._failures)
            self._retry_at = now + wait
            log.warning("config reload failed; trying the same file again in %.0f s", wait)
            raise
        self._failures, self._retry_at = 0, None

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s())
            try:
                await self.check()
            except Exception:
                log.exception("config reload failed; the previous config keeps serving")
                self._rejected("internal error")

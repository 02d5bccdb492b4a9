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


class ConfigWatcher:
    """Calls ``apply`` with the new Settings when ``path`` changes to a valid config;
    calls ``rejected`` with the reason when it changes to an invalid one."""

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

    async def check(self) -> None:
        digest = _digest(self._path)
        if digest == self._seen:
            return
        self._seen = digest
        try:
            settings = await asyncio.to_thread(load_settings, self._path)
        except ConfigError as exc:
            log.error("config reload rejected, the previous config keeps serving: %s", exc)
            self._rejected(str(exc))
            return
        await self._apply(settings)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s())
            try:
                await self.check()
            except Exception:
                log.exception("config reload failed; the previous config keeps serving")
                self._rejected("internal error")

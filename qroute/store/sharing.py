"""How the processes sharing an embedded store share a version directory: a router
holds a shared flock on ``<version>/.readers`` while it has the version open, and a
writer removes a version only when it can take that lock exclusively. The kernel drops
a lock with its process, even one killed by kill -9."""

from __future__ import annotations

import fcntl
import logging
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, TypeVar, cast

__all__ = ["READERS", "Reader", "reader_lock", "try_remove"]

log = logging.getLogger(__name__)

READERS = ".readers"


T = TypeVar("T")


@dataclass
class Reader:
    shard: Any
    # The shared flock on the version's .readers file; None where the store is
    # read-only (no lock can be taken there, and no writer can remove the version).
    lock_file: TextIO | None
    owned: bool = True  # False: the shard is this store's own writer, borrowed
    active: int = 0
    retired: bool = False
    guard: threading.Lock = field(default_factory=threading.Lock)
    # Every point's label by id, read once on the first grouped sparse search.
    _labels: Any = None
    _labels_lock: threading.Lock = field(default_factory=threading.Lock)

    def labels(self, read: Callable[[Any], T]) -> T:
        """The version's labels (by point id), ``read(shard)`` the first time (blocking)."""
        with self._labels_lock:
            if self._labels is None:
                self._labels = read(self.shard)
            return cast(T, self._labels)

    def close(self) -> None:
        if self.owned:
            self.shard.close()
            if self.lock_file is not None:
                self.lock_file.close()  # releases the shared flock


def reader_lock(path: Path) -> TextIO | None:
    """A shared flock on ``path``/.readers, which tells a writer's ``try_remove`` that
    the version is in use. Opened read-only (flock needs no write access), so a router
    can serve from a read-only store; None where the file is missing and cannot be
    created there, since then no writer can remove the version either."""
    for mode in ("r", "a"):  # "a": a version written before writers created the file
        try:
            handle = (path / READERS).open(mode, encoding="utf-8")
        except FileNotFoundError:
            continue
        except OSError as exc:  # read-only mount, no permission
            log.info("reading %s without a reader lock: %s", path, exc)
            return None
        fcntl.flock(handle, fcntl.LOCK_SH)
        return handle
    return None


def try_remove(path: Path, *, first: str | None = None) -> bool:
    """Remove a version directory unless a reader holds it open; the file ``first``
    before anything else, so that a removal cut short never leaves it beside a half."""
    try:
        handle = (path / READERS).open("a")
    except FileNotFoundError:
        handle = None
    try:
        if handle is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
        if first is not None:
            (path / first).unlink(missing_ok=True)
        shutil.rmtree(path, ignore_errors=True)
        return True
    finally:
        if handle is not None:
            handle.close()

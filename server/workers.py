"""Several router processes on one port: ``server.workers``.

Python runs one model call at a time per process (the GIL and one model thread), so a
router uses one core for its models. With ``server.workers`` > 1 the supervisor (this
module, the process ``qroute serve`` started) forks that many workers, each a whole
router (``RouterApp``: its own models with one intra-op thread, batcher, result cache and
metrics endpoint), all listening on ``server.bind`` through SO_REUSEPORT: the kernel
spreads incoming connections over them. This is the one place SO_REUSEPORT is set; a
single router refuses a port that is taken (see ``RouterApp``).

Health: each worker writes whether it serves into a shared array, and reports SERVING
only while every slot says so, so whichever worker a health check reaches answers for
the whole router. A worker that exits on its own (a crash, a failed start) is not
restarted: the supervisor stops the others (gracefully) and exits non-zero, for the
orchestrator to restart the whole router. SIGTERM or SIGINT to the supervisor is passed
to every worker, which drains as a single router does; the supervisor exits 0 once all
have exited 0.
"""

from __future__ import annotations

import asyncio
import ctypes
import io
import logging
import multiprocessing
import os
import signal
import socket
import sys
from collections.abc import Sequence
from multiprocessing.connection import wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import Any

from qroute.config import Settings
from qroute.errors import BindError, ConfigError, QrouteError

__all__ = ["Readiness", "limit_intra_op_threads", "metrics_port_of", "supervise"]

log = logging.getLogger(__name__)


class Readiness:
    """Which workers serve now: one byte per worker in memory shared by all of them."""

    def __init__(self, slots: Any, index: int) -> None:
        self._slots = slots
        self.index = index

    @classmethod
    def single(cls) -> Readiness:
        """One router on its own: only its own state counts."""
        return cls(bytearray(1), 0)

    @property
    def count(self) -> int:
        return len(self._slots)

    def set(self, serving: bool) -> None:
        self._slots[self.index] = 1 if serving else 0

    def all_serving(self) -> bool:
        return all(self._slots)


def limit_intra_op_threads(threads: int) -> None:
    """Apply ``server.intra_op_threads`` to this process (0: leave the libraries'
    defaults): torch now if it is loaded, and through the OpenMP/MKL variables for
    whatever starts its thread pool later."""
    if not threads:
        return
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


def _split(bind: str, setting: str) -> tuple[str, int]:
    host, _, port = bind.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        number = -1
    if bind.startswith("unix:") or not host or not 0 <= number <= 65535:
        raise ConfigError(
            f"{setting}: server.workers > 1 shares one TCP port between the workers; "
            f"{bind!r} is not HOST:PORT (use a TCP address, or server.workers: 1)"
        )
    return host, number


def _reserve(bind: str) -> tuple[socket.socket, str]:
    """The address every worker binds (the port picked now when ``bind`` asks for any),
    and a socket holding it for the router's life. Raises BindError when something else
    listens there: workers must not silently share a port with another router."""
    host, port = _split(bind, "server.bind")
    bare = host.strip("[]")
    family = socket.AF_INET6 if ":" in bare else socket.AF_INET
    try:
        # Without SO_REUSEPORT: fails when anything listens on the port, SO_REUSEPORT or not.
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((bare, port))
            port = int(probe.getsockname()[1])
        holder = socket.socket(family, socket.SOCK_STREAM)
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind((bare, port))
    except OSError as exc:
        raise BindError(
            f"cannot bind the router to {bind!r} (server.bind, QROUTE_SERVER__BIND): "
            f"{exc.strerror}; use HOST:PORT with a local address and a free port (another "
            "router may be listening on it)"
        ) from None
    return holder, f"{host}:{port}"


def metrics_port_of(settings: Settings, index: int) -> int | None:
    """Worker ``index``'s metrics port: server.metrics_port + index (0: any free port,
    None: off), so that every worker has its own /metrics endpoint."""
    port = settings.server.metrics_port
    return port + index if port else port


class _OneWrite(logging.Formatter):
    """The line's terminator inside the formatted record: the handler writes the record
    and its terminator in two writes, between which another worker could write."""

    def __init__(self, inner: logging.Formatter | None, terminator: str) -> None:
        super().__init__()
        self._inner = inner or logging.Formatter()
        self._terminator = terminator

    def format(self, record: logging.LogRecord) -> str:
        return self._inner.format(record) + self._terminator


def _end_with(parent: int) -> None:
    """SIGTERM this process when the supervisor dies (killed, it cannot stop us): a
    worker never outlives its router, holding the port."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux
        return
    if os.getppid() != parent:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


_PR_SET_PDEATHSIG = 1


def _worker(
    index: int,
    settings: Settings,
    config_path: Path | None,
    address: str,
    slots: Any,
    parent: int,
) -> None:
    # The supervisor's handlers were inherited; the worker's own loop installs its own.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)
    _end_with(parent)
    # Every worker writes to the same stderr: one write per log line (atomic on a pipe),
    # never a line split across two writes with another worker's in between.
    if isinstance(sys.stderr, io.TextIOWrapper):
        sys.stderr.reconfigure(write_through=True)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and handler.terminator:
            handler.setFormatter(_OneWrite(handler.formatter, handler.terminator))
            handler.terminator = ""
    from .app import serve

    try:
        asyncio.run(
            serve(
                settings,
                config_path,
                bind=address,
                readiness=Readiness(slots, index),
            )
        )
    except (QrouteError, OSError) as exc:
        print(f"qroute: worker {index}: {exc}", file=sys.stderr, flush=True)
        sys.exit(2)


def supervise(settings: Settings, config_path: Path | None = None) -> int:
    """Run ``server.worker_count`` workers until SIGTERM/SIGINT; the exit code."""
    count = settings.server.worker_count
    holder, address = _reserve(settings.server.bind)
    context = multiprocessing.get_context("fork")
    slots = context.RawArray("b", count)
    workers: list[BaseProcess] = []
    stopping: list[int] = []

    def on_signal(sig: int, frame: FrameType | None) -> None:
        if not stopping:
            log.info("%s: stopping %d workers", signal.Signals(sig).name, len(workers))
        stopping.append(sig)
        _signal_all(workers)

    try:
        for index in range(count):
            worker = context.Process(
                target=_worker,
                args=(index, settings, config_path, address, slots, os.getpid()),
                name=f"qroute-worker-{index}",
            )
            worker.start()
            workers.append(worker)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, on_signal)
        log.info(
            "supervising %d workers on %s (pids %s, metrics ports %s)",
            count,
            address,
            ", ".join(str(w.pid) for w in workers),
            ", ".join(str(metrics_port_of(settings, i)) for i in range(count)),
        )
        return _watch(workers, slots, stopping)
    finally:
        _signal_all(workers)
        for started in workers:
            started.join()
        holder.close()


def _signal_all(workers: Sequence[BaseProcess]) -> None:
    for worker in workers:
        if worker.is_alive() and worker.pid is not None:
            os.kill(worker.pid, signal.SIGTERM)


def _watch(workers: list[BaseProcess], slots: Any, stopping: list[int]) -> int:
    running = {worker.sentinel: (index, worker) for index, worker in enumerate(workers)}
    failed = 0
    while running:
        for sentinel in wait(list(running), timeout=1.0):
            assert isinstance(sentinel, int)
            index, worker = running.pop(sentinel)
            worker.join()
            slots[index] = 0
            code = worker.exitcode or 0
            if code == 0 and stopping:
                continue
            failed = failed or (code if code > 0 else 1)
            if not stopping:
                log.error(
                    "worker %d (pid %s) exited with %s: stopping the others, the router "
                    "exits non-zero (workers are not restarted one by one)",
                    index,
                    worker.pid,
                    f"code {code}" if code >= 0 else signal.Signals(-code).name,
                )
                stopping.append(signal.SIGTERM)
                _signal_all(workers)
    return failed

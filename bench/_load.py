"""What the serving benchmarks share: a free local port for a `qroute serve` process,
the process with a pool of connections to it, waiting until it answers, and the
closed-loop load generator."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import grpc

from qroute.v1 import router_pb2 as pb
from qroute.v1 import router_pb2_grpc


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def until_classifying(stub: router_pb2_grpc.RouterServiceStub, tries: int = 600) -> None:
    """Wait until the router answers a Classify (models loaded, an index served)."""
    for _ in range(tries):
        try:
            await stub.Classify(pb.ClassifyRequest(text="warm up"), timeout=5)
            return
        except grpc.aio.AioRpcError:
            await asyncio.sleep(0.2)
    raise RuntimeError("the router did not start answering")


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of process ``pid`` and all its descendants so far, from
    /proc (Linux)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            # Fields after the parenthesised name: utime and stime are the 12th and 13th.
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue  # it exited meanwhile
    return total


class Served:
    """A `qroute serve` process with ``workers`` and a pool of connections to it: one per
    channel, so that SO_REUSEPORT spreads them over the workers (one channel would reach
    one worker only). ``env``: more of the router's environment (settings)."""

    def __init__(
        self,
        config: Path,
        port: int,
        workers: int,
        connections: int = 8,
        env: Mapping[str, str] | None = None,
    ) -> None:
        environment = {
            **os.environ,
            **(env or {}),
            "QROUTE_CONFIG": str(config),
            "QROUTE_SERVER__WORKERS": str(workers),
        }
        self.process = subprocess.Popen(
            [sys.executable, "-m", "qroute", "serve"],
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        options = [("grpc.use_local_subchannel_pool", 1)]
        self.channels = [
            grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options)
            for _ in range(connections)
        ]
        self.stubs = [router_pb2_grpc.RouterServiceStub(c) for c in self.channels]

    async def ready(self) -> None:
        for stub in self.stubs:
            await until_classifying(stub, tries=900)

    async def config_version(self) -> str:
        info = await self.stubs[0].GetIndexInfo(pb.GetIndexInfoRequest(), timeout=5)
        return str(info.config_version)

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close()
        self.process.terminate()
        self.process.wait(timeout=60)


async def throughput(
    stubs: router_pb2_grpc.RouterServiceStub | Sequence[router_pb2_grpc.RouterServiceStub],
    queries: list[str],
    concurrency: int,
) -> float:
    """Requests per second: ``concurrency`` callers (spread over ``stubs`` in turn), each
    sending its next query as soon as the last one is answered, until ``queries`` are all
    sent, in order."""
    pool = list(stubs) if isinstance(stubs, Sequence) else [stubs]
    pending = list(reversed(queries))

    async def caller(i: int) -> None:
        stub = pool[i % len(pool)]
        while pending:
            await stub.Classify(pb.ClassifyRequest(text=pending.pop()), timeout=120)

    start = time.perf_counter()
    await asyncio.gather(*(caller(i) for i in range(concurrency)))
    return len(queries) / (time.perf_counter() - start)

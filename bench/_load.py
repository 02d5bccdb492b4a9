"""What the serving benchmarks share: a free local port for a `qroute serve` process,
waiting until it answers, and the closed-loop load generator."""

from __future__ import annotations

import asyncio
import socket
import time

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


async def throughput(
    stub: router_pb2_grpc.RouterServiceStub, queries: list[str], concurrency: int
) -> float:
    """Requests per second: ``concurrency`` callers, each sending its next query as soon
    as the last one is answered, until ``queries`` are all sent."""
    pending = list(queries)

    async def caller() -> None:
        while pending:
            await stub.Classify(pb.ClassifyRequest(text=pending.pop()), timeout=120)

    start = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return len(queries) / (time.perf_counter() - start)

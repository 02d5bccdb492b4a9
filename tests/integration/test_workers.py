"""server.workers: several router processes on one port (SO_REUSEPORT) under a
supervisor. Every worker answers; health says SERVING only while every worker serves;
SIGTERM to the supervisor drains every worker; a worker that dies ends the router."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from qroute_indexer import run_index
from qroute_server.app import RouterApp
from qroute_server.workers import Readiness

from qroute.config import Settings
from qroute.routing.classifier import Classifier
from qroute.v1 import router_pb2 as pb
from qroute.v1 import router_pb2_grpc
from tests.conftest import EXAMPLE_TABLE
from tests.integration.test_process import SERVING, Router, _serve, routers, store

__all__ = ["routers", "store"]  # fixtures, used by name

NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _lexical(location: Path) -> Settings:
    return Settings(
        retrieval={"mode": "lexical"},
        router={"similarity_threshold": 0.3, "min_margin": 0.0},
        zero_shot={"method": "off"},
        store={"location": str(location), "collection": "test"},
        server={"bind": "127.0.0.1:0", "index_poll_s": 0.1, "metrics_port": None},
    )


async def _status(port: int) -> int:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    return int(response.status)


async def _eventually(port: int, status: int, timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while await _status(port) != status:
        assert loop.time() < deadline, f"health never became {status}"
        await asyncio.sleep(0.05)


async def test_health_is_serving_only_while_every_worker_serves(tmp_path: Path) -> None:
    # Two workers of one router, in this process: each asked on its own port. Worker 1's
    # store has no index yet, so it cannot serve.
    slots = bytearray(2)
    ready = _lexical(tmp_path / "a")
    empty = _lexical(tmp_path / "b")
    await run_index(ready, EXAMPLE_TABLE, progress=False)
    apps = [
        RouterApp(ready, readiness=Readiness(slots, 0)),
        RouterApp(empty, readiness=Readiness(slots, 1)),
    ]
    ports = [await app.start() for app in apps]
    try:
        for app, settings in zip(apps, (ready, empty), strict=True):
            await app.load(lambda s=settings: Classifier.from_settings(s))  # type: ignore[misc]
        assert apps[0].classifier is not None and apps[0].classifier.index is not None
        await asyncio.sleep(0.5)  # several polls of each other's state
        assert [await _status(port) for port in ports] == [NOT_SERVING, NOT_SERVING]

        await run_index(empty, EXAMPLE_TABLE, progress=False)
        await apps[1].follow_index_once()
        await _eventually(ports[0], SERVING)
        assert await _status(ports[1]) == SERVING

        # One worker stopping is enough for the other to say NOT_SERVING.
        await apps[1].stop(grace=0)
        await _eventually(ports[0], NOT_SERVING)
    finally:
        for app in apps:
            await app.stop(grace=0)


async def test_a_draining_worker_never_reports_serving_again(tmp_path: Path) -> None:
    # A stopping worker refuses new calls at once, but its index follower polls on until
    # the drain ends: a poll then must not mark it serving again, or the other workers
    # would say SERVING while it drains (and for good, once its process is gone).
    slots = bytearray(2)
    settings = _lexical(tmp_path / "a")
    await run_index(settings, EXAMPLE_TABLE, progress=False)
    apps = [RouterApp(settings, readiness=Readiness(slots, i)) for i in range(2)]
    ports = [await app.start() for app in apps]
    try:
        for app in apps:
            await app.load(lambda: Classifier.from_settings(settings))
        await _eventually(ports[0], SERVING)

        apps[1].router.stop_accepting()  # what stop() does first
        await apps[1].follow_index_once()  # the follower's poll during the drain
        assert slots[1] == 0
        await _eventually(ports[0], NOT_SERVING)
    finally:
        for app in apps:
            await app.stop(grace=0)


def _worker_metrics(router: Router, workers: int) -> list[int]:
    for _ in range(workers):
        router.wait_for_line("listening on")
    log = "".join(router.stderr)
    ports = re.findall(r"router worker \d+/\d+ listening on .*?metrics on port (\d+)", log)
    assert len(ports) == workers, log
    return [int(port) for port in ports]


def _classify_calls(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    found = re.search(r'qroute_requests_total\{code="OK",method="Classify"\} (\S+)', text)
    assert found, text
    return float(found.group(1))


def _channel(address: str) -> grpc.aio.Channel:
    # Its own connection: channels of one process share them by default.
    return grpc.aio.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])


async def test_two_workers_on_one_port_answer_and_sigterm_drains_both(
    routers: list[Router], store: Path
) -> None:
    router = _serve(
        routers,
        store,
        delay=0.3,
        QROUTE_SERVER__WORKERS="2",
        QROUTE_SERVER__SHUTDOWN_GRACE_S="10",
    )
    metrics = _worker_metrics(router, 2)
    await asyncio.to_thread(router.wait_serving)

    channels = [_channel(router.address) for _ in range(16)]
    try:
        stubs = [router_pb2_grpc.RouterServiceStub(c) for c in channels]
        first = await asyncio.gather(
            *(s.Classify(pb.ClassifyRequest(text="코스닥 지수"), timeout=30) for s in stubs)
        )
        assert all(r.label for r in first)
        # The kernel spread the 16 connections over both workers.
        assert all(_classify_calls(port) > 0 for port in metrics)

        calls = [
            asyncio.ensure_future(s.Classify(pb.ClassifyRequest(text=f"코스닥 {i}"), timeout=30))
            for i, s in enumerate(stubs * 2)
        ]
        await asyncio.sleep(0.5)  # accepted by both workers, most still queued
        router.process.send_signal(signal.SIGTERM)
        results = await asyncio.gather(*calls, return_exceptions=True)
    finally:
        for channel in channels:
            await channel.close()
    failed = [r.code().name for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert failed == []
    assert await asyncio.to_thread(router.process.wait, 30) == 0
    # Each worker drained on its own signal.
    log = "".join(router.stderr)
    assert log.count("SIGTERM: refusing new calls") == 2, log
    assert "Traceback" not in "".join(router.stderr)


def _pids(line: str) -> list[int]:
    return [int(pid) for pid in re.findall(r"\d+", line.partition("pids ")[2].split(", m")[0])]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def test_workers_end_when_the_supervisor_is_killed(
    routers: list[Router], store: Path
) -> None:
    router = _serve(routers, store, QROUTE_SERVER__WORKERS="2")
    pids = _pids(router.wait_for_line("supervising 2 workers"))
    await asyncio.to_thread(router.wait_serving)
    router.process.kill()
    await asyncio.to_thread(router.process.wait, 10)
    for _ in range(100):
        if all(_gone(pid) for pid in pids):
            break
        await asyncio.sleep(0.1)
    assert all(_gone(pid) for pid in pids), "a worker outlived its supervisor"


async def test_a_worker_that_dies_ends_the_router_non_zero(
    routers: list[Router], store: Path
) -> None:
    router = _serve(routers, store, QROUTE_SERVER__WORKERS="2")
    line = router.wait_for_line("supervising 2 workers")
    pids = _pids(line)
    await asyncio.to_thread(router.wait_serving)
    os.kill(pids[1], signal.SIGKILL)
    try:
        code = await asyncio.to_thread(router.process.wait, 30)
    except subprocess.TimeoutExpired:
        pytest.fail("the supervisor kept running with a dead worker")
    assert code == 1
    assert _gone(pids[0])  # the other worker was stopped too
    assert any("worker 1" in line and "SIGKILL" in line for line in router.stderr)

"""The router as an operator runs it: ``python -m qroute serve`` in its own process
(lexical mode, no model), stopped with SIGTERM, started on a busy port."""

from __future__ import annotations

import asyncio
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from qroute.v1 import router_pb2 as pb
from qroute.v1 import router_pb2_grpc
from tests.conftest import EXAMPLE_TABLE, ROOT

CONFIG = ROOT / "examples" / "qroute-lexical.yaml"
SERVING = health_pb2.HealthCheckResponse.SERVING


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(store: Path, address: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QROUTE_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["QROUTE_STORE__LOCATION"] = str(store)
    env["QROUTE_SERVER__BIND"] = address
    env["QROUTE_SERVER__METRICS_PORT"] = "0"
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example table indexed once, lexically, for every router of this module."""
    location = tmp_path_factory.mktemp("store")
    result = subprocess.run(
        [sys.executable, "-m", "qroute", "index", str(EXAMPLE_TABLE), "--config", str(CONFIG)],
        cwd=ROOT,
        env=_env(location, "127.0.0.1:0"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return location


class Router:
    """A ``qroute serve`` process; its stderr lines are collected as they come."""

    def __init__(self, command: list[str], env: dict[str, str], address: str) -> None:
        self.address = address
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.stderr.append(line)
            self.lines.put(line)

    def wait_for_line(self, needle: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"no line with {needle!r} in:\n{''.join(self.stderr)}"
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if needle in line:
                return line

    def wait_serving(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.address) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                assert self.process.poll() is None, "".join(self.stderr)
                try:
                    if stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status == SERVING:
                        return
                except grpc.RpcError:
                    pass
                assert time.monotonic() < deadline, "".join(self.stderr)
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=30)
        if self.process.stderr is not None:
            self.process.stderr.close()


@pytest.fixture
def routers() -> Iterator[list[Router]]:
    started: list[Router] = []
    yield started
    for router in started:
        router.stop()


def _serve(
    routers: list[Router], store: Path, *, delay: float | None = None, **extra: str
) -> Router:
    address = extra.pop("address", None) or f"127.0.0.1:{_free_port()}"
    if delay is None:
        command = [sys.executable, "-m", "qroute"]
    else:
        slow = ROOT / "tests" / "integration" / "slow_serve.py"
        command = [sys.executable, str(slow), str(delay)]
    command += ["serve", "--config", str(CONFIG)]
    router = Router(command, _env(store, address, **extra), address)
    routers.append(router)
    return router


async def test_sigterm_finishes_every_accepted_request_then_exits(
    routers: list[Router], store: Path
) -> None:
    # Batches of 16, each held 0.5 s by the model: at SIGTERM one batch is computing
    # and the rest of the 64 requests wait in the queue.
    router = _serve(
        routers,
        store,
        delay=0.5,
        QROUTE_BATCHING__MAX_BATCH_SIZE="16",
        QROUTE_SERVER__SHUTDOWN_GRACE_S="10",
    )
    await asyncio.to_thread(router.wait_serving)
    async with grpc.aio.insecure_channel(router.address) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        calls = [
            asyncio.ensure_future(stub.Classify(pb.ClassifyRequest(text=f"코스닥 {i}"), timeout=30))
            for i in range(64)
        ]
        await asyncio.to_thread(router.wait_for_line, "slow_serve: 64 submitted")
        stopped_at = time.monotonic()
        router.process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(router.wait_for_line, "SIGTERM")

        health = health_pb2_grpc.HealthStub(channel)
        # Calls arriving during the drain are refused, so a client retries elsewhere.
        late = []
        for _ in range(10):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Classify(pb.ClassifyRequest(text="코스닥 지수"), timeout=5)
            late.append(refused.value.code().name)
            await asyncio.sleep(0.05)
        assert set(late) == {"UNAVAILABLE"}
        try:
            status = (await health.Check(health_pb2.HealthCheckRequest(), timeout=5)).status
        except grpc.aio.AioRpcError as exc:  # the listener may already be closed
            assert exc.code() == grpc.StatusCode.UNAVAILABLE
        else:
            assert status != SERVING

        results = await asyncio.gather(*calls, return_exceptions=True)
    failed = [r.code().name for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert failed == []
    assert all(isinstance(r, pb.ClassifyResponse) and r.label for r in results)
    assert await asyncio.to_thread(router.process.wait, 30) == 0
    assert time.monotonic() - stopped_at < 10
    assert sum("SIGTERM" in line for line in router.stderr) == 1
    assert "Traceback" not in "".join(router.stderr)


async def test_sigterm_under_retrying_load_cancels_no_call(
    routers: list[Router], store: Path
) -> None:
    # Callers that retry a refused call after a short pause keep sending calls until the
    # process is gone; none of them may come back CANCELLED (gRPC's own stop cancels a
    # call it received but had not handed to a handler: grpc/grpc#41785).
    router = _serve(routers, store, QROUTE_SERVER__SHUTDOWN_GRACE_S="5")
    await asyncio.to_thread(router.wait_serving)
    codes: Counter[str] = Counter()
    stop = asyncio.Event()
    async with grpc.aio.insecure_channel(router.address) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)

        async def caller(i: int) -> None:
            while not stop.is_set():
                try:
                    await stub.Classify(pb.ClassifyRequest(text=f"코스닥 {i}"), timeout=5)
                    codes["OK"] += 1
                except grpc.aio.AioRpcError as exc:
                    codes[exc.code().name] += 1
                    await asyncio.sleep(0.01)

        callers = [asyncio.ensure_future(caller(i)) for i in range(64)]
        await asyncio.sleep(1.0)
        router.process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(router.process.wait, 30)
        await asyncio.sleep(0.2)
        stop.set()
        await asyncio.gather(*callers)
    assert code == 0
    assert codes["OK"] > 0 and codes["UNAVAILABLE"] > 0, codes
    assert codes["CANCELLED"] == 0, codes
    assert "Traceback" not in "".join(router.stderr)


async def test_a_second_router_on_a_busy_port_fails_naming_the_address(
    routers: list[Router], store: Path, tmp_path: Path
) -> None:
    first = _serve(routers, store)
    await asyncio.to_thread(first.wait_serving)
    # Another config on the same address: it must not take half of the traffic.
    second = _serve(
        routers,
        tmp_path / "other-store",
        address=first.address,
        QROUTE_ROUTER__SIMILARITY_THRESHOLD="0.9",
    )
    try:
        code = await asyncio.to_thread(second.process.wait, 20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"a second router started on {first.address}")
    await asyncio.sleep(0.2)  # the reader thread drains stderr
    errors = [line for line in second.stderr if line.startswith("qroute:")]
    assert code == 2
    assert len(errors) == 1 and first.address in errors[0], "".join(second.stderr)
    assert "Traceback" not in "".join(second.stderr)
    assert first.process.poll() is None


def test_sigterm_while_the_models_load_exits_at_once(routers: list[Router], store: Path) -> None:
    """A pod stopped during a long model download goes at once, with exit code 0: it has
    no call to finish, and waiting for the load would run out the orchestrator's grace."""
    router = _serve(routers, store, delay=0.0, SLOW_SERVE_LOAD_S="120")
    router.wait_for_line("slow_serve: loading")
    stopped_at = time.monotonic()
    router.process.send_signal(signal.SIGTERM)
    code = router.process.wait(timeout=60)
    assert time.monotonic() - stopped_at < 15, "".join(router.stderr)
    assert code == 0, "".join(router.stderr)
    router.wait_for_line("stopped while loading the models")

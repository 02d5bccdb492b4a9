"""The router following the published index through faults: unreadable or corrupt
versions, a vanished pointer, slow shard loads, a read-only store. The router keeps
serving the last good version, says why once, and picks up the next good publish."""

from __future__ import annotations

import asyncio
import errno
import io
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import qdrant_edge
from grpc_health.v1 import health_pb2, health_pb2_grpc
from qroute_indexer import run_index
from qroute_server.app import RouterApp
from ruamel.yaml import YAML

from qroute.config import Settings
from qroute.routing.classifier import Classifier
from qroute.store.embedded import EmbeddedStore
from qroute.store.sharing import try_remove
from qroute.types import Query
from qroute.v1 import router_pb2 as pb
from qroute.v1 import router_pb2_grpc
from tests.conftest import EXAMPLE_TABLE
from tests.integration.conftest import ServeRouter
from tests.integration.test_decisions import KNN, ROWS
from tests.integration.test_serving import GatedEncoder

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
ROOT = Path(__file__).resolve().parents[2]
QUERY = "코스닥 지수 알려줘"


def _lexical(tmp_path: Path, **server: Any) -> Settings:
    """Lexical mode, zero-shot off: no model at all."""
    return Settings(
        retrieval={"mode": "lexical"},
        router={"similarity_threshold": 0.3, "min_margin": 0.0},
        zero_shot={"method": "off"},
        store={"location": str(tmp_path / "store"), "collection": "test"},
        server={"bind": "127.0.0.1:0", "index_poll_s": 0.1, "metrics_port": None, **server},
    )


class Router:
    def __init__(self, app: RouterApp, channel: grpc.aio.Channel, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.root = Path(settings.store.location) / settings.store.collection
        self.stub = router_pb2_grpc.RouterServiceStub(channel)
        self.health = health_pb2_grpc.HealthStub(channel)

    async def classify(self, text: str = QUERY) -> pb.ClassifyResponse:
        return await self.stub.Classify(pb.ClassifyRequest(text=text), timeout=30)

    async def status(self) -> int:
        response = await self.health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        return int(response.status)

    def failures(self, reason: str) -> float:
        value = self.app.metrics.registry.get_sample_value(
            "qroute_index_refresh_failures_total", {"reason": reason}
        )
        return value or 0.0

    def publish(self, version: str) -> None:
        """Point CURRENT at ``version`` the way the indexer does (atomic replace)."""
        tmp = self.root / ".CURRENT.test.tmp"
        tmp.write_text(version + "\n", encoding="utf-8")
        os.replace(tmp, self.root / "CURRENT")

    async def serving(self, version: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while (await self.status()) != SERVING or (await self.classify()).index_version != version:
            assert time.monotonic() < deadline, f"never switched to {version}"
            await asyncio.sleep(0.05)

    async def polls(self, n: int = 5) -> None:
        await asyncio.sleep(self.settings.server.index_poll_s * n)


def _copy_version(root: Path, source: str, target: str) -> Path:
    # Keep the holes: a shard's files are mostly unwritten preallocated pages.
    subprocess.run(["cp", "-a", "--sparse=always", root / source, root / target], check=True)
    return root / target


def _truncate_payloads(version_dir: Path) -> None:
    """Damage the version the way a truncated copy does: its payload pages end early.
    The shard still opens; every search that returns a payload fails."""
    pages = list(version_dir.glob("segments/*/payload_storage/page_0.dat"))
    assert pages, f"no payload pages under {version_dir}"
    for page in pages:  # a published lexical version has its optimised segment and an empty one
        with page.open("r+b") as handle:
            handle.truncate(10)


@pytest.fixture
async def router(tmp_path: Path) -> AsyncIterator[Router]:
    """A router serving test_v1 (examples/queries.csv, lexical)."""
    settings = _lexical(tmp_path)
    await run_index(settings, EXAMPLE_TABLE, progress=False)
    app = RouterApp(settings)
    port = await app.start()
    await app.load(lambda: Classifier.from_settings(settings))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield Router(app, channel, settings)
        await app.stop(grace=0)


async def test_unreadable_metadata_is_logged_once_retried_and_the_next_publish_is_served(
    router: Router, caplog: pytest.LogCaptureFixture
) -> None:
    v2 = _copy_version(router.root, "test_v1", "test_v2")
    good = (v2 / "qroute.json").read_text(encoding="utf-8")
    (v2 / "qroute.json").write_text("{broken", encoding="utf-8")  # a JSONDecodeError
    with caplog.at_level(logging.INFO, logger="qroute_server.app"):
        router.publish("test_v2")
        await router.polls()

        assert (await router.classify()).index_version == "test_v1"
        assert await router.status() == SERVING
        assert router.failures("read") >= 3  # counted on every poll...
        said = [r for r in caplog.records if "cannot refresh the index" in r.getMessage()]
        assert len(said) == 1  # ...said once
        assert "still serving test_v1" in said[0].getMessage()
        assert "qroute.json is damaged" in said[0].getMessage()

        (v2 / "qroute.json").write_text(good, encoding="utf-8")
        await router.serving("test_v2")
    assert any("index refresh recovered" in r.getMessage() for r in caplog.records)


async def test_a_permission_error_does_not_stop_the_follower(
    router: Router, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _copy_version(router.root, "test_v1", "test_v2")
    original = EmbeddedStore.metadata

    async def refused(self: EmbeddedStore, version: str) -> dict[str, Any]:
        if version == "test_v2":
            raise PermissionError(13, "Permission denied", f"{version}/qroute.json")
        return await original(self, version)

    monkeypatch.setattr(EmbeddedStore, "metadata", refused)
    with caplog.at_level(logging.WARNING, logger="qroute_server.app"):
        router.publish("test_v2")
        await router.polls()
    assert (await router.classify()).index_version == "test_v1"
    assert router.failures("read") >= 3
    assert "Permission denied" in caplog.text

    monkeypatch.setattr(EmbeddedStore, "metadata", original)
    await router.serving("test_v2")


async def test_a_corrupt_version_is_refused_and_the_previous_one_keeps_serving(
    router: Router, caplog: pytest.LogCaptureFixture
) -> None:
    _truncate_payloads(_copy_version(router.root, "test_v1", "test_v2"))
    with caplog.at_level(logging.WARNING, logger="qroute_server.app"):
        router.publish("test_v2")
        await router.polls()
    response = await router.classify()  # not INTERNAL
    assert response.index_version == "test_v1" and response.label == "금융"
    assert await router.status() == SERVING
    assert router.failures("load") >= 1
    assert "index version test_v2 cannot be served" in caplog.text

    _copy_version(router.root, "test_v1", "test_v3")
    router.publish("test_v3")
    await router.serving("test_v3")


async def test_with_nothing_servable_health_is_not_serving_and_classify_says_why(
    tmp_path: Path,
) -> None:
    settings = _lexical(tmp_path)
    await run_index(settings, EXAMPLE_TABLE, progress=False)
    root = tmp_path / "store" / "test"
    _truncate_payloads(_copy_version(root, "test_v1", "test_v2"))
    (root / "CURRENT").write_text("test_v2\n", encoding="utf-8")
    app = RouterApp(settings)
    port = await app.start()
    try:
        await app.load(lambda: Classifier.from_settings(settings))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            router = Router(app, channel, settings)
            assert await router.status() == NOT_SERVING
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await router.classify()
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "index version test_v2 cannot be served" in (info.value.details() or "")

            router.publish("test_v1")  # a rollback to a good version
            await router.serving("test_v1")
            assert await router.status() == SERVING
    finally:
        await app.stop(grace=0)


async def test_deleting_current_is_logged_and_the_old_version_kept(
    router: Router, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="qroute_server.app"):
        (router.root / "CURRENT").unlink()
        await router.polls()
    assert "no published index version any more" in caplog.text
    assert "still serving test_v1" in caplog.text
    assert router.failures("unpublished") >= 1
    assert (await router.classify()).index_version == "test_v1"
    assert await router.status() == SERVING


# -- the event loop stays free while versions switch ------------------------------


_EdgeShard = qdrant_edge.EdgeShard


class _SlowShard:
    """Stands in for qdrant_edge.EdgeShard: loading and closing a shard take 0.5 s, as
    they do for a large version. The delay sleeps, so it shows whether the load runs on
    the loop or on a worker thread; a real load (qdrant-edge-py 0.9) also holds the GIL
    while it runs, which no thread can hide."""

    delay = 0.5

    @staticmethod
    def load(path: str, config: Any = None) -> Any:
        time.sleep(_SlowShard.delay)
        return _SlowClose(_EdgeShard.load(path, config))

    create = _EdgeShard.create


class _SlowClose:
    def __init__(self, shard: Any) -> None:
        self._shard = shard

    def __getattr__(self, name: str) -> Any:
        return getattr(self._shard, name)

    def close(self) -> None:
        time.sleep(_SlowShard.delay)
        self._shard.close()


async def _loop_lag(stop: asyncio.Event, lags: list[float]) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        before = loop.time()
        await asyncio.sleep(0.01)
        lags.append(loop.time() - before - 0.01)


async def test_switching_versions_never_blocks_the_event_loop(
    serve_router: ServeRouter, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoder = GatedEncoder()
    running = await serve_router(ROWS, encoder=encoder, nli=False, router=KNN)
    before = (await running.classify("kospi index today")).index_version
    monkeypatch.setattr(qdrant_edge, "EdgeShard", _SlowShard)

    # A request holding the old version while the router switches to a new one: its
    # search reopens the old version after the switch, the next request the new one.
    encoder.gate.clear()
    encoder.entered.clear()
    held = asyncio.create_task(running.classify("kospi index today"))
    await asyncio.to_thread(encoder.entered.wait, 10)

    stop, lags = asyncio.Event(), []
    probe = asyncio.create_task(_loop_lag(stop, lags))
    # The indexer is another process in production: here a thread with its own loop.
    table = running.config.parent / "table.csv"
    index = run_index(
        running.app.settings, table, encoder=GatedEncoder(), progress=False, full=True
    )
    report = await asyncio.to_thread(asyncio.run, index)
    classifier = running.app.classifier
    assert classifier is not None
    await running.wait_for(
        lambda: _async(classifier.index is not None and classifier.index.version == report.version)
    )
    statuses = [await running.status() for _ in range(3)]
    encoder.gate.set()
    assert (await held).index_version == before
    assert (await running.classify("kospi index today")).index_version == report.version
    stop.set()
    await probe

    assert statuses == [SERVING] * 3
    assert max(lags) < 0.2, f"the event loop was blocked for {max(lags):.2f} s"


async def _async(value: bool) -> bool:
    return value


# -- a read-only store ------------------------------------------------------------


def _refuse_writes(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """Make every write-open under ``root`` fail as on a read-only mount. The tests run
    as root, where chmod does not stop writes, so the refusal is simulated where qroute
    opens files (Qdrant Edge's own file access is not affected)."""
    real_open = Path.open

    def guarded(self: Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if any(flag in mode for flag in "wax+") and self.is_relative_to(root):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real_open(self, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", guarded)


@pytest.mark.parametrize("lock_file", [True, False], ids=["with-readers-file", "legacy-version"])
async def test_a_reader_needs_no_write_access_to_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lock_file: bool
) -> None:
    settings = _lexical(tmp_path)
    await run_index(settings, EXAMPLE_TABLE, progress=False)
    version = tmp_path / "store" / "test" / "test_v1"
    if not lock_file:  # written before writers created it
        (version / ".readers").unlink(missing_ok=True)
    _refuse_writes(monkeypatch, tmp_path / "store")

    classifier = Classifier.from_settings(settings)
    try:
        index = await classifier.refresh_index()
        (prediction,) = await classifier.classify([Query(QUERY)])
    finally:
        await classifier.close()
    assert index is not None and index.version == "test_v1"
    assert prediction.label == "금융"


async def test_a_writer_waits_for_a_read_only_reader_to_let_go(tmp_path: Path) -> None:
    """The reader's lock taken through a read-only descriptor still tells the indexer
    that a superseded version is in use."""
    settings = _lexical(tmp_path)
    await run_index(settings, EXAMPLE_TABLE, progress=False)
    await run_index(settings, EXAMPLE_TABLE, progress=False, full=True)
    root = tmp_path / "store" / "test"
    reader = EmbeddedStore(tmp_path / "store", "test")
    await reader.open("test_v1")
    try:
        assert not try_remove(root / "test_v1")
    finally:
        await reader.close()
    assert try_remove(root / "test_v1")
    assert not (root / "test_v1").exists()


# -- a real router process ---------------------------------------------------------


class _Process:
    """``qroute serve`` in a child process; its log lines collected as they come."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            command, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._reader.join(timeout=10)
        assert self.process.stderr is not None
        self.process.stderr.close()

    def wait_for_line(self, needle: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            for line in list(self.lines):
                if needle in line:
                    return line
            assert self.process.poll() is None, "".join(self.lines)
            assert time.monotonic() < deadline, f"no {needle!r} in:\n{''.join(self.lines)}"
            time.sleep(0.05)


def test_a_router_process_survives_a_garbled_pointer_and_stops_cleanly(
    tmp_path: Path,
) -> None:
    config = tmp_path / "qroute.yaml"
    settings = _lexical(tmp_path, index_poll_s=0.2)
    config.write_text(_yaml_text(settings.model_dump(mode="json")), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("QROUTE_")}
    qroute = [sys.executable, "-m", "qroute"]
    index = [*qroute, "index", "--no-progress", "--config", str(config), "--full"]
    subprocess.run([*index, str(EXAMPLE_TABLE)], env=env, check=True, capture_output=True)
    router = _Process([*qroute, "serve", "--config", str(config)], env)
    try:
        line = router.wait_for_line("router listening on")
        port = int(line.split("(port ")[1].split(",")[0].split(")")[0])
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = router_pb2_grpc.RouterServiceStub(channel)

            def version() -> str:
                request = pb.ClassifyRequest(text=QUERY)
                return str(stub.Classify(request, timeout=10).index_version)

            router.wait_for_line("serving index version test_v1")
            root = tmp_path / "store" / "test"
            (root / "CURRENT").write_bytes(b"\xfftest_v1\n")  # not UTF-8
            router.wait_for_line("cannot refresh the index (still serving test_v1)")
            assert version() == "test_v1"

            (root / "CURRENT").write_text("test_v1\n", encoding="utf-8")
            subprocess.run([*index, str(EXAMPLE_TABLE)], env=env, check=True, capture_output=True)
            router.wait_for_line("serving index version test_v2")
            router.wait_for_line("index refresh recovered")
            assert version() == "test_v2"
        router.process.send_signal(signal.SIGTERM)
        assert router.process.wait(timeout=30) == 0
    finally:
        router.close()
    assert "Traceback" not in "".join(router.lines)


def _yaml_text(data: Any) -> str:
    out = io.StringIO()
    YAML(typ="safe", pure=True).dump(data, out)
    return out.getvalue()

"""A real router on 127.0.0.1 (ephemeral ports) over an embedded store, for each test."""

from __future__ import annotations

import asyncio
import csv
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from qroute_indexer import run_index
from qroute_server.app import RouterApp
from ruamel.yaml import YAML

from qroute.config import NLISettings, Settings, load_settings
from qroute.embedding.dense import Encoder
from qroute.routing.classifier import Classifier
from qroute.routing.zeroshot import NLIZeroShot
from qroute.store.embedded import EmbeddedStore
from qroute.testing import TinyModels
from qroute.v1 import router_pb2 as pb
from qroute.v1 import router_pb2_grpc


class RunningRouter:
    def __init__(self, app: RouterApp, channel: grpc.aio.Channel, config: Path, port: int) -> None:
        self.app = app
        self.config = config
        self.address = f"127.0.0.1:{port}"
        self.stub = router_pb2_grpc.RouterServiceStub(channel)
        self.health = health_pb2_grpc.HealthStub(channel)

    async def classify(self, text: str, timeout: float = 30, **fields: Any) -> pb.ClassifyResponse:
        request = pb.ClassifyRequest(text=text, **fields)
        return await self.stub.Classify(request, timeout=timeout)

    async def status(self) -> int:
        response = await self.health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        return response.status

    def write_config(self, **sections: dict[str, Any]) -> None:
        yaml = YAML(typ="safe", pure=True)
        data = yaml.load(self.config)
        for section, values in sections.items():
            data.setdefault(section, {}).update(values)
        yaml.dump(data, self.config)

    async def wait_for(
        self, predicate: Callable[[], Awaitable[bool]], timeout: float = 10.0
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not await predicate():
            assert loop.time() < deadline, "condition not reached in time"
            await asyncio.sleep(0.05)


ServeRouter = Callable[..., Awaitable[RunningRouter]]


@pytest.fixture
async def serve_router(
    tmp_path: Path, make_settings: Callable[..., Settings], tiny_models: TinyModels
) -> AsyncIterator[ServeRouter]:
    """``await serve_router(rows, encoder=..., nli=True, router={...}, ...)``: index the
    rows with the encoder and serve them; the config lives in a file the test may edit."""
    started: list[tuple[RouterApp, grpc.aio.Channel]] = []

    async def serve(
        rows: Sequence[tuple[str, str]],
        *,
        encoder: Encoder | None,
        nli: bool = True,
        **sections: dict[str, Any],
    ) -> RunningRouter:
        table = tmp_path / "table.csv"
        with table.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "label"])
            writer.writerows(rows)
        config = tmp_path / "qroute.yaml"
        settings = make_settings(**sections)
        YAML(typ="safe", pure=True).dump(settings.model_dump(mode="json"), config)
        settings = load_settings(config)
        await run_index(settings, table, encoder=encoder, progress=False)
        app = RouterApp(settings, config)
        port = await app.start()
        scorer = NLIZeroShot(NLISettings(model=str(tiny_models.nli))) if nli else None
        store = EmbeddedStore(settings.store.location, settings.store.collection)
        await app.load(Classifier(settings, encoder, scorer, store))
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        started.append((app, channel))
        return RunningRouter(app, channel, config, port)

    yield serve
    for app, channel in started:
        await channel.close()
        await app.stop(grace=0)

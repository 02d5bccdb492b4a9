"""The router end to end: index a table, serve it over real gRPC on 127.0.0.1, classify."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from qroute_indexer import run_index
from qroute_server.app import SERVICE_NAME, RouterApp

from qroute.config import Settings
from qroute.errors import TableError
from qroute.routing.classifier import Classifier
from qroute.v1 import router_pb2 as pb
from qroute.v1 import router_pb2_grpc
from tests.conftest import EXAMPLE_TABLE, example_rows

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class Router:
    def __init__(self, app: RouterApp, channel: grpc.aio.Channel) -> None:
        self.app = app
        self.stub = router_pb2_grpc.RouterServiceStub(channel)
        self.health = health_pb2_grpc.HealthStub(channel)

    async def classify(self, text: str) -> pb.ClassifyResponse:
        return await self.stub.Classify(pb.ClassifyRequest(text=text), timeout=30)

    async def status(self, service: str = "") -> int:
        response = await self.health.Check(
            health_pb2.HealthCheckRequest(service=service), timeout=5
        )
        return response.status

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        while not await predicate():
            assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
            await asyncio.sleep(0.05)


@pytest.fixture
async def started(make_settings: Callable[..., Settings]) -> AsyncIterator[tuple[Router, Settings]]:
    settings = make_settings(zero_shot={"threshold": 0.3})
    app = RouterApp(settings)
    port = await app.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield Router(app, channel), settings
    await app.stop(grace=0)


async def test_health_is_not_serving_until_models_and_index_are_loaded(
    started: tuple[Router, Settings],
) -> None:
    router, settings = started
    assert await router.status() == NOT_SERVING
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await router.classify("코스닥 지수 알려줘")
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE

    await router.app.load(lambda: Classifier.from_settings(settings))
    assert await router.status(SERVICE_NAME) == NOT_SERVING  # models up, no index yet
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await router.classify("코스닥 지수 알려줘")
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION

    await run_index(settings, EXAMPLE_TABLE, progress=False)
    await router.wait_for(lambda: _is(router.status(), SERVING))
    assert await router.status(SERVICE_NAME) == SERVING


async def test_reflection_lists_the_router_and_health_services(
    started: tuple[Router, Settings],
) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    router, _ = started
    async with grpc.aio.insecure_channel(f"127.0.0.1:{router.app.port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        responses = [r async for r in stub.ServerReflectionInfo(iter([request]))]
    names = {s.name for s in responses[0].list_services_response.service}
    assert {"qroute.v1.RouterService", "grpc.health.v1.Health"} <= names


async def _is(awaitable: Any, value: Any) -> bool:
    return bool(await awaitable == value)


@pytest.fixture
async def serving(started: tuple[Router, Settings]) -> tuple[Router, Settings]:
    router, settings = started
    await run_index(settings, EXAMPLE_TABLE, progress=False)
    await router.app.load(lambda: Classifier.from_settings(settings))
    assert await router.status() == SERVING
    return router, settings


async def test_known_query_is_answered_by_knn_with_its_own_row(
    serving: tuple[Router, Settings],
) -> None:
    router, _ = serving
    row = example_rows()[42]
    response = await router.classify(row["text"])
    assert response.path == pb.DECISION_PATH_KNN
    assert response.label == row["label"]
    assert response.neighbours[0].text == row["text"]
    assert response.neighbours[0].similarity == pytest.approx(1.0, abs=1e-4)
    assert response.neighbours[0].row_id
    assert len({n.label for n in response.neighbours}) == 5  # k = 5 label groups
    assert response.knn_scores[0].label == row["label"]
    assert response.index_version == router.app.classifier.index.version  # type: ignore[union-attr]
    assert "similarity" in response.reason


async def test_unknown_query_falls_back_to_one_nli_pass_over_all_candidates(
    serving: tuple[Router, Settings],
) -> None:
    router, _ = serving
    classifier = router.app.classifier
    assert classifier is not None
    model = classifier.nli.model  # type: ignore[union-attr]
    calls: list[int] = []
    original = model.forward

    def counting_forward(*args: Any, **kwargs: Any) -> Any:
        calls.append(int(kwargs["input_ids"].shape[0]))
        return original(*args, **kwargs)

    model.forward = counting_forward
    try:
        response = await router.classify("오늘 저녁 코스닥 영화 날씨 추천")
    finally:
        model.forward = original

    assert response.neighbours[0].similarity < 0.99
    assert response.path in (pb.DECISION_PATH_ZERO_SHOT, pb.DECISION_PATH_NO_MATCH)
    candidates = {n.label for n in response.neighbours}  # top_n (5) of k (5) labels
    assert {s.label for s in response.zero_shot_scores} == candidates
    assert calls == [len(candidates)], "NLI must score every candidate label in one forward pass"
    assert "threshold" in response.reason


async def test_no_match_when_entailment_is_below_the_nli_threshold(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(zero_shot={"threshold": 0.9})
    await run_index(settings, EXAMPLE_TABLE, progress=False)
    app = RouterApp(settings)
    port = await app.start()
    await app.load(lambda: Classifier.from_settings(settings))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = router_pb2_grpc.RouterServiceStub(channel)
            response = await stub.Classify(
                pb.ClassifyRequest(text="오늘 저녁 코스닥 영화 날씨 추천")
            )
    finally:
        await app.stop(grace=0)
    assert response.path == pb.DECISION_PATH_NO_MATCH
    assert response.label == ""
    assert response.zero_shot_scores


@pytest.mark.parametrize("text", ["", "   \n"])
async def test_empty_text_is_invalid_argument(serving: tuple[Router, Settings], text: str) -> None:
    router, _ = serving
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await router.classify(text)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "empty" in (info.value.details() or "")


async def test_batch_answers_in_request_order(serving: tuple[Router, Settings]) -> None:
    router, _ = serving
    rows = example_rows()[::40]
    request = pb.ClassifyBatchRequest(requests=[pb.ClassifyRequest(text=r["text"]) for r in rows])
    response = await router.stub.ClassifyBatch(request, timeout=30)
    assert [r.neighbours[0].text for r in response.responses] == [r["text"] for r in rows]
    one_by_one = [await router.classify(r["text"]) for r in rows]
    assert [(r.label, r.path) for r in response.responses] == [
        (r.label, r.path) for r in one_by_one
    ]


async def test_reindexing_switches_version_without_restart(
    serving: tuple[Router, Settings], tmp_path: Path
) -> None:
    router, settings = serving
    before = (await router.classify("코스닥 지수 알려줘")).index_version

    changed = tmp_path / "changed.csv"
    shutil.copy(EXAMPLE_TABLE, changed)
    with changed.open("a", encoding="utf-8") as handle:
        handle.write("양자컴퓨터 관련주 시세 알려줘,금융\n")
    report = await run_index(settings, changed, progress=False)
    assert report.previous == before

    async def switched() -> bool:
        return (await router.classify("코스닥 지수 알려줘")).index_version == report.version

    await router.wait_for(switched)
    response = await router.classify("양자컴퓨터 관련주 시세 알려줘")
    assert response.path == pb.DECISION_PATH_KNN and response.label == "금융"
    # The replaced version is kept for a rollback (index.keep_versions).
    assert await _versions_are(router, [before, report.version])


async def _versions_are(router: Router, expected: list[str]) -> bool:
    assert router.app.classifier is not None
    return await router.app.classifier.store.versions() == expected


async def test_bad_row_fails_with_file_and_row_and_leaves_the_index_alone(
    serving: tuple[Router, Settings], tmp_path: Path
) -> None:
    router, settings = serving
    before = await router.classify("코스닥 지수 알려줘")

    bad = tmp_path / "bad.csv"
    shutil.copy(EXAMPLE_TABLE, bad)
    with bad.open("a", encoding="utf-8") as handle:
        handle.write("환율 전망 알려줘,\n")
    with pytest.raises(TableError) as info:
        await run_index(settings, bad, progress=False)
    rows = len(example_rows())
    assert f"{bad}:{rows + 2}: label: empty" in str(info.value)

    await asyncio.sleep(settings.server.index_poll_s * 3)
    after = await router.classify("코스닥 지수 알려줘")
    assert after.index_version == before.index_version
    assert await _versions_are(router, [before.index_version])

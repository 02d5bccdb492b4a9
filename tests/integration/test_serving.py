"""The router as a production gRPC service: micro-batching, a responsive event loop,
hot reload without failed requests, status codes, metrics."""

from __future__ import annotations

import asyncio
import threading
import urllib.request
from collections.abc import Sequence
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
import pytest
from qdrant_client import AsyncQdrantClient
from qroute_server.app import RouterApp

from qroute.routing.classifier import Classifier
from qroute.routing.published import IndexState
from qroute.testing import BagOfWordsEncoder
from qroute.v1 import router_pb2 as pb
from tests.integration.conftest import RunningRouter, ServeRouter
from tests.integration.test_decisions import KNN, ROWS


class GatedEncoder(BagOfWordsEncoder):
    """Blocks inside ``encode`` while the gate is closed, so a test can hold a batch in
    flight and queue more requests behind it."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def encode(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        self.entered.set()
        self.gate.wait(timeout=30)
        return super().encode(texts)


async def _gated(serve_router: ServeRouter, **sections: Any) -> tuple[RunningRouter, GatedEncoder]:
    encoder = GatedEncoder()
    router = await serve_router(ROWS, encoder=encoder, router=KNN, **sections)
    encoder.calls.clear()
    return router, encoder


async def _hold_a_batch(router: RunningRouter, encoder: GatedEncoder) -> asyncio.Task[Any]:
    encoder.gate.clear()
    encoder.entered.clear()
    first = asyncio.create_task(router.classify("kospi index today"))
    await asyncio.to_thread(encoder.entered.wait, 10)
    return first


async def test_concurrent_calls_share_one_encoder_call_and_one_nli_pass(
    serve_router: ServeRouter,
) -> None:
    router, encoder = await _gated(serve_router, zero_shot={"threshold": 0.0})
    classifier = router.app.classifier
    assert classifier is not None
    nli: Any = classifier.nli
    passes: list[int] = []
    original = nli.logits

    def spy(premises: list[str], hypotheses: list[str]) -> Any:
        passes.append(len(premises))
        return original(premises, hypotheses)

    nli.logits = spy
    first = await _hold_a_batch(router, encoder)
    queries = [f"kospi forecast {i}" for i in range(16)]  # all below the threshold
    waiting = [asyncio.create_task(router.classify(q)) for q in queries]
    await router.wait_for(lambda: _async(router.app.batcher.waiting == len(queries)))
    encoder.gate.set()
    responses = await asyncio.gather(first, *waiting)

    assert all(r.path == pb.DECISION_PATH_ZERO_SHOT for r in responses[1:])
    assert [len(call) for call in encoder.calls] == [1, 16]
    assert passes == [sum(len(r.zero_shot_scores) for r in responses[1:])]


async def test_classify_batch_takes_the_same_path(serve_router: ServeRouter) -> None:
    router, encoder = await _gated(serve_router)
    request = pb.ClassifyBatchRequest(requests=[pb.ClassifyRequest(text=t) for t, _ in ROWS[:5]])
    response = await router.stub.ClassifyBatch(request, timeout=30)
    assert [r.label for r in response.responses] == [label for _, label in ROWS[:5]]
    assert [len(call) for call in encoder.calls] == [5]


async def test_health_and_reflection_answer_while_models_are_busy(
    serve_router: ServeRouter,
) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    router, encoder = await _gated(serve_router)
    first = await _hold_a_batch(router, encoder)
    busy = [asyncio.create_task(router.classify(f"kospi {i}")) for i in range(8)]

    assert await router.status() == 1  # SERVING, while the encoder is blocked
    async with grpc.aio.insecure_channel(f"127.0.0.1:{router.app.port}") as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        replies = [r async for r in stub.ServerReflectionInfo(iter([request]), timeout=5)]
    assert replies[0].list_services_response.service
    assert not first.done() and not any(task.done() for task in busy)

    encoder.gate.set()
    await asyncio.gather(first, *busy)


async def test_a_request_whose_deadline_passed_in_the_queue_is_never_computed(
    serve_router: ServeRouter,
) -> None:
    router, encoder = await _gated(serve_router)
    first = await _hold_a_batch(router, encoder)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await router.classify("expires while queued", timeout=0.3)
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    encoder.gate.set()
    await first
    await router.classify("kospi index today")  # the worker moved on
    assert all("expires while queued" not in call for call in encoder.calls)


async def test_a_full_queue_is_refused_not_queued(serve_router: ServeRouter) -> None:
    router, encoder = await _gated(serve_router, batching={"max_queue": 2})
    first = await _hold_a_batch(router, encoder)
    tasks = [asyncio.create_task(router.classify(f"kospi {i}", timeout=30)) for i in range(6)]
    await asyncio.wait(tasks, timeout=1.0)  # the refusals come back at once
    encoder.gate.set()
    await first
    results = await asyncio.gather(*tasks, return_exceptions=True)
    refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert len(refused) == 4  # two fit in the queue
    assert all(r.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for r in refused)
    assert "2 texts are already waiting and this request adds 1" in (refused[0].details() or "")


@pytest.mark.parametrize(
    ("fields", "needle"),
    [
        ({"text": ""}, "empty"),
        ({"text": "x" * 201}, "limit is 200"),
        ({"text": "kospi", "allowed_labels": ["nope"]}, "nope"),
        ({"text": "kospi", "top_labels": -1}, "top_labels"),
    ],
)
async def test_invalid_argument(
    serve_router: ServeRouter, fields: dict[str, Any], needle: str
) -> None:
    router = await serve_router(
        ROWS, encoder=BagOfWordsEncoder(), router={**KNN, "max_text_chars": 200}
    )
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await router.stub.Classify(pb.ClassifyRequest(**fields), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in (info.value.details() or "")


async def test_unreachable_qdrant_is_unavailable(make_settings: Any) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    settings = make_settings(store={"location": f"http://127.0.0.1:{closed}", "timeout_s": 2})
    from qroute.store.server import ServerStore

    client = AsyncQdrantClient(url=settings.store.location, timeout=2, check_compatibility=False)
    store = ServerStore(client, "test")
    app = RouterApp(settings)
    port = await app.start()
    await app.load(
        Classifier(settings, BagOfWordsEncoder(), None, store, index=IndexState("test_v1", ("a",)))
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_stub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Classify(pb.ClassifyRequest(text="kospi"), timeout=30)
    finally:
        await app.stop(grace=0)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "Qdrant is unreachable" in (info.value.details() or "")


def pb_stub(channel: grpc.aio.Channel) -> Any:
    from qroute.v1 import router_pb2_grpc

    return router_pb2_grpc.RouterServiceStub(channel)


async def test_hot_reload_under_load_fails_no_request(serve_router: ServeRouter) -> None:
    router = await serve_router(ROWS, encoder=BagOfWordsEncoder(), router=KNN)
    before = await router.classify("kospi index today now")
    assert before.path == pb.DECISION_PATH_KNN

    failures: list[BaseException] = []
    versions: set[str] = set()
    stop = asyncio.Event()

    async def client(i: int) -> None:
        while not stop.is_set():
            try:
                response = await router.classify(f"kospi index today now {i}")
                versions.add(response.config_version)
            except grpc.aio.AioRpcError as exc:
                failures.append(exc)

    clients = [asyncio.create_task(client(i)) for i in range(8)]
    # Each config serves the clients' own calls before the next change: on busy cores a
    # change could otherwise land before any of them is answered.
    await router.wait_for(lambda: _async(before.config_version in versions))
    # A valid change, an invalid file, then another valid change.
    router.write_config(router={"similarity_threshold": 0.95})
    await router.wait_for(lambda: _threshold_is(router, 0.95))
    version_a = router.app.settings.version
    await router.wait_for(lambda: _async(version_a in versions))

    rejected = _sample(router, "qroute_config_reloads_total", {"result": "rejected"})
    router.config.write_text("router:\n  k: -3\n", encoding="utf-8")
    await router.wait_for(
        lambda: _async(
            _sample(router, "qroute_config_reloads_total", {"result": "rejected"}) > rejected
        )
    )
    assert router.app.settings.version == version_a  # the old config keeps serving
    assert await _threshold_is(router, 0.95)

    router.config.write_text("router:\n  similarity_threshold: 0.5\n", encoding="utf-8")
    await router.wait_for(lambda: _threshold_is(router, 0.5))
    await router.wait_for(lambda: _async(router.app.settings.version in versions))
    stop.set()
    await asyncio.gather(*clients)

    assert failures == []
    assert {before.config_version, version_a, router.app.settings.version} <= versions


async def _async(value: bool) -> bool:
    return value


async def _threshold_is(router: RunningRouter, value: float) -> bool:
    response = await router.classify("kospi index today now")
    return bool(abs(response.thresholds.similarity - value) < 1e-6)


def _sample(router: RunningRouter, name: str, labels: dict[str, str]) -> float:
    return router.app.metrics.registry.get_sample_value(name, labels) or 0.0


async def test_restart_only_changes_are_kept_and_reported(
    serve_router: ServeRouter, caplog: pytest.LogCaptureFixture
) -> None:
    router = await serve_router(ROWS, encoder=BagOfWordsEncoder(), router=KNN)
    store_before = router.app.settings.store
    router.write_config(store={"collection": "other"}, router={"similarity_threshold": 0.6})
    await router.wait_for(lambda: _threshold_is(router, 0.6))
    assert router.app.settings.store == store_before
    assert "need a restart" in caplog.text


async def test_metrics_endpoint(serve_router: ServeRouter) -> None:
    router = await serve_router(ROWS, encoder=BagOfWordsEncoder(), router=KNN)
    await router.classify("kospi index today")
    await router.classify("kospi forecast")
    with pytest.raises(grpc.aio.AioRpcError):
        await router.classify("")
    url = f"http://127.0.0.1:{router.app.metrics_port}/metrics"
    body = (await asyncio.to_thread(lambda: urllib.request.urlopen(url, timeout=5).read())).decode()
    assert 'qroute_requests_total{code="OK",method="Classify"} 2.0' in body
    assert 'qroute_requests_total{code="INVALID_ARGUMENT",method="Classify"} 1.0' in body
    assert 'qroute_queries_total{path="KNN"} 1.0' in body
    assert 'qroute_fallbacks_total{reason="LOW_SIMILARITY"} 1.0' in body
    assert 'qroute_zero_shot_queries_total{method="nli-independent"} 1.0' in body
    assert "qroute_batch_size_bucket" in body
    assert "qroute_request_duration_seconds_bucket" in body
    assert 'qroute_index_info{version="test_v1"} 1.0' in body
    assert f'qroute_config_info{{version="{router.app.settings.version}"}} 1.0' in body

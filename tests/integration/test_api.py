"""The gRPC surface beyond Classify: GetIndexInfo, the zero-shot method as an enum,
server reflection v1 beside v1alpha, and the google.rpc details of each error."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_reflection.v1alpha import reflection_pb2
from grpc_status import rpc_status
from qroute_client import AsyncClient, Client, FailedPrecondition, RetrievalMode, ZeroShotMethod
from qroute_server.app import RouterApp

from qroute.cli import main
from qroute.config import Settings
from qroute.routing.classifier import Classifier
from qroute.store.embedded import EmbeddedStore
from qroute.testing import BagOfWordsEncoder
from qroute.v1 import router_pb2 as pb
from tests.buf import buf
from tests.integration.conftest import RunningRouter, ServeRouter
from tests.integration.test_decisions import KNN, ROWS
from tests.integration.test_serving import _gated, _hold_a_batch

LABELS = ["finance", "movie", "weather"]


async def _router(serve_router: ServeRouter, **sections: Any) -> RunningRouter:
    router = {**KNN, **sections.pop("router", {})}
    return await serve_router(
        ROWS,
        encoder=BagOfWordsEncoder(),
        nli=False,
        router=router,
        zero_shot=sections.pop("zero_shot", {"method": "off"}),
        **sections,
    )


def _details(error: grpc.aio.AioRpcError) -> dict[type[Message], Message]:
    """The status details of ``error`` by type, each unpacked."""
    status = rpc_status.from_call(error)
    assert status is not None, "no google.rpc.Status in the trailer"
    found: dict[type[Message], Message] = {}
    for packed in status.details:
        for kind in (
            error_details_pb2.ErrorInfo,
            error_details_pb2.ResourceInfo,
            error_details_pb2.RetryInfo,
            error_details_pb2.BadRequest,
        ):
            if packed.Is(kind.DESCRIPTOR):
                detail = kind()
                packed.Unpack(detail)
                found[kind] = detail
    return found


async def _fails(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


# ------------------------------------------------------------------ GetIndexInfo


async def test_index_info_describes_the_served_index_config_and_limits(
    serve_router: ServeRouter,
) -> None:
    router = await _router(
        serve_router,
        router={"max_text_chars": 300, "max_batch_texts": 40, "max_allowed_labels": 7},
        batching={"max_queue": 1000},
        tuned={"encoder": "some-other-encoder"},
    )
    info = await router.stub.GetIndexInfo(pb.GetIndexInfoRequest(), timeout=10)
    assert info.index_version == "test_v1"
    assert list(info.labels) == LABELS
    assert info.label_count == 3
    assert info.rows == len(ROWS)
    assert info.retrieval_mode == pb.RETRIEVAL_MODE_DENSE
    assert info.encoder_fingerprint == BagOfWordsEncoder().fingerprint
    assert info.config_version == router.app.settings.version
    assert info.tuned_encoder_fingerprint == "some-other-encoder"
    assert not info.uses_head
    limits = info.limits
    assert (limits.max_text_chars, limits.max_batch_texts, limits.max_allowed_labels) == (
        300,
        40,
        7,
    )
    # The classify answers agree with it.
    response = await router.classify("kospi index today")
    assert (response.index_version, response.config_version) == (
        info.index_version,
        info.config_version,
    )


async def test_the_batch_limit_reported_is_the_one_enforced(serve_router: ServeRouter) -> None:
    router = await _router(serve_router, router={"max_batch_texts": 40}, batching={"max_queue": 5})
    info = await router.stub.GetIndexInfo(pb.GetIndexInfoRequest(), timeout=10)
    assert info.limits.max_batch_texts == 5
    texts = [pb.ClassifyRequest(text="kospi") for _ in range(info.limits.max_batch_texts)]
    await router.stub.ClassifyBatch(pb.ClassifyBatchRequest(requests=texts), timeout=10)
    texts.append(pb.ClassifyRequest(text="kospi"))
    error = await _fails(router.stub.ClassifyBatch(pb.ClassifyBatchRequest(requests=texts)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_index_info_follows_a_config_reload(serve_router: ServeRouter) -> None:
    router = await _router(serve_router)
    before = await router.stub.GetIndexInfo(pb.GetIndexInfoRequest(), timeout=10)
    router.write_config(router={"max_text_chars": 123})

    async def reloaded() -> bool:
        info = await router.stub.GetIndexInfo(pb.GetIndexInfoRequest(), timeout=10)
        return info.limits.max_text_chars == 123

    await router.wait_for(reloaded)
    after = await router.stub.GetIndexInfo(pb.GetIndexInfoRequest(), timeout=10)
    assert after.config_version != before.config_version
    assert after.config_version == router.app.settings.version


async def test_index_info_counts_its_requests(serve_router: ServeRouter) -> None:
    router = await _router(serve_router)
    await router.stub.GetIndexInfo(pb.GetIndexInfoRequest(), timeout=10)
    labels = {"method": "GetIndexInfo", "code": "OK"}
    registry = router.app.metrics.registry
    assert registry.get_sample_value("qroute_requests_total", labels) == 1.0


async def test_a_malformed_index_info_request_is_invalid_argument(
    serve_router: ServeRouter,
) -> None:
    router = await _router(serve_router)
    async with grpc.aio.insecure_channel(router.address) as channel:
        call = channel.unary_unary("/qroute.v1.RouterService/GetIndexInfo")
        error = await _fails(call(b"\x0a\x05ab", timeout=10))  # truncated bytes
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "qroute.v1.GetIndexInfoRequest" in (error.details() or "")


async def test_the_clients_and_the_cli_read_index_info(
    serve_router: ServeRouter, capsys: pytest.CaptureFixture[str]
) -> None:
    router = await _router(serve_router)

    def sync_call() -> Any:
        with Client(router.address, timeout=10) as client:
            return client.index_info()

    info = await asyncio.to_thread(sync_call)
    async with AsyncClient(router.address, timeout=10) as client:
        assert await client.index_info() == info
        answer = await client.classify("kospi index today")
    assert info.labels == tuple(LABELS) and info.rows == len(ROWS)
    assert info.retrieval_mode is RetrievalMode.DENSE
    assert info.limits.max_text_chars == router.app.settings.router.max_text_chars
    assert answer.zero_shot_method_kind is ZeroShotMethod.UNSPECIFIED

    assert await asyncio.to_thread(main, ["info", "--address", router.address]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("index test_v1: 9 rows, 3 labels (dense; bag-of-words|dim=1024)")
    assert "labels: finance, movie, weather" in printed
    assert "thresholds never tuned" in printed


# ------------------------------------------------------------------ zero-shot method


@pytest.mark.parametrize(
    ("zero_shot", "nli", "text", "name", "kind"),
    [
        ({"method": "off"}, False, "kospi index today", "", pb.ZERO_SHOT_METHOD_UNSPECIFIED),
        (
            {"method": "embedding", "threshold": 0.2, "candidates": "all"},
            False,
            "will it rain",
            "embedding",
            pb.ZERO_SHOT_METHOD_EMBEDDING,
        ),
        ({"threshold": 0.0}, True, "kospi forecast", "nli-independent", pb.ZERO_SHOT_METHOD_NLI),
        (
            {"mode": "single", "threshold": 0.0},
            True,
            "kospi forecast",
            "nli-single",
            pb.ZERO_SHOT_METHOD_NLI_SINGLE,
        ),
    ],
    ids=["none", "embedding", "nli", "nli-single"],
)
async def test_the_zero_shot_method_comes_as_an_enum_and_as_the_old_string(
    serve_router: ServeRouter,
    zero_shot: dict[str, Any],
    nli: bool,
    text: str,
    name: str,
    kind: int,
) -> None:
    router = await serve_router(
        ROWS, encoder=BagOfWordsEncoder(), nli=nli, router=KNN, zero_shot=zero_shot
    )
    response = await router.classify(text)
    assert response.zero_shot_method_kind == kind
    assert response.zero_shot_method == name  # deprecated, still filled


# ------------------------------------------------------------------ reflection


def _reflect(address: str, service: str) -> Callable[..., Any]:
    """A raw ServerReflectionInfo call under ``service``: v1 and v1alpha messages are the
    same bytes, so v1alpha's classes serialise a v1 request."""
    channel = grpc.aio.insecure_channel(address)
    call = channel.stream_stream(
        f"/{service}/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )

    async def ask(*requests: reflection_pb2.ServerReflectionRequest) -> list[Any]:
        try:
            return [r async for r in call(iter(requests), timeout=10)]
        finally:
            await channel.close()

    return ask


@pytest.mark.parametrize("service", ["grpc.reflection.v1", "grpc.reflection.v1alpha"])
async def test_reflection_lists_the_services_and_describes_the_router(
    serve_router: ServeRouter, service: str
) -> None:
    router = await _router(serve_router)
    ask = _reflect(router.address, f"{service}.ServerReflection")
    listed, described, itself = await ask(
        reflection_pb2.ServerReflectionRequest(list_services=""),
        reflection_pb2.ServerReflectionRequest(file_containing_symbol="qroute.v1.RouterService"),
        reflection_pb2.ServerReflectionRequest(
            file_containing_symbol=f"{service}.ServerReflection"
        ),
    )
    names = {s.name for s in listed.list_services_response.service}
    assert names == {
        "qroute.v1.RouterService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    assert described.file_descriptor_response.file_descriptor_proto
    assert itself.file_descriptor_response.file_descriptor_proto, itself.error_response


def _buf_curl(router: RunningRouter, *args: str) -> subprocess.CompletedProcess[str]:
    command = [
        str(buf()),
        "curl",
        "--protocol",
        "grpc",
        "--http2-prior-knowledge",
        "--reflect-protocol",
        "grpc-v1",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


async def test_buf_curl_calls_the_router_through_reflection_v1(serve_router: ServeRouter) -> None:
    """What the issue names: a tool that speaks reflection v1 only (no v1alpha fallback)."""
    router = await _router(serve_router)
    url = f"http://{router.address}"
    listed = await asyncio.to_thread(_buf_curl, router, "--list-services", url)
    assert listed.returncode == 0, listed.stderr
    assert "qroute.v1.RouterService" in listed.stdout.split()
    answer = await asyncio.to_thread(
        _buf_curl, router, f"{url}/qroute.v1.RouterService/GetIndexInfo"
    )
    assert answer.returncode == 0, answer.stderr
    info = json.loads(answer.stdout)
    assert info["indexVersion"] == "test_v1" and info["labels"] == LABELS
    assert info["retrievalMode"] == "RETRIEVAL_MODE_DENSE"


# ------------------------------------------------------------------ error details


@pytest.fixture
async def unindexed(make_settings: Callable[..., Settings]) -> Any:
    """A router with its classifier loaded (lexical: no model) and nothing published."""
    settings = make_settings(retrieval={"mode": "lexical"}, zero_shot={"method": "off"})
    app = RouterApp(settings)
    port = await app.start()
    await app.load()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    yield app, channel
    await channel.close()
    await app.stop(grace=0)


@pytest.mark.parametrize("method", ["Classify", "GetIndexInfo"])
async def test_nothing_indexed_is_failed_precondition_naming_the_collection(
    unindexed: Any, method: str
) -> None:
    _, channel = unindexed
    request = pb.ClassifyRequest(text="kospi") if method == "Classify" else pb.GetIndexInfoRequest()
    call = channel.unary_unary(
        f"/qroute.v1.RouterService/{method}", request_serializer=type(request).SerializeToString
    )
    error = await _fails(call(request, timeout=10))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = _details(error)
    info = details[error_details_pb2.ErrorInfo]
    assert (info.reason, info.domain) == ("NOT_INDEXED", "qroute")
    resource = details[error_details_pb2.ResourceInfo]
    assert (resource.resource_type, resource.resource_name) == ("qroute index", "test")
    assert "qroute index TABLE" in resource.description
    assert error_details_pb2.RetryInfo not in details  # retrying unchanged cannot help


async def test_the_client_exposes_the_reason_and_the_cli_says_why(
    unindexed: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    app, _ = unindexed
    address = f"127.0.0.1:{app.port}"
    async with AsyncClient(address, timeout=10) as client:
        with pytest.raises(FailedPrecondition) as info:
            await client.index_info()
    assert (info.value.reason, info.value.domain) == ("NOT_INDEXED", "qroute")
    assert info.value.retry_delay_s is None
    assert await asyncio.to_thread(main, ["info", "--address", address]) == 1
    err = capsys.readouterr().err
    assert err.startswith("qroute: FAILED_PRECONDITION: no index has been published yet")


async def test_an_index_of_another_encoder_names_the_version(serve_router: ServeRouter) -> None:
    router = await _router(serve_router)
    settings = router.app.settings
    store = EmbeddedStore(settings.store.location, settings.store.collection)
    serving = router.app.classifier
    assert serving is not None
    # Same model, another vector size: the published vectors do not fit this router.
    await router.app.load(Classifier(settings, BagOfWordsEncoder(512), None, store))
    await serving.close()
    error = await _fails(router.stub.GetIndexInfo(pb.GetIndexInfoRequest(), timeout=10))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = _details(error)
    assert details[error_details_pb2.ErrorInfo].reason == "ENCODER_MISMATCH"
    assert details[error_details_pb2.ResourceInfo].resource_name == "test_v1"


async def test_a_loading_router_is_unavailable_with_a_retry_delay(
    make_settings: Callable[..., Settings],
) -> None:
    app = RouterApp(make_settings())
    port = await app.start()  # bound, models not loaded yet
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub_call = channel.unary_unary(
                "/qroute.v1.RouterService/GetIndexInfo",
                request_serializer=pb.GetIndexInfoRequest.SerializeToString,
            )
            error = await _fails(stub_call(pb.GetIndexInfoRequest(), timeout=10))
    finally:
        await app.stop(grace=0)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    details = _details(error)
    assert details[error_details_pb2.ErrorInfo].reason == "NOT_READY"
    delay = details[error_details_pb2.RetryInfo].retry_delay.ToTimedelta().total_seconds()
    assert delay > 0


async def test_an_overloaded_router_says_when_to_retry(serve_router: ServeRouter) -> None:
    router, encoder = await _gated(serve_router, batching={"max_queue": 2})
    first = await _hold_a_batch(router, encoder)
    tasks = [asyncio.create_task(router.classify(f"kospi {i}", timeout=30)) for i in range(3)]
    done, _ = await asyncio.wait(tasks, timeout=5, return_when=asyncio.FIRST_COMPLETED)
    encoder.gate.set()
    await first
    results = await asyncio.gather(*tasks, return_exceptions=True)
    [refused] = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
    assert done and refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = _details(refused)
    assert details[error_details_pb2.ErrorInfo].reason == "OVERLOADED"
    delay = details[error_details_pb2.RetryInfo].retry_delay.ToTimedelta().total_seconds()
    assert 0 < delay <= 5

"""What a client sees for a request the router cannot answer: the status code that
says so, a short message naming the field, BadRequest details, bounded trailers."""

from __future__ import annotations

import logging
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from qroute.testing import BagOfWordsEncoder
from qroute.v1 import router_pb2 as pb
from tests.integration.conftest import RunningRouter, ServeRouter
from tests.integration.test_decisions import KNN, ROWS

INVALID = grpc.StatusCode.INVALID_ARGUMENT


async def _router(serve_router: ServeRouter, **sections: Any) -> RunningRouter:
    router = {**KNN, **sections.pop("router", {})}
    return await serve_router(
        ROWS,
        encoder=BagOfWordsEncoder(),
        nli=False,
        router=router,
        zero_shot={"method": "off"},
        **sections,
    )


def _count(router: RunningRouter, method: str, code: str) -> float:
    labels = {"method": method, "code": code}
    return router.app.metrics.registry.get_sample_value("qroute_requests_total", labels) or 0.0


def _violations(error: grpc.aio.AioRpcError) -> list[tuple[str, str]]:
    status = rpc_status.from_call(error)
    assert status is not None, "no google.rpc.Status in the trailer"
    [detail] = status.details
    bad = error_details_pb2.BadRequest()
    assert detail.Unpack(bad)
    return [(v.field, v.description) for v in bad.field_violations]


async def _raw(router: RunningRouter, method: str, data: bytes) -> grpc.aio.AioRpcError:
    """Send ``data`` as the request bytes, as a client with a broken encoder would."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{router.app.port}") as channel:
        call = channel.unary_unary(f"/qroute.v1.RouterService/{method}")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(data, timeout=10)
    return info.value


@pytest.mark.parametrize(
    ("method", "data"),
    [
        ("Classify", b"\x0a\x02\xff\xfe"),  # text: invalid UTF-8
        ("Classify", b"\x0a\x05ab"),  # text: truncated
        ("ClassifyBatch", b"\x0a\x04\x0a\x02\xff\xfe"),  # requests[0].text: invalid UTF-8
    ],
)
async def test_a_malformed_request_is_invalid_argument_counted_and_logged_once(
    serve_router: ServeRouter, caplog: pytest.LogCaptureFixture, method: str, data: bytes
) -> None:
    router = await _router(serve_router)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        errors = [await _raw(router, method, data) for _ in range(20)]
    assert {e.code() for e in errors} == {INVALID}
    details = errors[0].details() or ""
    assert f"qroute.v1.{method}Request" in details
    assert len(details) < 200
    assert "Error" not in details.split(":", 1)[0]  # no exception class leaks
    assert _count(router, method, "INVALID_ARGUMENT") == 20
    assert len(caplog.records) == 1, caplog.text
    assert caplog.records[0].exc_info is None
    assert "Traceback" not in caplog.text
    # The router still answers well-formed requests.
    assert (await router.classify("kospi index today")).label


async def test_a_batch_over_max_batch_texts_is_invalid_argument(
    serve_router: ServeRouter,
) -> None:
    router = await _router(serve_router, router={"max_batch_texts": 4})
    request = pb.ClassifyBatchRequest(requests=[pb.ClassifyRequest(text="kospi")] * 5)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await router.stub.ClassifyBatch(request, timeout=10)
    assert info.value.code() == INVALID
    assert "5 texts; the limit is 4 (router.max_batch_texts)" in (info.value.details() or "")
    assert _violations(info.value)[0][0] == "requests"
    request = pb.ClassifyBatchRequest(requests=[pb.ClassifyRequest(text="kospi")] * 4)
    assert len((await router.stub.ClassifyBatch(request, timeout=10)).responses) == 4


async def test_a_batch_larger_than_the_queue_is_invalid_argument_not_overload(
    serve_router: ServeRouter,
) -> None:
    router = await _router(serve_router, batching={"max_queue": 3})
    request = pb.ClassifyBatchRequest(requests=[pb.ClassifyRequest(text="kospi")] * 4)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await router.stub.ClassifyBatch(request, timeout=10)
    assert info.value.code() == INVALID
    assert "the limit is 3 (batching.max_queue)" in (info.value.details() or "")


async def test_too_many_allowed_labels_is_invalid_argument_with_a_short_message(
    serve_router: ServeRouter,
) -> None:
    router = await _router(serve_router)
    labels = [f"unknown-label-{i}" for i in range(50_000)]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await router.classify("kospi", allowed_labels=labels)
    assert info.value.code() == INVALID
    details = info.value.details() or ""
    assert "50000 labels; the limit is 1000 (router.max_allowed_labels)" in details
    assert len(details) < 300


async def test_unknown_allowed_labels_are_echoed_bounded(serve_router: ServeRouter) -> None:
    router = await _router(serve_router)
    labels = [f"{i:04d}-" + "x" * 2000 for i in range(900)]  # under the limit, 1.8 MB
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await router.classify("kospi", allowed_labels=[*labels, ROWS[0][1]])
    assert info.value.code() == INVALID
    details = info.value.details() or ""
    assert "'0000-xxx" in details and "and 895 more" in details
    assert len(details) < 600
    assert sum(len(k) + len(v) for k, v in info.value.trailing_metadata()) < 4096


@pytest.mark.parametrize("text", ["\x00", "\x00\x00\x00", "\u200b", " \x00\t\u2028\ufeff", "\x7f"])
async def test_a_text_of_only_control_or_format_characters_is_empty(
    serve_router: ServeRouter, text: str
) -> None:
    router = await _router(serve_router)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await router.classify(text)
    assert info.value.code() == INVALID
    assert info.value.details() == "text is empty"
    assert _violations(info.value) == [("text", "text is empty")]


async def test_a_bad_text_in_a_batch_is_named_by_index(serve_router: ServeRouter) -> None:
    router = await _router(serve_router, router={"max_text_chars": 50})
    texts = ["kospi index today", "", "kospi", "x" * 51, "kospi forecast"]
    request = pb.ClassifyBatchRequest(requests=[pb.ClassifyRequest(text=t) for t in texts])
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await router.stub.ClassifyBatch(request, timeout=10)
    assert info.value.code() == INVALID
    details = info.value.details() or ""
    assert details.startswith("requests[1]: text is empty; requests[3]: text has 51 characters")
    assert _violations(info.value) == [
        ("requests[1].text", "text is empty"),
        ("requests[3].text", "text has 51 characters; the limit is 50 (router.max_text_chars)"),
    ]
    assert _count(router, "ClassifyBatch", "INVALID_ARGUMENT") == 1


async def test_every_bad_query_of_a_large_batch_fits_a_short_trailer(
    serve_router: ServeRouter,
) -> None:
    router = await _router(serve_router)
    request = pb.ClassifyBatchRequest(requests=[pb.ClassifyRequest(text="")] * 256)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await router.stub.ClassifyBatch(request, timeout=10)
    assert info.value.code() == INVALID
    assert (info.value.details() or "").endswith("; and 253 more")
    assert len(_violations(info.value)) == 10
    assert sum(len(k) + len(v) for k, v in info.value.trailing_metadata()) < 4096


async def test_an_empty_batch_is_invalid_argument_and_counted(serve_router: ServeRouter) -> None:
    router = await _router(serve_router)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await router.stub.ClassifyBatch(pb.ClassifyBatchRequest(), timeout=10)
    assert info.value.code() == INVALID
    assert info.value.details() == "requests: requests is empty"
    assert _count(router, "ClassifyBatch", "INVALID_ARGUMENT") == 1

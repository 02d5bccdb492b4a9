"""What an operator's Prometheus and tracing backend see of a router: the metrics the
scrape parses (process and Python collectors, stage histograms, series at zero from the
start, no ``_created``), ``/metrics`` and nothing else, and a span per call continuing the
caller's trace with a child span per stage."""

from __future__ import annotations

import asyncio
import sys
import urllib.error
import urllib.request
from typing import Any

import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample
from qroute_server.tracing import Tracing

from qroute.testing import BagOfWordsEncoder
from qroute.v1 import router_pb2 as pb
from tests.integration.conftest import RunningRouter, ServeRouter
from tests.integration.test_decisions import KNN, ROWS


async def _router(serve_router: ServeRouter) -> RunningRouter:
    return await serve_router(
        ROWS, encoder=BagOfWordsEncoder(), nli=False, router=KNN, zero_shot={"method": "off"}
    )


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


async def _scrape(router: RunningRouter, path: str = "/metrics") -> tuple[int, str]:
    url = f"http://127.0.0.1:{router.app.metrics_port}{path}"
    return await asyncio.to_thread(_get, url)


def _samples(text: str) -> list[Sample]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def _value(samples: list[Sample], name: str, **labels: str) -> float | None:
    for sample in samples:
        if sample.name == name and sample.labels == labels:
            return float(sample.value)
    return None


async def test_the_scrape_parses_and_has_collectors_stages_and_zeroed_series(
    serve_router: ServeRouter,
) -> None:
    router = await _router(serve_router)
    status, before = await _scrape(router)
    assert status == 200
    samples = _samples(before)
    names = {s.name for s in samples}
    # Process and Python collectors on the router's own registry.
    assert {"process_cpu_seconds_total", "python_info", "python_gc_objects_collected_total"} <= (
        names
    )
    assert not [n for n in names if n.endswith("_created")]
    # Known series exist at zero before the first call.
    for method in ("Classify", "ClassifyBatch"):
        assert _value(samples, "qroute_requests_total", method=method, code="OK") == 0.0
        assert _value(samples, "qroute_request_duration_seconds_count", method=method) == 0.0
    for path in ("KNN", "ZERO_SHOT", "NO_MATCH"):
        assert _value(samples, "qroute_queries_total", path=path) == 0.0
    assert _value(samples, "qroute_queue_depth") == 0.0

    await router.classify("kospi index today")
    with pytest.raises(grpc.aio.AioRpcError):
        await router.classify("")
    _, after = await _scrape(router)
    samples = _samples(after)
    assert _value(samples, "qroute_requests_total", method="Classify", code="OK") == 1.0
    assert (
        _value(samples, "qroute_requests_total", method="Classify", code="INVALID_ARGUMENT") == 1.0
    )
    assert _value(samples, "qroute_request_duration_seconds_count", method="Classify") == 2.0
    for stage in ("queue_wait", "embed", "search"):
        count = _value(samples, "qroute_stage_duration_seconds_count", stage=stage)
        assert count == 1.0, stage
    # No head in this index, zero-shot off: those stages never ran.
    assert _value(samples, "qroute_stage_duration_seconds_count", stage="head") == 0.0


async def test_only_metrics_answers_other_paths_are_404(serve_router: ServeRouter) -> None:
    router = await _router(serve_router)
    assert (await _scrape(router, "/metrics"))[0] == 200
    for path in ("/", "/healthz", "/metrics/x"):
        assert (await _scrape(router, path))[0] == 404, path


TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


async def test_a_call_is_a_span_under_the_callers_trace_with_stage_children(
    serve_router: ServeRouter,
) -> None:
    router = await _router(serve_router)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    router.app.metrics.tracing = Tracing(provider)
    metadata: Any = (("traceparent", f"00-{TRACE_ID}-{PARENT_ID}-01"),)
    await asyncio.gather(
        router.stub.Classify(pb.ClassifyRequest(text="kospi index today"), metadata=metadata),
        router.stub.Classify(pb.ClassifyRequest(text="kospi forecast"), metadata=metadata),
    )
    spans = exporter.get_finished_spans()
    calls = [s for s in spans if s.name == "qroute.v1.RouterService/Classify"]
    assert len(calls) == 2
    for call in calls:
        assert call.context is not None and call.parent is not None
        assert format(call.context.trace_id, "032x") == TRACE_ID
        assert format(call.parent.span_id, "016x") == PARENT_ID
        assert call.attributes is not None and call.attributes["rpc.grpc.status_code"] == 0
        children = {
            s.name
            for s in spans
            if s.parent is not None and s.parent.span_id == call.context.span_id
        }
        assert {"queue_wait", "embed", "search"} <= children, children
    provider.shutdown()


def test_otlp_tracing_without_the_exporter_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from qroute.errors import MissingDependency

    # As if qroute[tracing] were not installed (None in sys.modules fails the import).
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.grpc.trace_exporter", None)
    with pytest.raises(MissingDependency, match=r"qroute\[tracing\]"):
        Tracing.from_setting("otlp")

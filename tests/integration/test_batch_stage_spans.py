"""A stage runs once per micro-batch: a ClassifyBatch call whose texts were handled in one
model batch gets one span per stage (queue_wait stays per text), not one per text."""

from __future__ import annotations

from collections import Counter

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from qroute_server.tracing import Tracing

from qroute.v1 import router_pb2 as pb
from tests.integration.conftest import ServeRouter
from tests.integration.test_observability import _router


async def test_a_batch_call_gets_one_span_per_stage_not_one_per_text(
    serve_router: ServeRouter,
) -> None:
    router = await _router(serve_router)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    router.app.metrics.tracing = Tracing(provider)
    texts = [f"kospi index {i}" for i in range(8)]  # under batching.max_batch_size: one batch
    request = pb.ClassifyBatchRequest(requests=[pb.ClassifyRequest(text=t) for t in texts])
    await router.stub.ClassifyBatch(request, timeout=30)
    spans = exporter.get_finished_spans()
    [call] = [s for s in spans if s.name == "qroute.v1.RouterService/ClassifyBatch"]
    assert call.context is not None
    children = Counter(
        s.name for s in spans if s.parent is not None and s.parent.span_id == call.context.span_id
    )
    assert children["queue_wait"] == len(texts)
    assert children["embed"] == 1 and children["search"] == 1, children
    provider.shutdown()

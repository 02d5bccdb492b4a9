"""OpenTelemetry tracing of the router (``server.tracing``; the ``[tracing]`` extra).

A span per RouterService call, continuing the caller's trace from the W3C
``traceparent`` metadata, with a child span per serving stage (queue_wait, embed,
search, head, zero_shot). The stages run once per micro-batch, for several calls at once:
each call of the batch gets its own copy of the stage's span. The core knows nothing of
this: the stage times come through its timing hook (``qroute.types.Observe``).

The tracer provider is this router's own, not the process-global one.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Literal

import grpc
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from qroute.hub import optional_import
from qroute.routing.batching import batch_contexts
from qroute.types import StageTime

__all__ = ["Tracing"]

_PROPAGATOR = TraceContextTextMapPropagator()


class Tracing:
    def __init__(self, provider: TracerProvider) -> None:
        self._provider = provider
        self._tracer = provider.get_tracer("qroute_server")

    @classmethod
    def from_setting(cls, mode: Literal["console", "otlp"]) -> Tracing:
        """``console``: spans as JSON on stdout; ``otlp``: to the collector named by the
        standard ``OTEL_EXPORTER_OTLP_*`` variables (needs ``qroute[tracing]``)."""
        if mode == "otlp":
            module = optional_import(
                "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
                "tracing",
                "server.tracing: otlp",
            )
            exporter = module.OTLPSpanExporter()
        else:
            exporter = ConsoleSpanExporter()
        provider = TracerProvider(resource=Resource.create({"service.name": "qroute-router"}))
        provider.add_span_processor(BatchSpanProcessor(exporter))
        return cls(provider)

    @contextlib.contextmanager
    def request(
        self, method: str, metadata: Sequence[tuple[str, str | bytes]] | None
    ) -> Iterator[trace.Span]:
        """The span of one call, current while the call runs (so that the batcher's
        copy of the caller's context carries it)."""
        carrier = {k: v for k, v in metadata or () if isinstance(v, str)}
        parent = _PROPAGATOR.extract(carrier)
        with self._tracer.start_as_current_span(
            f"qroute.v1.RouterService/{method}",
            context=parent,
            kind=SpanKind.SERVER,
            attributes={
                "rpc.system": "grpc",
                "rpc.service": "qroute.v1.RouterService",
                "rpc.method": method,
            },
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            yield span

    @staticmethod
    def finish(span: trace.Span, code: grpc.StatusCode) -> None:
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code is not grpc.StatusCode.OK:
            span.set_status(Status(StatusCode.ERROR, code.name))

    def stage(self, timing: StageTime) -> None:
        """A finished span for ``timing`` under each call the batch served."""
        for context in batch_contexts():
            context.run(self._stage_span, timing)

    def _stage_span(self, timing: StageTime) -> None:
        span = self._tracer.start_span(timing.stage.value, start_time=timing.start_ns)
        span.end(end_time=timing.end_ns)

    def close(self) -> None:
        """Export what is buffered, then stop."""
        self._provider.shutdown()

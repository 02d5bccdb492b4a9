"""Prometheus metrics of one router, in its own registry (no process-global state), and
the gRPC server interceptor that counts and times every RouterService call.

Zero-shot rate: ``rate(qroute_zero_shot_queries_total[5m]) / rate(qroute_queries_total[5m])``.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from contextlib import nullcontext
from socketserver import ThreadingMixIn
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import grpc
import prometheus_client
from prometheus_client import (
    GC_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    make_wsgi_app,
)

from qroute.routing.review import RECORD_RESULTS
from qroute.routing.shadow import OUTCOMES as SHADOW_OUTCOMES
from qroute.types import Decision, FallbackReason, Prediction, Stage, StageTime
from qroute.v1 import router_pb2

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

    from .tracing import Tracing

    Handler = grpc.RpcMethodHandler[Any, Any]

__all__ = ["METHODS", "Metrics", "MetricsInterceptor"]

_SERVICE = router_pb2.DESCRIPTOR.services_by_name["RouterService"]
METHODS = tuple(method.name for method in _SERVICE.methods)

# `_created` series double the sample count and no dashboard reads them. The switch is
# process-wide in prometheus_client; a router process has only this registry.
prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
del GC_COLLECTOR  # the global registry's; ours registers its own

_SECONDS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10)
_STAGE_SECONDS = (0.0005, 0.001, *_SECONDS)


def _learning(registry: CollectorRegistry) -> tuple[Counter, Counter]:
    """The review queue's and the shadow candidate's counters, every series at 0."""
    shadow = Counter(
        "qroute_shadow",
        "Live answers given to the shadow candidate, by outcome (agree, disagree, "
        "dropped: its queue was full, error: it failed)",
        ["outcome"],
        registry=registry,
    )
    records = Counter(
        "qroute_review_records",
        "Review-queue records by result (written, dropped: queue full, failed: store error)",
        ["result"],
        registry=registry,
    )
    for outcome in SHADOW_OUTCOMES:
        shadow.labels(outcome)
    for result in RECORD_RESULTS:
        records.labels(result)
    return shadow, records


class Metrics:
    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        self._http: WSGIServer | None = None
        self.tracing: Tracing | None = None
        self.requests = Counter(
            "qroute_requests", "RPCs by method and status code", ["method", "code"],
            registry=registry,
        )  # fmt: skip
        self.latency = Histogram(
            "qroute_request_duration_seconds",
            "RPC latency, from the call's arrival to its status",
            ["method"],
            registry=registry,
            buckets=_SECONDS,
        )
        self.stages = Histogram(
            "qroute_stage_duration_seconds",
            "Time per serving stage: queue_wait per text; embed, search, head and "
            "zero_shot per model batch",
            ["stage"],
            registry=registry,
            buckets=_STAGE_SECONDS,
        )
        self.queue_depth = Gauge(
            "qroute_queue_depth", "Texts waiting for the micro-batcher", registry=registry
        )
        self.queries = Counter(
            "qroute_queries", "Classified texts by decision path", ["path"], registry=registry
        )
        self.fallbacks = Counter(
            "qroute_fallbacks", "Texts that left kNN, by reason", ["reason"], registry=registry
        )
        self.zero_shot = Counter(
            "qroute_zero_shot_queries",
            "Texts scored by the zero-shot scorer",
            ["method"],
            registry=registry,
        )
        self.batch_size = Histogram(
            "qroute_batch_size",
            "Texts per model batch",
            registry=registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
        )
        self.cache = Counter(
            "qroute_cache",
            "Result-cache lookups per text, by result (hit: answered without the models)",
            ["result"],
            registry=registry,
        )
        self.cache_entries = Gauge(
            "qroute_cache_entries", "Predictions in the result cache", registry=registry
        )
        self.reloads = Counter(
            "qroute_config_reloads", "Config reloads by result", ["result"], registry=registry
        )
        self.index = Info("qroute_index", "The index version being served", registry=registry)
        self.index_refresh_failures = Counter(
            "qroute_index_refresh_failures",
            "Failed looks for a newly published index version, by reason (the version in "
            "use keeps serving)",
            ["reason"],
            registry=registry,
        )
        self.config = Info("qroute_config", "The config version being served", registry=registry)
        self.shadow, self.review_records = _learning(registry)
        self._start_at_zero()

    def _start_at_zero(self) -> None:
        # Series that exist from the start at 0, so that rate() and alerts see the first
        # increment instead of a series appearing out of nothing.
        for method in METHODS:
            self.requests.labels(method, grpc.StatusCode.OK.name)
            self.latency.labels(method)
        for stage in Stage:
            self.stages.labels(stage.value)
        for decision in Decision:
            self.queries.labels(decision.value)
        for reason in FallbackReason:
            self.fallbacks.labels(reason.value)
        for result in ("applied", "rejected"):
            self.reloads.labels(result)
        for result in ("hit", "miss"):
            self.cache.labels(result)

    def observe(self, predictions: list[Prediction]) -> None:
        for prediction in predictions:
            self.queries.labels(prediction.decision.value).inc()
            for reason in prediction.fallback_reasons:
                self.fallbacks.labels(reason.value).inc()
            if prediction.zero_shot_method:
                self.zero_shot.labels(prediction.zero_shot_method).inc()

    def cache_lookup(self, result: str) -> None:
        """The Router's result-cache hook: one lookup, "hit" or "miss"."""
        self.cache.labels(result).inc()

    def stage(self, timing: StageTime) -> None:
        """The core's timing hook (``qroute.types.Observe``): a histogram sample, and a
        span under each request of the batch when tracing is on."""
        self.stages.labels(timing.stage.value).observe(timing.seconds)
        if self.tracing is not None:
            self.tracing.stage(timing)

    def serve(self, host: str, port: int) -> int:
        """Expose ``/metrics`` over HTTP in a daemon thread (every other path: 404, so
        that an HTTP probe pointed at the wrong path fails); returns the bound port."""
        metrics = make_wsgi_app(self.registry)

        def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
            if environ.get("PATH_INFO") == "/metrics":
                body: Iterable[bytes] = metrics(environ, start_response)
                return body
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"not found: the metrics are on /metrics\n"]

        server_class = _IPv6Server if ":" in host else _Server
        self._http = make_server(host, port, app, server_class, _QuietHandler)
        threading.Thread(
            target=self._http.serve_forever, name="qroute-metrics", daemon=True
        ).start()
        return int(self._http.server_port)

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _IPv6Server(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """A scrape every few seconds is not worth a log line."""


Behavior = Callable[[Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts every RouterService call by method and final status code, times it, and
    (tracing on) runs it in a span continuing the caller's W3C ``traceparent``.

    The status is read from the context after the handler ran, so a call the servicer
    aborted (a malformed request, an invalid field, a deadline) is counted with its code."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(details)
        service, _, method = details.method.lstrip("/").rpartition("/")
        if handler is None or service != _SERVICE.full_name or handler.unary_unary is None:
            return handler
        return grpc.unary_unary_rpc_method_handler(
            self._observed(method, handler.unary_unary, details.invocation_metadata),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )

    def _observed(self, method: str, behavior: Callable[..., Any], metadata: Any) -> Behavior:
        metrics = self._metrics

        async def observed(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            tracing = metrics.tracing
            done: list[grpc.StatusCode] = []

            def finish(code: grpc.StatusCode) -> None:
                if done:
                    return
                done.append(code)
                metrics.requests.labels(method, code.name).inc()
                metrics.latency.labels(method).observe(time.perf_counter() - started)
                if tracing is not None and span is not None:
                    tracing.finish(span, code)

            with tracing.request(method, metadata) if tracing else nullcontext() as span:
                try:
                    response = await behavior(request, _Observed(context, finish))
                except BaseException as exc:
                    # Not an abort (that was counted as it went out): CANCELLED when the
                    # client went away, UNKNOWN when something raised out of the servicer.
                    finish(
                        _code(context)
                        or (
                            grpc.StatusCode.CANCELLED
                            if isinstance(exc, asyncio.CancelledError)
                            else grpc.StatusCode.UNKNOWN
                        )
                    )
                    raise
                finish(_code(context) or grpc.StatusCode.OK)
                return response

        return observed


class _Observed:
    """The call's context, counting an abort before it goes out: grpc's aio ``abort``
    sends the status at once, so a count taken after it would lag the client's answer."""

    def __init__(
        self, context: grpc.aio.ServicerContext[Any, Any], finish: Callable[[grpc.StatusCode], None]
    ) -> None:
        self._context = context
        self._finish = finish

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    async def abort(
        self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()
    ) -> None:
        self._finish(code)
        await self._context.abort(code, details, trailing_metadata)


def _code(context: grpc.aio.ServicerContext[Any, Any]) -> grpc.StatusCode | None:
    code: Any = context.code()
    if code is None or isinstance(code, grpc.StatusCode):
        return code
    # grpc's aio context can hold the raw number.
    return _BY_NUMBER.get(int(code), grpc.StatusCode.UNKNOWN)


_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}

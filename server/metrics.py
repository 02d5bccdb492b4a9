"""Prometheus metrics of one router, in its own registry (no process-global state).

Zero-shot rate: ``rate(qroute_zero_shot_queries_total[5m]) / rate(qroute_queries_total[5m])``.
"""

from __future__ import annotations

from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, Info, start_http_server

from qroute.types import Prediction

__all__ = ["Metrics"]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._http: WSGIServer | None = None
        self.requests = Counter(
            "qroute_requests",
            "RPCs by method and status code",
            ["method", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "qroute_request_seconds",
            "RPC latency",
            ["method"],
            registry=self.registry,
            buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10),
        )
        self.queries = Counter(
            "qroute_queries", "Classified texts by decision path", ["path"], registry=self.registry
        )
        self.fallbacks = Counter(
            "qroute_fallbacks", "Texts that left kNN, by reason", ["reason"], registry=self.registry
        )
        self.zero_shot = Counter(
            "qroute_zero_shot_queries",
            "Texts scored by the zero-shot scorer",
            ["method"],
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "qroute_batch_size",
            "Texts per model batch",
            registry=self.registry,
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
        )
        self.reloads = Counter(
            "qroute_config_reloads", "Config reloads by result", ["result"], registry=self.registry
        )
        self.index = Info("qroute_index", "The index version being served", registry=self.registry)
        self.index_refresh_failures = Counter(
            "qroute_index_refresh_failures",
            "Failed looks for a newly published index version, by reason (the version in "
            "use keeps serving)",
            ["reason"],
            registry=self.registry,
        )
        self.shadow = Counter(
            "qroute_shadow",
            "Live answers given to the shadow candidate, by outcome (agree, disagree, "
            "dropped: its queue was full, error: it failed)",
            ["outcome"],
            registry=self.registry,
        )
        self.review_records = Counter(
            "qroute_review_records",
            "Review-queue records by result (written, dropped: queue full, failed: store error)",
            ["result"],
            registry=self.registry,
        )
        self.config = Info(
            "qroute_config", "The config version being served", registry=self.registry
        )

    def observe(self, predictions: list[Prediction]) -> None:
        for prediction in predictions:
            self.queries.labels(prediction.decision.value).inc()
            for reason in prediction.fallback_reasons:
                self.fallbacks.labels(reason.value).inc()
            if prediction.zero_shot_method:
                self.zero_shot.labels(prediction.zero_shot_method).inc()

    def serve(self, host: str, port: int) -> int:
        """Expose /metrics over HTTP in a daemon thread; returns the bound port."""
        self._http, _ = start_http_server(port, addr=host, registry=self.registry)
        return int(self._http.server_port)

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None

"""Wire the router process: gRPC service, standard health and reflection, metrics, the
micro-batcher, the index follower and the config watcher, graceful shutdown.

The mutable state of a router lives here and nowhere else: the Classifier in use (one
reference, swapped whole on a config reload or replaced index) and the tasks around it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from qroute.config import Settings
from qroute.errors import (
    BindError,
    IndexCorrupt,
    IndexRejected,
    NotReady,
    QrouteError,
)
from qroute.routing.batching import MicroBatcher
from qroute.routing.classifier import Classifier
from qroute.routing.learning import FeedbackLoop
from qroute.routing.review import Feedback
from qroute.routing.router import Router
from qroute.types import IndexInfo, Prediction, Query
from qroute.v1 import router_pb2

from .auth import TokenAuthInterceptor, TokenFile
from .drain import Drain
from .metrics import Metrics, MetricsInterceptor
from .reflection import enable_reflection
from .reload import ConfigWatcher
from .servicer import RouterServicer, add_to_server
from .tls import CertificateFiles, is_loopback
from .workers import Readiness, limit_intra_op_threads, metrics_port_of, supervise

__all__ = ["SERVICE_NAME", "RouterApp", "run", "serve"]

log = logging.getLogger(__name__)

# A stopping router holds new calls until none arrived for this long (at most
# _HOLD_LIMIT_S) before gRPC's stop begins (see server/drain.py); longer than the pause
# of a caller that retries a refused call at once, shorter than any client deadline.
_QUIET_S = 0.2
_HOLD_LIMIT_S = 1.0
# Between the start of gRPC's stop and the release of the held calls: GOAWAY goes out on
# every connection first, so a caller's retry opens a new (refused) connection.
_GOAWAY_S = 0.05
# How often a worker looks whether the other workers of its router still serve.
_WORKERS_POLL_S = 0.2

SERVICE_NAME = router_pb2.DESCRIPTOR.services_by_name["RouterService"].full_name


class RouterApp:
    """One router process. ``start`` binds the port with health NOT_SERVING; ``load``
    brings the classifier up; health turns SERVING once an index is published.

    ``readiness``: this router as one worker of several on one port (server.workers,
    see qroute_server.workers): health is SERVING only while every worker serves."""

    def __init__(
        self,
        settings: Settings,
        config_path: Path | None = None,
        *,
        readiness: Readiness | None = None,
    ) -> None:
        self.settings = settings
        self.config_path = config_path
        self.metrics = Metrics()
        self.metrics.config.info({"version": settings.version})
        if settings.server.tracing != "off":
            from .tracing import Tracing

            self.metrics.tracing = Tracing.from_setting(settings.server.tracing)
        self.metrics_port: int | None = None
        self.health = health.aio.HealthServicer()
        auth = settings.server.auth
        self.tokens = TokenFile(auth.tokens_file) if auth.tokens_file is not None else None
        # Cross-cutting request concerns, outermost first: each sees a call before the
        # ones after it (auth refuses before any work is done).
        # Metrics first, so that calls auth refuses are counted too.
        # The drain outermost: a call it holds at shutdown has not started its handler.
        self.drain = Drain()
        interceptors: list[grpc.aio.ServerInterceptor] = [
            self.drain,
            MetricsInterceptor(self.metrics),
        ]
        if self.tokens is not None:
            interceptors.append(TokenAuthInterceptor(self.tokens))
        self.readiness = readiness or Readiness.single()
        self._serving: bool | None = None  # what health says now
        # gRPC sets SO_REUSEPORT by default: a second router on the same port would
        # start without an error and take half of the connections. Only the workers of
        # one router share a port, deliberately (their supervisor checked it was free).
        shared = int(self.readiness.count > 1)
        self.server = grpc.aio.server(
            interceptors=interceptors, options=[("grpc.so_reuseport", shared)]
        )
        self.port = 0
        self.router = Router(
            settings.batching,
            on_batch=self.metrics.batch_size.observe,
            observe=self.metrics.stage,
            on_cache=self.metrics.cache_lookup,
        )
        self.metrics.queue_depth.set_function(lambda: self.router.batcher.waiting)
        self.metrics.cache_entries.set_function(lambda: len(self.router.cache))
        self._tasks: list[asyncio.Task[None]] = []
        # The review queue and the shadow candidate (docs/review.md), built by load().
        self.learning: FeedbackLoop | None = None
        # The last index refresh failure logged ("Type: message"), None once it works.
        self._refresh_failure: str | None = None
        # Made now, not once the models are loaded: the watcher takes the file's content
        # when it is made as the one running, so a change made while the models load
        # (minutes for a hub download) would never be applied.
        self._watcher = (
            ConfigWatcher(
                config_path,
                lambda: self.settings.server.config_poll_s,
                self.apply_settings,
                lambda reason: self.metrics.reloads.labels("rejected").inc(),
            )
            if config_path is not None
            else None
        )

    @property
    def classifier(self) -> Classifier | None:
        """The classifier serving now (None while the models load)."""
        return self.router.classifier

    @property
    def batcher(self) -> MicroBatcher[Query, Prediction]:
        return self.router.batcher

    async def classify(self, queries: Sequence[Query], deadline: float | None) -> list[Prediction]:
        """What the servicer calls: the core Router's answer (see qroute.routing.router),
        each with a fresh ``request_id``; the review queue and the shadow candidate get
        theirs queued, never awaited."""
        predictions = await self.router.classify(queries, deadline)
        learning = self.learning
        return learning.observe(queries, predictions) if learning else predictions

    def index_info(self) -> IndexInfo:
        """What this router serves (GetIndexInfo). Raises NotReady, NotIndexed."""
        return self.router.current().index_info()

    async def feedback(self, feedback: Feedback) -> None:
        """Queue a caller's feedback for review. Raises FeatureDisabled, InvalidQuery,
        NotReady, Overloaded."""
        self.router.current()  # NotReady while loading or shutting down
        if self.learning is None:
            raise NotReady("the router is still loading its models")
        await self.learning.feedback(feedback)

    async def start(self, bind: str | None = None) -> int:
        server = self.settings.server
        # Read before binding: a missing token or certificate file ends the start.
        if self.tokens is not None:
            self.tokens.load()
        credentials = CertificateFiles(server.tls).credentials() if server.tls.enabled else None
        add_to_server(
            RouterServicer(
                self.classify,
                self.metrics,
                self.index_info,
                lambda: self.settings.router.return_texts,
                self.feedback,
            ),
            self.server,
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        if server.reflection_enabled:
            enable_reflection((SERVICE_NAME, health.SERVICE_NAME), self.server)
        address = bind or server.bind
        try:
            # A port that is not a number is caught here, before grpc logs its own lines.
            valid = address.startswith("unix:") or 0 <= int(address.rpartition(":")[2]) <= 65535
            if not valid:
                self.port = 0
            elif credentials is not None:
                self.port = self.server.add_secure_port(address, credentials)
            else:
                self.port = self.server.add_insecure_port(address)
        except (ValueError, RuntimeError):  # RuntimeError: grpc's "Failed to bind"
            self.port = 0
        if self.port == 0:
            raise BindError(
                f"cannot bind the router to {address!r} (server.bind, QROUTE_SERVER__BIND): "
                "use HOST:PORT with a local address and a free port (another router may "
                "be listening on it)"
            )
        await self._set_health(serving=False)
        await self.server.start()
        metrics = self.settings.server
        metrics_port = metrics_port_of(self.settings, self.readiness.index)
        if metrics_port is not None:
            try:
                self.metrics_port = self.metrics.serve(metrics.metrics_host, metrics_port)
            except OSError as exc:
                await self.server.stop(None)
                raise BindError(
                    f"cannot serve metrics on {metrics.metrics_host}:{metrics_port} "
                    f"({exc.strerror}): set server.metrics_port (QROUTE_SERVER__METRICS_PORT) "
                    "to a free port, 0 for any, or null for no metrics"
                ) from None
        self.metrics.config.info({"version": self.settings.version})
        if self.readiness.count > 1:
            self._tasks.append(asyncio.create_task(self._follow_workers(), name="qroute-workers"))
        log.info(
            "router%s listening on %s (port %d, %s, %s), metrics on port %s",
            f" worker {self.readiness.index}/{self.readiness.count}"
            if self.readiness.count > 1
            else "",
            address,
            self.port,
            ("mTLS" if server.tls.client_ca_file else "TLS") if credentials else "plaintext",
            "token auth" if self.tokens is not None else "no auth",
            self.metrics_port,
        )
        if credentials is None and not is_loopback(address):
            log.warning(
                "serving plaintext on %s: whoever reaches it can read calls and answers "
                "on the way; set server.tls.cert_file and key_file (docs/serving.md#security)",
                address,
            )
        return self.port

    async def load(self, classifier: Classifier | Callable[[], Classifier] | None = None) -> None:
        """Install a classifier (built from settings unless given), then follow the index
        and the config file."""
        if not isinstance(classifier, Classifier):
            factory = classifier or (lambda: Classifier.from_settings(self.settings))
            classifier = await _on_daemon_thread(factory)
        classifier.observe = self.metrics.stage  # reconfigured clones keep it
        self.router.install(classifier)
        warning = classifier.tuning_warning()
        if warning:
            log.warning("%s", warning)
        self.router.start()
        self.learning = FeedbackLoop(
            self.settings,
            lambda: self.router.classifier,
            on_shadow=lambda outcome, n: self.metrics.shadow.labels(outcome).inc(n),
            on_review=lambda result, n: self.metrics.review_records.labels(result).inc(n),
        )
        self.learning.start()
        await self.follow_index_once(at_start=True)
        self._tasks.append(asyncio.create_task(self._follow_index(), name="qroute-index"))
        if self._watcher is not None:
            self._tasks.append(asyncio.create_task(self._watcher.run(), name="qroute-config"))

    async def apply_settings(self, new: Settings) -> None:
        """Hot-reload: swap in a classifier on ``new``, keeping restart-only sections."""
        assert self.classifier is not None
        new, kept = self.settings.reloaded(new)
        if kept:
            log.warning("config changes to %s need a restart; running values kept", kept)
        nli = None
        if new.zero_shot.method == "nli" and self.classifier.nli is None:
            from qroute.hub import nli_alternative
            from qroute.routing.zeroshot import NLIZeroShot

            without = nli_alternative(new.retrieval.mode)
            nli = await asyncio.to_thread(lambda: NLIZeroShot(new.nli, without=without))
        self.router.install(self.classifier.reconfigure(new, nli))
        self.settings = new
        self.metrics.config.info({"version": new.version})
        self.metrics.reloads.labels("applied").inc()
        log.info("config reloaded: version %s", new.version)

    async def follow_index_once(self, *, at_start: bool = False) -> None:
        """Pick up a newly published index version and report health accordingly.
        A failure is logged (once per distinct cause), counted, and retried on the next
        poll while the version in use keeps serving. ``at_start``: a published version
        whose own files cannot be read (IndexCorrupt) ends the start instead."""
        classifier = self.classifier
        assert classifier is not None
        try:
            index = await classifier.refresh_index()
        except Exception as exc:
            if at_start and isinstance(exc, IndexCorrupt):
                raise
            index = classifier.index
            self._refresh_failed(exc, index.version if index is not None else None)
        else:
            if self._refresh_failure is not None:
                log.info(
                    "index refresh recovered: serving %s",
                    index.version if index is not None else "no index yet",
                )
                self._refresh_failure = None
        if index is not None:
            self.metrics.index.info({"version": index.version})
        await self._set_health(serving=index is not None)

    def _refresh_failed(self, exc: Exception, serving: str | None) -> None:
        reason = exc.reason if isinstance(exc, IndexRejected) else type(exc).__name__
        self.metrics.index_refresh_failures.labels(reason).inc()
        cause = f"{type(exc).__name__}: {exc}"
        if cause == self._refresh_failure:
            return  # said already; the poll repeats every few seconds
        self._refresh_failure = cause
        kept = f"still serving {serving}" if serving else "nothing to serve: health NOT_SERVING"
        if isinstance(exc, QrouteError):
            log.warning("cannot refresh the index (%s): %s", kept, exc)
        else:
            log.error("cannot refresh the index (%s)", kept, exc_info=exc)

    async def _follow_index(self) -> None:
        while True:
            await asyncio.sleep(self.settings.server.index_poll_s)
            await self.follow_index_once()

    async def _set_health(self, *, serving: bool) -> None:
        """This router serves or not (never once it stopped accepting calls: the index
        follower still runs while it drains); health says SERVING while every worker
        does."""
        serving = serving and self.router.accepting
        self.readiness.set(serving)
        serving = serving and self.readiness.all_serving()
        if serving == self._serving:
            return
        self._serving = serving
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in ("", SERVICE_NAME):
            await self.health.set(service, status)

    async def _follow_workers(self) -> None:
        # Another worker starting, losing its index or stopping changes what this one says.
        while True:
            await asyncio.sleep(_WORKERS_POLL_S)
            index = self.classifier.index if self.classifier is not None else None
            await self._set_health(serving=index is not None)

    async def stop(self, grace: float | None = None) -> None:
        """Stop gracefully: health NOT_SERVING and new calls refused (UNAVAILABLE) at
        once; accepted calls get ``grace`` seconds (default ``server.shutdown_grace_s``)
        to finish, while the batcher, the classifier and the followers still run."""
        if grace is None:
            grace = self.settings.server.shutdown_grace_s
        loop = asyncio.get_running_loop()
        until = loop.time() + grace
        self.readiness.set(False)
        self.router.stop_accepting()
        await self.health.enter_graceful_shutdown()
        await self.router.drained(grace)
        # gRPC's own stop cancels the calls on their way in (grpc/grpc#41785): first hold
        # new calls until callers wait on us and none is on the way, then stop gRPC
        # (GOAWAY), then answer the held calls (UNAVAILABLE).
        hold = min(_HOLD_LIMIT_S, until - loop.time() - _GOAWAY_S)
        if hold > 0 and not await self.drain.hold_until_quiet(_QUIET_S, hold):
            log.warning("calls kept arriving while stopping: gRPC may cancel the last ones")
        # What is left of the grace, and a moment for answers still being sent.
        left = max(until - loop.time(), min(grace, 0.5))
        stopping = asyncio.ensure_future(self.server.stop(left))
        await asyncio.sleep(_GOAWAY_S)
        self.drain.release()
        await stopping
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # The shadow candidate shares the classifier's models: stop it first.
        if self.learning is not None:
            await self.learning.stop()
        await self.router.stop()
        self.metrics.close()
        if self.metrics.tracing is not None:
            self.metrics.tracing.close()


def run(settings: Settings, config_path: Path | None = None) -> int:
    """``qroute serve``: one router in this process, or ``server.workers`` router
    processes on one port under a supervisor (qroute_server.workers). The exit code."""
    if settings.server.worker_count > 1:
        return supervise(settings, config_path)
    asyncio.run(serve(settings, config_path))
    return 0


async def _on_daemon_thread(work: Callable[[], Classifier]) -> Classifier:
    """``work()`` on a daemon thread: asyncio.to_thread's pool is joined when the
    interpreter exits, so a router stopped while its models load would wait for them."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Classifier] = loop.create_future()

    def settle(result: Classifier | None, error: BaseException | None) -> None:
        if done.cancelled():
            return
        if error is not None:
            done.set_exception(error)
        else:
            assert result is not None
            done.set_result(result)

    def run() -> None:
        try:
            result, error = work(), None
        except BaseException as exc:  # handed to the awaiting task, which raises it
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=run, name="qroute-load", daemon=True).start()
    return await done


async def serve(
    settings: Settings,
    config_path: Path | None = None,
    *,
    bind: str | None = None,
    readiness: Readiness | None = None,
) -> None:
    """Run the router until SIGINT/SIGTERM. Model load failures end the process."""
    limit_intra_op_threads(settings.server.intra_op_threads)
    app = RouterApp(settings, config_path, readiness=readiness)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(sig: signal.Signals) -> None:
        if not stop.is_set():
            log.info(
                "%s: refusing new calls, finishing accepted ones (up to %.1f s, "
                "server.shutdown_grace_s)",
                sig.name,
                app.settings.server.shutdown_grace_s,
            )
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        # Inside the try: a failed start (metrics port taken) still stops the gRPC server.
        await app.start(bind)
        # A stop while the models load (minutes for a hub download) ends the start: it
        # does not wait for the load, whose thread the interpreter does not join.
        loading = asyncio.ensure_future(app.load())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({loading, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not loading.done():
            log.info("stopped while loading the models: nothing was serving yet")
            loading.cancel()
            return
        stopping.cancel()
        loading.result()  # a failed load ends the process
        if app.classifier is not None and app.classifier.index is None:
            log.warning("no index published yet: health stays NOT_SERVING until `qroute index`")
        await stop.wait()
    finally:
        await app.stop()

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
from collections.abc import Callable, Sequence
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from qroute.config import RESTART_ONLY, Settings
from qroute.errors import ConfigError, IndexCorrupt, NotReady, QrouteError
from qroute.routing.batching import MicroBatcher
from qroute.routing.classifier import Classifier
from qroute.types import Prediction, Query
from qroute.v1 import router_pb2, router_pb2_grpc

from .metrics import Metrics
from .reload import ConfigWatcher
from .servicer import RouterServicer

__all__ = ["SERVICE_NAME", "RouterApp", "serve"]

log = logging.getLogger(__name__)

SERVICE_NAME = router_pb2.DESCRIPTOR.services_by_name["RouterService"].full_name


class RouterApp:
    """One router process. ``start`` binds the port with health NOT_SERVING; ``load``
    brings the classifier up; health turns SERVING once an index is published."""

    def __init__(self, settings: Settings, config_path: Path | None = None) -> None:
        self.settings = settings
        self.config_path = config_path
        self.classifier: Classifier | None = None
        self.metrics = Metrics()
        self.metrics_port: int | None = None
        self.health = health.aio.HealthServicer()
        self.server = grpc.aio.server()
        self.port = 0
        self.batcher: MicroBatcher[Query, Prediction] = MicroBatcher(
            self._classify_batch,
            max_batch_size=settings.batching.max_batch_size,
            max_wait_s=settings.batching.max_wait_ms / 1000,
            max_queue=settings.batching.max_queue,
            on_batch=self.metrics.batch_size.observe,
        )
        self._tasks: list[asyncio.Task[None]] = []

    async def _classify_batch(self, queries: list[Query]) -> list[Prediction]:
        # Whatever classifier is current when the batch runs: a reload never
        # splits a batch between two configs.
        assert self.classifier is not None
        return await self.classifier.classify(queries)

    async def classify(self, queries: Sequence[Query], deadline: float | None) -> list[Prediction]:
        classifier = self.classifier
        if classifier is None:
            raise NotReady("the router is still loading its models")
        for query in queries:
            classifier.validate(query)
        return await self.batcher.submit(queries, deadline)

    async def start(self, bind: str | None = None) -> int:
        servicer = RouterServicer(self.classify, self.metrics)
        router_pb2_grpc.add_RouterServiceServicer_to_server(servicer, self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        address = bind or self.settings.server.bind
        try:
            # A port that is not a number is caught here, before grpc logs its own lines.
            valid = address.startswith("unix:") or 0 <= int(address.rpartition(":")[2]) <= 65535
            self.port = self.server.add_insecure_port(address) if valid else 0
        except (ValueError, RuntimeError):  # RuntimeError: grpc's "Failed to bind to address"
            self.port = 0
        if self.port == 0:
            raise ConfigError(
                f"cannot bind the router to {address!r} (server.bind, QROUTE_SERVER__BIND): "
                "use HOST:PORT with a port that is free"
            )
        await self._set_health(serving=False)
        await self.server.start()
        if self.settings.server.metrics_port is not None:
            host, metrics = self.settings.server.metrics_host, self.settings.server.metrics_port
            try:
                self.metrics_port = self.metrics.serve(host, metrics)
            except OSError as exc:
                raise ConfigError(
                    f"cannot serve metrics on {host}:{metrics} ({exc.strerror}): set "
                    "server.metrics_port (QROUTE_SERVER__METRICS_PORT) to a free port, 0 for "
                    "any, or null for no metrics"
                ) from None
        self.metrics.config.info({"version": self.settings.version})
        log.info(
            "router listening on %s (port %d), metrics on port %s",
            address,
            self.port,
            self.metrics_port,
        )
        return self.port

    async def load(self, classifier: Classifier | Callable[[], Classifier] | None = None) -> None:
        """Install a classifier (built from settings unless given), then follow the index
        and the config file."""
        if not isinstance(classifier, Classifier):
            factory = classifier or (lambda: Classifier.from_settings(self.settings))
            classifier = await asyncio.to_thread(factory)
        self.classifier = classifier
        warning = classifier.tuning_warning()
        if warning:
            log.warning("%s", warning)
        self.batcher.start()
        await self.follow_index_once(at_start=True)
        self._tasks.append(asyncio.create_task(self._follow_index(), name="qroute-index"))
        if self.config_path is not None:
            watcher = ConfigWatcher(
                self.config_path,
                lambda: self.settings.server.config_poll_s,
                self.apply_settings,
                lambda reason: self.metrics.reloads.labels("rejected").inc(),
            )
            self._tasks.append(asyncio.create_task(watcher.run(), name="qroute-config"))

    async def apply_settings(self, new: Settings) -> None:
        """Hot-reload: swap in a classifier on ``new``, keeping restart-only sections."""
        assert self.classifier is not None
        old = self.settings
        changed = old.restart_only_changes(new)
        if changed:
            log.warning("config changes to %s need a restart; running values kept", changed)
            update = {section: getattr(old, section) for section in RESTART_ONLY}
            server = new.server.model_copy(
                update={"bind": old.server.bind, "metrics_port": old.server.metrics_port}
            )
            retrieval = new.retrieval.model_copy(update={"mode": old.retrieval.mode})
            new = new.model_copy(update={**update, "server": server, "retrieval": retrieval})
        nli = None
        if new.zero_shot.method == "nli" and self.classifier.nli is None:
            from qroute.hub import nli_alternative
            from qroute.routing.zeroshot import NLIZeroShot

            without = nli_alternative(new.retrieval.mode)
            nli = await asyncio.to_thread(lambda: NLIZeroShot(new.nli, without=without))
        self.classifier = self.classifier.reconfigure(new, nli)
        self.settings = new
        self.metrics.config.info({"version": new.version})
        self.metrics.reloads.labels("applied").inc()
        log.info("config reloaded: version %s", new.version)

    async def follow_index_once(self, *, at_start: bool = False) -> None:
        """Pick up a newly published index version and report health accordingly.
        ``at_start``: a published version that cannot be read ends the start (IndexCorrupt);
        later it is logged and the version in use keeps serving."""
        assert self.classifier is not None
        try:
            index = await self.classifier.refresh_index()
        except QrouteError as exc:
            if at_start and isinstance(exc, IndexCorrupt):
                raise
            log.warning("cannot refresh the index: %s", exc)
            index = self.classifier.index
        if index is not None:
            self.metrics.index.info({"version": index.version})
        await self._set_health(serving=index is not None)

    async def _follow_index(self) -> None:
        while True:
            await asyncio.sleep(self.settings.server.index_poll_s)
            await self.follow_index_once()

    async def _set_health(self, *, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for service in ("", SERVICE_NAME):
            await self.health.set(service, status)

    async def stop(self, grace: float = 5.0) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        await self.batcher.stop()
        self.metrics.close()
        if self.classifier is not None:
            await self.classifier.close()


async def serve(settings: Settings, config_path: Path | None = None) -> None:
    """Run the router until SIGINT/SIGTERM. Model load failures end the process."""
    app = RouterApp(settings, config_path)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        # Inside the try: a failed start (metrics port taken) still stops the gRPC server.
        await app.start()
        await app.load()
        if app.classifier is not None and app.classifier.index is None:
            log.warning("no index published yet: health stays NOT_SERVING until `qroute index`")
        await stop.wait()
    finally:
        await app.stop()

"""Wire the gRPC server: router service, standard health and reflection, the index
follower, graceful shutdown. The only module-level state of the router lives in RouterApp."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from qroute.classifier import Classifier
from qroute.config import Settings
from qroute.errors import QrouteError
from qroute.v1 import router_pb2, router_pb2_grpc
from server.servicer import RouterServicer

__all__ = ["SERVICE_NAME", "RouterApp", "build_classifier", "serve"]

log = logging.getLogger(__name__)

SERVICE_NAME = router_pb2.DESCRIPTOR.services_by_name["RouterService"].full_name


def build_classifier(settings: Settings) -> Classifier:
    """Load both models and open the store (blocking: minutes for a hub download)."""
    from qroute.encoder import SentenceTransformerEncoder
    from qroute.store import open_store
    from qroute.zeroshot import NLIZeroShot

    return Classifier(
        settings,
        SentenceTransformerEncoder(settings.encoder),
        NLIZeroShot(settings.nli),
        open_store(settings.store),
    )


class RouterApp:
    """One router process. ``start`` binds the port with health NOT_SERVING;
    ``load`` brings the classifier up; health turns SERVING once an index is published."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.classifier: Classifier | None = None
        self.health = health.aio.HealthServicer()
        self.server = grpc.aio.server()
        self.port = 0
        self._follower: asyncio.Task[None] | None = None

    async def start(self, bind: str | None = None) -> int:
        router_pb2_grpc.add_RouterServiceServicer_to_server(
            RouterServicer(lambda: self.classifier), self.server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), self.server
        )
        address = bind or self.settings.server.bind
        self.port = self.server.add_insecure_port(address)
        if self.port == 0:
            raise OSError(f"cannot bind the router to {address}")
        await self._set_health(serving=False)
        await self.server.start()
        log.info("router listening on %s (port %d)", address, self.port)
        return self.port

    async def load(self, classifier: Classifier | Callable[[], Classifier] | None = None) -> None:
        """Install a classifier (built from settings unless given) and start following the index."""
        if classifier is None or not isinstance(classifier, Classifier):
            factory = classifier or (lambda: build_classifier(self.settings))
            classifier = await asyncio.to_thread(factory)
        self.classifier = classifier
        await self.follow_index_once()
        self._follower = asyncio.create_task(self._follow_index(), name="qroute-index-follower")

    async def follow_index_once(self) -> None:
        """Pick up a newly published index version and report health accordingly."""
        assert self.classifier is not None
        try:
            index = await self.classifier.refresh_index()
        except QrouteError as exc:
            log.warning("cannot refresh the index: %s", exc)
            index = self.classifier.index
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
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        if self.classifier is not None:
            await self.classifier.store.close()


async def serve(settings: Settings) -> None:
    """Run the router until SIGINT/SIGTERM. Model load failures end the process."""
    app = RouterApp(settings)
    await app.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await app.load()
        if app.classifier is not None and app.classifier.index is None:
            log.warning(
                "no index published yet: health stays NOT_SERVING until `qroute index` runs"
            )
        await stop.wait()
    finally:
        await app.stop()

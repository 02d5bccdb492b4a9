"""RouterServicer: protobuf in, the router's classify (or index info), protobuf out.
Nothing else.

Requests are parsed here, not by grpc: a request that does not parse (invalid UTF-8 in a
string, truncated bytes) would otherwise surface as UNKNOWN with the parser's traceback
in the log, uncounted. ``add_to_server`` registers the servicer with a parser that turns
such bytes into ``Malformed``, which the servicer answers with INVALID_ARGUMENT.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message

from qroute.errors import DeadlineExceeded
from qroute.routing.review import Feedback
from qroute.types import IndexInfo, Prediction, Query
from qroute.v1 import router_pb2 as pb
from qroute.v1 import router_pb2_grpc

from .convert import from_pb_feedback, from_pb_query, to_pb_index_info, to_pb_prediction
from .errors import Status, status_for
from .metrics import Metrics

__all__ = [
    "Classify",
    "Describe",
    "Malformed",
    "RouterServicer",
    "SubmitFeedback",
    "add_to_server",
]

log = logging.getLogger(__name__)

Context = grpc.aio.ServicerContext[Any, Any]
# (queries, deadline in loop.time() seconds or None) -> predictions
Classify = Callable[[Sequence[Query], float | None], Awaitable[list[Prediction]]]
# () -> what the router serves; raises NotReady, NotIndexed, ...
Describe = Callable[[], IndexInfo]
# feedback -> None once queued; raises FeatureDisabled, InvalidQuery, Overloaded, ...
SubmitFeedback = Callable[[Feedback], Awaitable[None]]

_SERVICE = pb.DESCRIPTOR.services_by_name["RouterService"]


@dataclass(frozen=True, slots=True)
class Malformed:
    """The bytes of a request that did not parse as ``message``."""

    message: str
    reason: str


class _RateLimited:
    """At most one log line per ``every_s`` seconds, saying how many were held back."""

    def __init__(self, every_s: float) -> None:
        self._every_s = every_s
        self._last = -float("inf")
        self._held = 0

    def warning(self, message: str, *args: object) -> None:
        now = time.monotonic()
        if now - self._last < self._every_s:
            self._held += 1
            return
        held, self._held, self._last = self._held, 0, now
        log.warning(message + " (%d more like it since the last such line)", *args, held)


def _parser(message: type[Message]) -> Callable[[bytes], Message | Malformed]:
    name = message.DESCRIPTOR.full_name

    def parse(data: bytes) -> Message | Malformed:
        try:
            return message.FromString(data)
        except DecodeError as exc:
            return Malformed(name, str(exc) or "the bytes do not parse")

    return parse


def add_to_server(servicer: RouterServicer, server: grpc.aio.Server) -> None:
    """Register ``servicer`` for every RPC of RouterService, parsing requests leniently."""
    handlers = {}
    for method in _SERVICE.methods:
        request = getattr(pb, method.input_type.name)
        response = getattr(pb, method.output_type.name)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            getattr(servicer, method.name),
            request_deserializer=_parser(request),
            response_serializer=response.SerializeToString,
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(_SERVICE.full_name, handlers),)
    )


class RouterServicer(router_pb2_grpc.RouterServiceServicer):  # type: ignore[misc]
    """``describe``: what GetIndexInfo answers; ``return_texts``: the current
    ``router.return_texts`` (hot-reloadable); ``feedback``: where SubmitFeedback goes
    (None: UNIMPLEMENTED)."""

    def __init__(
        self,
        classify: Classify,
        metrics: Metrics,
        describe: Describe,
        return_texts: Callable[[], bool] = lambda: True,
        feedback: SubmitFeedback | None = None,
    ) -> None:
        self._classify = classify
        self._describe = describe
        self._feedback = feedback
        self._metrics = metrics
        self._return_texts = return_texts
        # A broken client sends malformed requests at its full rate.
        self._malformed_log = _RateLimited(every_s=10.0)

    def _malformed(self, request: Malformed) -> Status:
        self._malformed_log.warning("malformed %s: %s", request.message, request.reason)
        return Status(
            grpc.StatusCode.INVALID_ARGUMENT,
            f"the request does not parse as {request.message}: {request.reason}",
        )

    async def _run(
        self,
        method: str,
        request: Message | Malformed,
        to_queries: Callable[[Any], list[Query]],
        context: Context,
    ) -> list[Prediction]:
        # Counted and timed by the MetricsInterceptor, which reads the status it ends with.
        if isinstance(request, Malformed):
            status = self._malformed(request)
            await context.abort(status.code, status.message)
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            status = status_for(DeadlineExceeded("the deadline passed before the work started"))
            await context.abort(status.code, status.message, status.trailing_metadata())
        deadline = None if remaining is None else asyncio.get_running_loop().time() + remaining
        try:
            predictions = await self._classify(to_queries(request), deadline)
        except Exception as exc:  # mapped to a status code in server/errors.py
            status = status_for(exc, batch=method == "ClassifyBatch")
            await context.abort(status.code, status.message, status.trailing_metadata())
        self._metrics.observe(predictions)
        return predictions

    async def Classify(
        self, request: pb.ClassifyRequest | Malformed, context: Context
    ) -> pb.ClassifyResponse:
        [prediction] = await self._run("Classify", request, lambda r: [from_pb_query(r)], context)
        return to_pb_prediction(prediction, with_texts=self._return_texts())

    async def ClassifyBatch(
        self, request: pb.ClassifyBatchRequest | Malformed, context: Context
    ) -> pb.ClassifyBatchResponse:
        predictions = await self._run(
            "ClassifyBatch", request, lambda r: [from_pb_query(q) for q in r.requests], context
        )
        with_texts = self._return_texts()
        return pb.ClassifyBatchResponse(
            responses=[to_pb_prediction(p, with_texts=with_texts) for p in predictions]
        )

    async def GetIndexInfo(
        self, request: pb.GetIndexInfoRequest | Malformed, context: Context
    ) -> pb.GetIndexInfoResponse:
        # Counted by the MetricsInterceptor, like every RPC.
        if isinstance(request, Malformed):
            status = self._malformed(request)
            await context.abort(status.code, status.message)
        try:
            info = self._describe()
        except Exception as exc:  # mapped to a status code in server/errors.py
            status = status_for(exc)
            await context.abort(status.code, status.message, status.trailing_metadata())
        return to_pb_index_info(info)

    async def SubmitFeedback(
        self, request: pb.SubmitFeedbackRequest | Malformed, context: Context
    ) -> pb.SubmitFeedbackResponse:
        # Counted by the MetricsInterceptor, like every RPC.
        if isinstance(request, Malformed):
            status = self._malformed(request)
            await context.abort(status.code, status.message)
        if self._feedback is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "this router takes no feedback")
        try:
            await self._feedback(from_pb_feedback(request))
        except Exception as exc:  # mapped to a status code in server/errors.py
            status = status_for(exc)
            await context.abort(status.code, status.message, status.trailing_metadata())
        return pb.SubmitFeedbackResponse()

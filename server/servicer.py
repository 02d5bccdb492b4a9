"""RouterServicer: protobuf in, the router's classify, protobuf out. Nothing else."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import grpc

from qroute.types import Prediction, Query
from qroute.v1 import router_pb2 as pb
from qroute.v1 import router_pb2_grpc

from .convert import from_pb_query, to_pb_prediction
from .errors import status_for
from .metrics import Metrics

__all__ = ["Classify", "RouterServicer"]

Context = grpc.aio.ServicerContext[Any, Any]
# (queries, deadline in loop.time() seconds or None) -> predictions
Classify = Callable[[Sequence[Query], float | None], Awaitable[list[Prediction]]]


class RouterServicer(router_pb2_grpc.RouterServiceServicer):  # type: ignore[misc]
    def __init__(self, classify: Classify, metrics: Metrics) -> None:
        self._classify = classify
        self._metrics = metrics

    async def _run(self, method: str, queries: list[Query], context: Context) -> list[Prediction]:
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        try:
            remaining = context.time_remaining()
            if remaining is not None and remaining <= 0:
                code = grpc.StatusCode.DEADLINE_EXCEEDED
                await context.abort(code, "the deadline passed before the work started")
            deadline = None if remaining is None else asyncio.get_running_loop().time() + remaining
            try:
                predictions = await self._classify(queries, deadline)
            except Exception as exc:  # mapped to a status code in server/errors.py
                code, message = status_for(exc)
                await context.abort(code, message)
            self._metrics.observe(predictions)
            return predictions
        finally:
            self._metrics.requests.labels(method, code.name).inc()
            self._metrics.latency.labels(method).observe(time.perf_counter() - started)

    async def Classify(self, request: pb.ClassifyRequest, context: Context) -> pb.ClassifyResponse:
        [prediction] = await self._run("Classify", [from_pb_query(request)], context)
        return to_pb_prediction(prediction)

    async def ClassifyBatch(
        self, request: pb.ClassifyBatchRequest, context: Context
    ) -> pb.ClassifyBatchResponse:
        if not request.requests:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "requests is empty")
        queries = [from_pb_query(r) for r in request.requests]
        predictions = await self._run("ClassifyBatch", queries, context)
        return pb.ClassifyBatchResponse(responses=[to_pb_prediction(p) for p in predictions])

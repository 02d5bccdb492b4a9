"""RouterServicer: protobuf in, classifier, protobuf out. Nothing else."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grpc

from qroute.classifier import Classifier
from qroute.types import Prediction
from qroute.v1 import router_pb2 as pb
from qroute.v1 import router_pb2_grpc
from server.convert import to_pb_prediction
from server.errors import status_for

__all__ = ["RouterServicer"]

Context = grpc.aio.ServicerContext[Any, Any]


class RouterServicer(router_pb2_grpc.RouterServiceServicer):  # type: ignore[misc]
    """``classifier`` returns the classifier in use now, or None while models load."""

    def __init__(self, classifier: Callable[[], Classifier | None]) -> None:
        self._classifier = classifier

    async def _classify(self, texts: Sequence[str], context: Context) -> list[Prediction]:
        classifier = self._classifier()
        if classifier is None:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, "the router is still loading its models"
            )
        assert classifier is not None
        try:
            return await classifier.classify(texts)
        except Exception as exc:  # mapped to a status code in server/errors.py
            code, message = status_for(exc)
            await context.abort(code, message)
            raise  # unreachable: abort raises

    async def Classify(self, request: pb.ClassifyRequest, context: Context) -> pb.ClassifyResponse:
        [prediction] = await self._classify([request.text], context)
        return to_pb_prediction(prediction)

    async def ClassifyBatch(
        self, request: pb.ClassifyBatchRequest, context: Context
    ) -> pb.ClassifyBatchResponse:
        if not request.requests:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "requests is empty")
        predictions = await self._classify([r.text for r in request.requests], context)
        return pb.ClassifyBatchResponse(responses=[to_pb_prediction(p) for p in predictions])

"""The qroute router's Python client: ``Client`` (blocking) and ``AsyncClient`` (asyncio).

Depends on grpcio, protobuf, grpcio-status and grpcio-health-checking only; the
generated qroute.v1 stubs travel with it (``qroute_client.v1``)."""

from qroute_client.client import AsyncClient, Client, service_config
from qroute_client.errors import (
    Cancelled,
    DeadlineExceeded,
    FailedPrecondition,
    FieldViolation,
    Internal,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    QrouteClientError,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from qroute_client.results import (
    Classification,
    DecisionPath,
    FallbackReason,
    IndexInfo,
    LabelScore,
    Neighbour,
    RequestLimits,
    RetrievalMode,
    Thresholds,
    ZeroShotMethod,
)

__all__ = [
    "AsyncClient",
    "Cancelled",
    "Classification",
    "Client",
    "DeadlineExceeded",
    "DecisionPath",
    "FailedPrecondition",
    "FallbackReason",
    "FieldViolation",
    "IndexInfo",
    "Internal",
    "InvalidArgument",
    "LabelScore",
    "Neighbour",
    "NotFound",
    "PermissionDenied",
    "QrouteClientError",
    "RequestLimits",
    "ResourceExhausted",
    "RetrievalMode",
    "Thresholds",
    "Unauthenticated",
    "Unavailable",
    "ZeroShotMethod",
    "service_config",
]

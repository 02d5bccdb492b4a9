"""The one table from core errors to gRPC status codes."""

from __future__ import annotations

import logging

import grpc

from qroute.errors import (
    DeadlineExceeded,
    InvalidQuery,
    NotIndexed,
    NotReady,
    Overloaded,
    QrouteError,
    StoreUnavailable,
)

__all__ = ["status_for"]

log = logging.getLogger(__name__)

_STATUS: tuple[tuple[type[QrouteError], grpc.StatusCode], ...] = (
    (InvalidQuery, grpc.StatusCode.INVALID_ARGUMENT),
    (NotIndexed, grpc.StatusCode.FAILED_PRECONDITION),
    (StoreUnavailable, grpc.StatusCode.UNAVAILABLE),
    (NotReady, grpc.StatusCode.UNAVAILABLE),
    (Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
)


def status_for(exc: Exception) -> tuple[grpc.StatusCode, str]:
    """The status code and message a client sees for ``exc``. Anything unexpected is
    INTERNAL, logged with its traceback, and its details are not leaked."""
    for kind, code in _STATUS:
        if isinstance(exc, kind):
            return code, str(exc)
    log.error("internal error while classifying", exc_info=exc)
    return grpc.StatusCode.INTERNAL, "internal error (see the router's log)"

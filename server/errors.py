"""The one table from core errors to gRPC status codes.

An INVALID_ARGUMENT names each bad field (``requests[3].text`` in a batch) in its message
and as ``google.rpc.BadRequest`` field violations in the status details, which a client
reads with ``grpc_status.rpc_status.from_call``. Messages and details are bounded: they
travel in a trailer, and a trailer over the client's metadata limit turns into a
RESOURCE_EXHAUSTED that hides the real error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from qroute.errors import (
    DeadlineExceeded,
    FeatureDisabled,
    InvalidQuery,
    NotIndexed,
    NotReady,
    Overloaded,
    QrouteError,
    StoreUnavailable,
)

__all__ = ["Status", "status_for"]

log = logging.getLogger(__name__)

_STATUS: tuple[tuple[type[QrouteError], grpc.StatusCode], ...] = (
    (InvalidQuery, grpc.StatusCode.INVALID_ARGUMENT),
    (NotIndexed, grpc.StatusCode.FAILED_PRECONDITION),
    (StoreUnavailable, grpc.StatusCode.UNAVAILABLE),
    (NotReady, grpc.StatusCode.UNAVAILABLE),
    (Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    (FeatureDisabled, grpc.StatusCode.FAILED_PRECONDITION),
)

# Bad fields named in a message, and carried in the details.
_IN_MESSAGE = 3
_IN_DETAILS = 10
# Core messages are bounded where they are written; this is the backstop.
_MESSAGE_CHARS = 1000


@dataclass(frozen=True, slots=True)
class Status:
    """What a client sees: a code, a message, and the fields it got wrong
    (``(field path, description)``, as ``google.rpc.BadRequest`` details)."""

    code: grpc.StatusCode
    message: str
    violations: tuple[tuple[str, str], ...] = ()

    def trailing_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        """The ``grpc-status-details-bin`` trailer, empty when there are no details."""
        if not self.violations:
            return ()
        details = any_pb2.Any()
        details.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                    for f, d in self.violations
                ]
            )
        )
        status = status_pb2.Status(code=self.code.value[0], message=self.message, details=[details])
        return tuple(rpc_status.to_status(status).trailing_metadata)


def _invalid(exc: InvalidQuery, batch: bool) -> Status:
    """The message names the bad queries of a batch (``requests[3]: text is empty``)."""
    if not batch:
        violations = tuple((v.field, v.description) for v in exc.violations)
        return Status(grpc.StatusCode.INVALID_ARGUMENT, str(exc), violations[:_IN_DETAILS])
    where = [("requests" if v.index is None else f"requests[{v.index}]", v) for v in exc.violations]
    shown = "; ".join(f"{query}: {v.description}" for query, v in where[:_IN_MESSAGE])
    more = len(where) - _IN_MESSAGE
    message = shown + (f"; and {more} more" if more > 0 else "")
    violations = tuple(
        (query if query == v.field else f"{query}.{v.field}", v.description)
        for query, v in where[:_IN_DETAILS]
    )
    return Status(grpc.StatusCode.INVALID_ARGUMENT, message, violations)


def status_for(exc: Exception, *, batch: bool = False) -> Status:
    """What a client sees for ``exc``; ``batch``: the queries came in a ClassifyBatch, so
    a bad field is ``requests[i].field``. Anything unexpected is INTERNAL, logged with
    its traceback, and its details are not leaked."""
    if isinstance(exc, InvalidQuery):
        return _invalid(exc, batch)
    for kind, code in _STATUS:
        if isinstance(exc, kind):
            message = str(exc)
            if len(message) > _MESSAGE_CHARS:
                message = message[:_MESSAGE_CHARS] + "…"
            return Status(code, message)
    log.error("internal error while classifying", exc_info=exc)
    return Status(grpc.StatusCode.INTERNAL, "internal error (see the router's log)")

"""The one table from core errors to gRPC status codes and their ``google.rpc`` details.

An INVALID_ARGUMENT names each bad field (``requests[3].text`` in a batch) in its message
and as ``google.rpc.BadRequest`` field violations in the status details, which a client
reads with ``grpc_status.rpc_status.from_call``. The other codes the router sends on
purpose carry a ``google.rpc.ErrorInfo`` (domain ``qroute``, a reason a client can
switch on), a ``ResourceInfo`` naming the index where one is missing or unusable, and a
``RetryInfo`` where waiting helps. Messages and details are bounded: they travel in a
trailer, and a trailer over the client's metadata limit turns into a RESOURCE_EXHAUSTED
that hides the real error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from qroute.errors import (
    DeadlineExceeded,
    EncoderMismatch,
    FeatureDisabled,
    IndexRejected,
    InvalidQuery,
    NotIndexed,
    NotReady,
    Overloaded,
    QrouteError,
    StoreUnavailable,
)

__all__ = ["DOMAIN", "RESOURCE_TYPE", "Status", "status_for"]

log = logging.getLogger(__name__)

# google.rpc.ErrorInfo.domain of every reason below.
DOMAIN = "qroute"
# google.rpc.ResourceInfo.resource_type of a missing or unusable index.
RESOURCE_TYPE = "qroute index"


@dataclass(frozen=True, slots=True)
class _Rule:
    """How one kind of core error reaches a client. ``retry_s``: the RetryInfo delay,
    None where retrying unchanged cannot help."""

    kind: type[QrouteError]
    code: grpc.StatusCode
    reason: str
    retry_s: float | None = None


# Subclasses before their bases: the first rule that matches applies.
_RULES: tuple[_Rule, ...] = (
    _Rule(EncoderMismatch, grpc.StatusCode.FAILED_PRECONDITION, "ENCODER_MISMATCH"),
    _Rule(NotIndexed, grpc.StatusCode.FAILED_PRECONDITION, "NOT_INDEXED"),
    # The follower retries a rejected version on every poll (server.index_poll_s, 2 s
    # by default) and takes the next one published.
    _Rule(IndexRejected, grpc.StatusCode.UNAVAILABLE, "INDEX_REJECTED", retry_s=5.0),
    _Rule(StoreUnavailable, grpc.StatusCode.UNAVAILABLE, "STORE_UNAVAILABLE", retry_s=1.0),
    # Loading models, or shutting down (another replica answers a new connection).
    _Rule(NotReady, grpc.StatusCode.UNAVAILABLE, "NOT_READY", retry_s=1.0),
    # The queue drains in micro-batches of a few milliseconds each.
    _Rule(Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED, "OVERLOADED", retry_s=0.5),
    _Rule(DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED, "DEADLINE_EXCEEDED"),
    # SubmitFeedback on a router whose review.enabled is off.
    _Rule(FeatureDisabled, grpc.StatusCode.FAILED_PRECONDITION, "FEATURE_DISABLED"),
)

# Bad fields named in a message, and carried in the details.
_IN_MESSAGE = 3
_IN_DETAILS = 10
# Core messages are bounded where they are written; this is the backstop.
_MESSAGE_CHARS = 1000


def _bounded(message: str) -> str:
    return message if len(message) <= _MESSAGE_CHARS else message[:_MESSAGE_CHARS] + "…"


@dataclass(frozen=True, slots=True)
class Status:
    """What a client sees: a code, a message, and the ``google.rpc`` details: the
    fields it got wrong (``(field path, description)``, as ``BadRequest``), the
    ErrorInfo reason, the index concerned (ResourceInfo) and a retry delay (RetryInfo)."""

    code: grpc.StatusCode
    message: str
    violations: tuple[tuple[str, str], ...] = ()
    reason: str = ""
    resource: str = ""
    retry_s: float | None = None

    def details(self) -> list[Message]:
        """The ``google.rpc`` messages this status carries, in the order sent."""
        found: list[Message] = []
        if self.violations:
            found.append(
                error_details_pb2.BadRequest(
                    field_violations=[
                        error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                        for f, d in self.violations
                    ]
                )
            )
        if self.reason:
            found.append(error_details_pb2.ErrorInfo(reason=self.reason, domain=DOMAIN))
        if self.resource:
            found.append(
                error_details_pb2.ResourceInfo(
                    resource_type=RESOURCE_TYPE,
                    resource_name=self.resource,
                    description=self.message,
                )
            )
        if self.retry_s is not None:
            delay = duration_pb2.Duration()
            delay.FromTimedelta(timedelta(seconds=self.retry_s))
            found.append(error_details_pb2.RetryInfo(retry_delay=delay))
        return found

    def trailing_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        """The ``grpc-status-details-bin`` trailer, empty when there are no details."""
        details = self.details()
        if not details:
            return ()
        packed = []
        for detail in details:
            any_detail = any_pb2.Any()
            any_detail.Pack(detail)
            packed.append(any_detail)
        status = status_pb2.Status(code=self.code.value[0], message=self.message, details=packed)
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
    for rule in _RULES:
        if isinstance(exc, rule.kind):
            resource = exc.resource if isinstance(exc, NotIndexed) else ""
            return Status(
                rule.code,
                _bounded(str(exc)),
                reason=rule.reason,
                resource=_bounded(resource),
                retry_s=rule.retry_s,
            )
    log.error("internal error while classifying", exc_info=exc)
    return Status(grpc.StatusCode.INTERNAL, "internal error (see the router's log)")

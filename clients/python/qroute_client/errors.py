"""A failed call as an exception: one class per status code, with the ``google.rpc``
details the router attached (``grpc-status-details-bin``) unpacked."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from grpc_status import rpc_status

__all__ = [
    "Cancelled",
    "DeadlineExceeded",
    "FailedPrecondition",
    "FieldViolation",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "QrouteClientError",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "from_rpc_error",
]


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of the request (``google.rpc.BadRequest.FieldViolation``)."""

    field: str
    description: str
    reason: str = ""


class QrouteClientError(Exception):
    """A call the router (or the channel) failed. ``details`` holds every
    ``google.rpc`` message the status carried, unpacked where its type is known
    (``google.rpc.error_details_pb2``), else as the ``google.protobuf.Any``."""

    def __init__(
        self, code: grpc.StatusCode, message: str, details: tuple[Message, ...] = ()
    ) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.details = details

    def __reduce__(self) -> tuple[type[QrouteClientError], tuple[object, ...]]:
        # Pickle (a worker process handing its error back) rebuilds an exception from
        # its args, which hold only the formatted string: rebuild it from its fields.
        return type(self), (self.code, self.message, self.details)

    def detail(self, kind: type[Message]) -> Message | None:
        """The first detail of type ``kind`` (e.g. ``error_details_pb2.RetryInfo``)."""
        return next((d for d in self.details if isinstance(d, kind)), None)

    @property
    def retry_delay_s(self) -> float | None:
        """The router's ``google.rpc.RetryInfo`` hint, in seconds, where it gave one."""
        info = self.detail(error_details_pb2.RetryInfo)
        if not isinstance(info, error_details_pb2.RetryInfo):
            return None
        return float(info.retry_delay.ToTimedelta().total_seconds())

    @property
    def reason(self) -> str:
        """The ``google.rpc.ErrorInfo`` reason (``NOT_INDEXED``, ``OVERLOADED``, ...;
        docs/clients.md lists them), or "" where the status carried none."""
        info = self.detail(error_details_pb2.ErrorInfo)
        return info.reason if isinstance(info, error_details_pb2.ErrorInfo) else ""

    @property
    def domain(self) -> str:
        """The ``google.rpc.ErrorInfo`` domain (``qroute`` for the router's own)."""
        info = self.detail(error_details_pb2.ErrorInfo)
        return info.domain if isinstance(info, error_details_pb2.ErrorInfo) else ""


class InvalidArgument(QrouteClientError):
    """The request was refused as it stands (empty text, unknown label, ...)."""

    @property
    def field_violations(self) -> list[FieldViolation]:
        """Every ``google.rpc.BadRequest`` field violation the router attached."""
        return [
            FieldViolation(v.field, v.description, getattr(v, "reason", ""))
            for d in self.details
            if isinstance(d, error_details_pb2.BadRequest)
            for v in d.field_violations
        ]


class FailedPrecondition(QrouteClientError):
    """The router cannot answer in its state (nothing indexed, mismatched index, ...)."""


class Unavailable(QrouteClientError):
    """No router answered, or it is still loading: worth retrying later."""


class ResourceExhausted(QrouteClientError):
    """The router's queue is full: retry after a pause (see ``retry_delay_s``)."""


class DeadlineExceeded(QrouteClientError):
    """The deadline passed before the answer came."""


class Unauthenticated(QrouteClientError):
    """The router refused the credentials (token) or their absence."""


class PermissionDenied(QrouteClientError):
    """The credentials are valid but may not make this call."""


class NotFound(QrouteClientError):
    """No such service or method (e.g. a health check of an unknown service)."""


class Cancelled(QrouteClientError):
    """The call was cancelled."""


class Internal(QrouteClientError):
    """The router failed unexpectedly (its log has the traceback)."""


_BY_CODE: dict[grpc.StatusCode, type[QrouteClientError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.CANCELLED: Cancelled,
    grpc.StatusCode.INTERNAL: Internal,
}


def _unpack(packed: any_pb2.Any) -> Message:
    # error_details_pb2 is imported above, so every google.rpc detail type is in the pool.
    try:
        descriptor = descriptor_pool.Default().FindMessageTypeByName(packed.TypeName())
    except KeyError:
        return packed
    detail = message_factory.GetMessageClass(descriptor)()
    return detail if packed.Unpack(detail) else packed


def from_rpc_error(error: grpc.RpcError) -> QrouteClientError:
    """The exception for a failed call (sync ``grpc.RpcError`` or ``grpc.aio.AioRpcError``)."""
    code = error.code() if isinstance(error, grpc.Call | grpc.aio.AioRpcError) else None
    if not isinstance(code, grpc.StatusCode):
        return QrouteClientError(grpc.StatusCode.UNKNOWN, str(error))
    message = str(error.details() or "")
    details: tuple[Message, ...] = ()
    try:
        status = rpc_status.from_call(error)
    except ValueError:  # a status whose code disagrees with the call's: details ignored
        status = None
    if status is not None:
        details = tuple(_unpack(d) for d in status.details)
        message = status.message or message
    return _BY_CODE.get(code, QrouteClientError)(code, message, details)

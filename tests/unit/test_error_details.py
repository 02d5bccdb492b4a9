"""server/errors.py: the google.rpc details each core error reaches a client with."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.message import Message
from google.rpc import error_details_pb2
from qroute_server.errors import status_for

from qroute.errors import (
    DeadlineExceeded,
    EncoderMismatch,
    IndexCorrupt,
    IndexRejected,
    InvalidQuery,
    NotIndexed,
    NotReady,
    Overloaded,
    StoreUnavailable,
    VersionMissing,
)


def _by_type(details: list[Message]) -> dict[str, Message]:
    return {type(d).__name__: d for d in details}


@pytest.mark.parametrize(
    ("error", "code", "reason", "retry_s"),
    [
        (NotIndexed("nothing", "qroute"), "FAILED_PRECONDITION", "NOT_INDEXED", None),
        (VersionMissing("dropped"), "FAILED_PRECONDITION", "NOT_INDEXED", None),
        (EncoderMismatch("other", "qroute_v2"), "FAILED_PRECONDITION", "ENCODER_MISMATCH", None),
        (IndexRejected("probe failed", "probe"), "UNAVAILABLE", "INDEX_REJECTED", 5.0),
        (IndexCorrupt("bad json"), "UNAVAILABLE", "INDEX_REJECTED", 5.0),
        (StoreUnavailable("refused"), "UNAVAILABLE", "STORE_UNAVAILABLE", 1.0),
        (NotReady("loading"), "UNAVAILABLE", "NOT_READY", 1.0),
        (Overloaded("full"), "RESOURCE_EXHAUSTED", "OVERLOADED", 0.5),
        (DeadlineExceeded("late"), "DEADLINE_EXCEEDED", "DEADLINE_EXCEEDED", None),
    ],
)
def test_each_error_carries_its_reason_and_retry_delay(
    error: Exception, code: str, reason: str, retry_s: float | None
) -> None:
    status = status_for(error)
    assert status.code.name == code
    details = _by_type(status.details())
    info = details["ErrorInfo"]
    assert isinstance(info, error_details_pb2.ErrorInfo)
    assert (info.reason, info.domain) == (reason, "qroute")
    retry = details.get("RetryInfo")
    if retry_s is None:
        assert retry is None
    else:
        assert isinstance(retry, error_details_pb2.RetryInfo)
        assert retry.retry_delay.ToTimedelta().total_seconds() == retry_s
    # The index concerned, where the error names one.
    assert ("ResourceInfo" in details) == bool(getattr(error, "resource", ""))


def test_resource_info_names_the_version_and_repeats_the_message() -> None:
    status = status_for(EncoderMismatch("built with another encoder", "qroute_v2"))
    resource = _by_type(status.details())["ResourceInfo"]
    assert isinstance(resource, error_details_pb2.ResourceInfo)
    assert (resource.resource_type, resource.resource_name) == ("qroute index", "qroute_v2")
    assert resource.description == "built with another encoder"


def test_invalid_argument_carries_bad_request_only() -> None:
    status = status_for(InvalidQuery("text is empty", "text"))
    assert status.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [type(d).__name__ for d in status.details()] == ["BadRequest"]


def test_an_unexpected_error_is_internal_without_details(caplog: pytest.LogCaptureFixture) -> None:
    status = status_for(KeyError("secret"))
    assert status.code == grpc.StatusCode.INTERNAL
    assert status.details() == [] and status.trailing_metadata() == ()
    assert "secret" not in status.message

"""Faults of qroute_client a caller would notice: a token with its line end, a legal
answer over gRPC's default 4 MiB receive limit, errors that do not survive pickling, a
non-finite timeout, and a build-system floor the pyproject cannot be built with."""

from __future__ import annotations

import asyncio
import math
import pickle
import re
import tomllib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from qroute_client import (
    AsyncClient,
    Client,
    DeadlineExceeded,
    FieldViolation,
    InvalidArgument,
    QrouteClientError,
    ResourceExhausted,
    Unavailable,
)
from qroute_client.v1 import router_pb2 as pb

from tests.integration.test_client import ScriptedRouter, scripted  # noqa: F401 (a fixture)

CLIENT = Path(__file__).resolve().parent.parent / "clients" / "python"
# Over gRPC's default max_receive_message_length (4 MiB): 1,600 neighbours of a
# 1,000-character Korean example (3,000 bytes in UTF-8) are about 4.8 MB.
BIG_NEIGHBOURS = 1600


class Recorder(ScriptedRouter):
    """The scripted router, which also answers "big" with a response over 4 MiB, as a
    full batch of long examples may be."""

    async def _answer(
        self, request: pb.ClassifyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ClassifyResponse:
        if request.text == "big":
            example = pb.Neighbour(text="가" * 1000, label="금융", similarity=0.5)
            return pb.ClassifyResponse(label="금융", neighbours=[example] * BIG_NEIGHBOURS)
        response: pb.ClassifyResponse = await super()._answer(request, context)
        return response


Serve = Callable[[Recorder], Awaitable[str]]


@pytest.fixture
async def serve(scripted: Callable[..., Awaitable[int]]) -> Serve:  # noqa: F811
    """``await serve(servicer)``: the address a scripted router listens on."""

    async def start(servicer: Recorder) -> str:
        return f"127.0.0.1:{await scripted(servicer)}"

    return start


# ------------------------------------------------------------------ the token


def _sync_label(address: str, text: str, **options: object) -> str:
    with Client(address, timeout=10, **options) as client:  # type: ignore[arg-type]
        return client.classify(text).label


async def test_a_token_read_with_its_line_end_is_sent_without_it(serve: Serve) -> None:
    """A token read from a file ends in a newline. It used to go into the header as it
    was: every call failed, sync as Internal ("Invalid metadata", blaming the router),
    async with a bare cygrpc ExecuteBatchError that no QrouteClientError handler caught."""
    servicer = Recorder()
    address = await serve(servicer)
    assert await asyncio.to_thread(_sync_label, address, "a", token="s3cret\n") == "echo"
    async with AsyncClient(address, timeout=10, token=" s3cret\r\n") as client:
        assert (await client.classify("b")).label == "echo"
    assert [m.get("authorization") for m in servicer.metadata] == ["Bearer s3cret"] * 2


@pytest.mark.parametrize("kind", [Client, AsyncClient])
def test_a_token_that_cannot_be_a_header_is_refused_without_echoing_it(
    kind: type[Client] | type[AsyncClient],
) -> None:
    for token in ("s3c\nret", "s3c\x00ret", "s3crét", "   "):
        with pytest.raises(ValueError, match="token") as refused:
            kind("127.0.0.1:1", token=token)
        assert "s3c" not in str(refused.value)  # a secret stays out of tracebacks and logs


# ------------------------------------------------------------------ large answers


async def test_an_answer_over_grpcs_default_4_mib_is_received(serve: Serve) -> None:
    """The router sends what it answers without a size limit; the client refused anything
    over 4 MiB as ResourceExhausted, which reads as "the router is overloaded, retry",
    and no retry ever succeeded."""
    address = await serve(Recorder())
    async with AsyncClient(address, timeout=30) as client:
        answer = await client.classify("big")
    assert len(answer.neighbours) == BIG_NEIGHBOURS

    def sync_call() -> int:
        with Client(address, timeout=30) as sync_client:
            return len(sync_client.classify("big").neighbours)

    assert await asyncio.to_thread(sync_call) == BIG_NEIGHBOURS


async def test_a_receive_limit_of_the_caller_still_applies(serve: Serve) -> None:
    address = await serve(Recorder())
    limit = [("grpc.max_receive_message_length", 1024 * 1024)]
    async with AsyncClient(address, timeout=30, options=limit) as client:
        with pytest.raises(ResourceExhausted):
            await client.classify("big")


# ------------------------------------------------------------------ errors


async def test_errors_survive_pickling_with_their_details(serve: Serve) -> None:
    """A worker process (multiprocessing, ProcessPoolExecutor) hands its exception back
    pickled; unpickling called the class with the formatted string alone and failed
    (TypeError: missing 'message'), which breaks the whole pool."""
    address = await serve(Recorder())
    async with AsyncClient(address, timeout=10) as client:
        with pytest.raises(InvalidArgument) as refused:
            await client.classify("")
        with pytest.raises(ResourceExhausted) as busy:
            await client.classify("busy")

    invalid = pickle.loads(pickle.dumps(refused.value))
    assert type(invalid) is InvalidArgument
    assert (invalid.code, invalid.message, str(invalid)) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "text is empty",
        "INVALID_ARGUMENT: text is empty",
    )
    assert invalid.field_violations == [FieldViolation("text", "text is empty")]
    exhausted = pickle.loads(pickle.dumps(busy.value))
    assert type(exhausted) is ResourceExhausted and exhausted.retry_delay_s == 0.5
    plain = QrouteClientError(grpc.StatusCode.ABORTED, "aborted")
    assert str(pickle.loads(pickle.dumps(plain))) == "ABORTED: aborted"


# ------------------------------------------------------------------ timeouts


@pytest.mark.parametrize("timeout", [math.nan, math.inf, -math.inf])
def test_a_non_finite_timeout_is_refused(timeout: float) -> None:
    """NaN passed the "must be positive" check, and a NaN or infinite deadline made every
    call fail DEADLINE_EXCEEDED at once, naming no cause."""
    with pytest.raises(ValueError, match="timeout"):
        Client("127.0.0.1:1", timeout=timeout)
    with pytest.raises(ValueError, match="timeout"):
        AsyncClient("127.0.0.1:1", timeout=timeout)


def test_a_call_with_an_infinite_timeout_is_refused_not_failed_at_once() -> None:
    with Client("127.0.0.1:1", timeout=5, max_attempts=1) as client:
        for timeout in (math.inf, math.nan, 0.0):
            with pytest.raises(ValueError, match="timeout"):
                client.classify("x", timeout=timeout)
        # A finite per-call deadline still goes to gRPC (nothing listens there).
        with pytest.raises((DeadlineExceeded, Unavailable)):
            client.classify("x", timeout=0.5)


async def test_an_async_call_with_a_non_finite_timeout_is_refused() -> None:
    async with AsyncClient("127.0.0.1:1", timeout=5, max_attempts=1) as client:
        with pytest.raises(ValueError, match="timeout"):
            await client.classify("x", timeout=math.inf)


# ------------------------------------------------------------------ packaging


@pytest.mark.parametrize("project", [CLIENT, CLIENT.parent.parent], ids=["client", "router"])
def test_the_build_system_floor_can_build_the_pyproject(project: Path) -> None:
    """`license = "Apache-2.0"` (a PEP 639 SPDX string) is valid from setuptools 77 on; with
    the setuptools 69 to 76 that `setuptools>=69` allows (pip --no-build-isolation, a
    pinned build environment), building qroute or qroute-client failed on
    `project.license`."""
    data = tomllib.loads((project / "pyproject.toml").read_text(encoding="utf-8"))
    floors = [
        re.fullmatch(r"setuptools\s*>=\s*(\d+)(?:\.\d+)*", r.strip())
        for r in data["build-system"]["requires"]
    ]
    [floor] = [int(m.group(1)) for m in floors if m is not None]
    if isinstance(data["project"].get("license"), str):
        assert floor >= 77

"""``Client`` and ``AsyncClient``: one long-lived channel each, with a default deadline,
retries on UNAVAILABLE (gRPC's own retry policy, from the service config), TLS or mTLS,
a bearer token on every call, and calls spread over every address the target resolves
to (``dns:///routers:50051``, ``ipv4:10.0.0.1:50051,10.0.0.2:50051``: round_robin)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from qroute_client.errors import from_rpc_error
from qroute_client.results import Classification, IndexInfo
from qroute_client.v1 import router_pb2 as pb
from qroute_client.v1 import router_pb2_grpc

__all__ = ["AsyncClient", "Client", "service_config"]

DEFAULT_TIMEOUT_S = 30.0
# Retried by the channel itself: the router's service and its health checks.
_RETRIED_SERVICES = ("qroute.v1.RouterService", "grpc.health.v1.Health")
_POLICIES = ("round_robin", "pick_first")


def service_config(
    max_attempts: int = 5,
    initial_backoff_s: float = 0.1,
    max_backoff_s: float = 2.0,
    load_balancing: str = "round_robin",
    skip_unhealthy: bool = False,
) -> str:
    """gRPC service config JSON: retry UNAVAILABLE (no router there yet, or one still
    loading its models) with exponential backoff and jitter, up to ``max_attempts`` tries
    in all (gRPC caps it at 5). Every try shares the call's one deadline.
    ``load_balancing``: ``round_robin`` keeps a connection to every address the target
    resolves to and sends each call to the next ready one; ``pick_first`` uses one.
    ``skip_unhealthy`` (round_robin): leave out routers whose health service does not say
    SERVING; with every router left out a call fails UNAVAILABLE, ``health()`` too."""
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
    if load_balancing not in _POLICIES:
        raise ValueError(
            f"load_balancing must be one of {', '.join(_POLICIES)}, got {load_balancing!r}"
        )
    method: dict[str, Any] = {"name": [{"service": s} for s in _RETRIED_SERVICES]}
    if max_attempts > 1:
        method["retryPolicy"] = {
            "maxAttempts": max_attempts,
            "initialBackoff": f"{initial_backoff_s}s",
            "maxBackoff": f"{max_backoff_s}s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        }
    config: dict[str, Any] = {
        "loadBalancingConfig": [{load_balancing: {}}],
        "methodConfig": [method],
    }
    if skip_unhealthy:
        # gRPC's client-side health checking (round_robin): a router whose health
        # service does not say SERVING for RouterService gets no call at all, health
        # checks included. A server without the health service counts as healthy.
        config["healthCheckConfig"] = {"serviceName": _RETRIED_SERVICES[0]}
    return json.dumps(config)


def _read(path: str | Path | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read the {what} {path}: {exc.strerror}") from exc


def _credentials(
    tls: bool,
    ca_file: str | Path | None,
    cert_file: str | Path | None,
    key_file: str | Path | None,
) -> grpc.ChannelCredentials | None:
    """None for a plaintext channel; TLS when ``tls`` or any file is given."""
    if (cert_file is None) != (key_file is None):
        raise ValueError("mTLS needs both cert_file and key_file (the client's own pair)")
    if not tls and ca_file is None and cert_file is None:
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca_file, "CA file"),
        private_key=_read(key_file, "key file"),
        certificate_chain=_read(cert_file, "certificate file"),
    )


def _timeout(timeout: float) -> float:
    # NaN slips past "<= 0", and gRPC fails a NaN or infinite deadline at once as
    # DEADLINE_EXCEEDED, which names no cause.
    if not (math.isfinite(timeout) and timeout > 0):
        raise ValueError(f"timeout must be a positive, finite number of seconds, got {timeout}")
    return timeout


def _bearer(token: str | None) -> tuple[tuple[str, str], ...]:
    """The ``authorization`` metadata for ``token`` (none for None or "")."""
    if not token:
        return ()
    # A token read from a file keeps its line end; the router strips what surrounds a
    # bearer token too.
    trimmed = token.strip()
    # A header value is printable ASCII: anything else fails every call, in a way that
    # blames the router (INTERNAL) or escapes as a bare cygrpc error (asyncio). The
    # message never quotes the token: it is a secret.
    if not trimmed or not all(" " <= ch <= "~" for ch in trimmed):
        raise ValueError(
            "token must be printable ASCII (it is sent as an authorization header), "
            "with nothing but whitespace around it"
        )
    return (("authorization", f"Bearer {trimmed}"),)


class _Options:
    """What both clients set up the same way: channel options, credentials, metadata."""

    def __init__(
        self,
        address: str,
        *,
        timeout: float,
        tls: bool,
        ca_file: str | Path | None,
        cert_file: str | Path | None,
        key_file: str | Path | None,
        token: str | None,
        server_name: str | None,
        max_attempts: int,
        load_balancing: str,
        skip_unhealthy: bool,
        options: Sequence[tuple[str, Any]],
    ) -> None:
        self.address = address
        self.timeout = _timeout(timeout)
        self.credentials = _credentials(tls, ca_file, cert_file, key_file)
        defaults: list[tuple[str, Any]] = [
            ("grpc.enable_retries", 1),
            (
                "grpc.service_config",
                service_config(
                    max_attempts, load_balancing=load_balancing, skip_unhealthy=skip_unhealthy
                ),
            ),
            # A router that is not up yet is dialled again soon, not after gRPC's 1 s
            # default, so that a retry finds it.
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 2000),
            # The router sends answers of any size (a full batch of long examples with
            # many neighbours passes gRPC's default 4 MiB): refusing one here would read
            # as RESOURCE_EXHAUSTED, "the router is overloaded", and never succeed.
            ("grpc.max_receive_message_length", -1),
        ]
        if server_name is not None:
            defaults.append(("grpc.ssl_target_name_override", server_name))
        # The caller's options replace ours of the same name.
        given = {name for name, _ in options}
        self.options = [o for o in defaults if o[0] not in given] + list(options)
        self.metadata = _bearer(token)

    def deadline(self, timeout: float | None) -> float:
        return self.timeout if timeout is None else _timeout(timeout)


class _Connection:
    """The arguments both clients take. ``timeout`` is every call's default deadline in
    seconds (retries included). ``tls`` (or ``ca_file``) makes the channel TLS, verified
    against ``ca_file`` or the system's roots; ``cert_file`` + ``key_file`` add the
    client's own certificate (mTLS); ``server_name`` is the name to verify the router's
    certificate by when it is not the address's host. ``token`` is sent as
    ``authorization: Bearer <token>`` on every call. ``max_attempts``: tries per call on
    UNAVAILABLE (1: no retries). ``load_balancing``: ``round_robin`` (calls spread over
    every address ``address`` resolves to, e.g. ``dns:///routers:50051``) or
    ``pick_first``. ``skip_unhealthy``: send no call to a router whose health service does
    not say SERVING (then ``health()`` fails UNAVAILABLE rather than answer NOT_SERVING).
    ``options``: more gRPC channel options."""

    def __init__(
        self,
        address: str = "127.0.0.1:50051",
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        tls: bool = False,
        ca_file: str | Path | None = None,
        cert_file: str | Path | None = None,
        key_file: str | Path | None = None,
        token: str | None = None,
        server_name: str | None = None,
        max_attempts: int = 5,
        load_balancing: str = "round_robin",
        skip_unhealthy: bool = False,
        options: Sequence[tuple[str, Any]] = (),
    ) -> None:
        self._options = _Options(
            address,
            timeout=timeout,
            tls=tls,
            ca_file=ca_file,
            cert_file=cert_file,
            key_file=key_file,
            token=token,
            server_name=server_name,
            max_attempts=max_attempts,
            load_balancing=load_balancing,
            skip_unhealthy=skip_unhealthy,
            options=options,
        )
        self._open(self._options)

    def _open(self, o: _Options) -> None:
        raise NotImplementedError


def _request(text: str, allowed_labels: Sequence[str], top_labels: int) -> pb.ClassifyRequest:
    return pb.ClassifyRequest(text=text, allowed_labels=list(allowed_labels), top_labels=top_labels)


def _status_name(response: health_pb2.HealthCheckResponse) -> str:
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


def _batch(texts: Sequence[str], allowed_labels: Sequence[str], top_labels: int) -> Any:
    return pb.ClassifyBatchRequest(
        requests=[_request(t, allowed_labels, top_labels) for t in texts]
    )


def _feedback(text: str, request_id: str, correct_label: str | None, source: str) -> Any:
    return pb.SubmitFeedbackRequest(
        text=text,
        request_id=request_id,
        correct_label=correct_label or "",
        none_of_these=correct_label is None,
        source=source,
    )


def _health_request(service: str) -> Any:
    return health_pb2.HealthCheckRequest(service=service)


class Client(_Connection):
    """A blocking client over one channel; use it as a context manager or ``close()`` it.
    Failed calls raise a :class:`~qroute_client.errors.QrouteClientError` subclass.
    The arguments: see ``_Connection`` (docs/clients.md lists them)."""

    def _open(self, o: _Options) -> None:
        self._channel = (
            grpc.secure_channel(o.address, o.credentials, o.options)
            if o.credentials is not None
            else grpc.insecure_channel(o.address, o.options)
        )
        self._stub = router_pb2_grpc.RouterServiceStub(self._channel)
        self._health: Any = health_pb2_grpc.HealthStub(self._channel)

    def _call(self, rpc: Any, request: Any, timeout: float | None) -> Any:
        try:
            return rpc(
                request, timeout=self._options.deadline(timeout), metadata=self._options.metadata
            )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    def classify(
        self,
        text: str,
        *,
        allowed_labels: Sequence[str] = (),
        top_labels: int = 0,
        timeout: float | None = None,
    ) -> Classification:
        request = _request(text, allowed_labels, top_labels)
        return Classification.from_pb(self._call(self._stub.Classify, request, timeout))

    def classify_batch(
        self,
        texts: Sequence[str],
        *,
        allowed_labels: Sequence[str] = (),
        top_labels: int = 0,
        timeout: float | None = None,
    ) -> list[Classification]:
        """One answer per text, in order, from one ClassifyBatch call."""
        request = _batch(texts, allowed_labels, top_labels)
        response = self._call(self._stub.ClassifyBatch, request, timeout)
        return [Classification.from_pb(r) for r in response.responses]

    def index_info(self, *, timeout: float | None = None) -> IndexInfo:
        """The index version served, its labels, the configuration and the request
        limits (GetIndexInfo). FailedPrecondition while no index is served."""
        request = pb.GetIndexInfoRequest()
        return IndexInfo.from_pb(self._call(self._stub.GetIndexInfo, request, timeout))

    def submit_feedback(
        self,
        correct_label: str | None,
        *,
        text: str = "",
        request_id: str = "",
        source: str = "",
        timeout: float | None = None,
    ) -> None:
        """Tell the router's review queue what the answer should have been:
        ``correct_label``, or None for "none of these". Name the answer by the
        ``Classification.request_id`` it came with, by its ``text``, or both. An unknown
        label is InvalidArgument; FailedPrecondition while the review queue is off."""
        request = _feedback(text, request_id, correct_label, source)
        self._call(self._stub.SubmitFeedback, request, timeout)

    def health(self, service: str = "", *, timeout: float | None = None) -> str:
        """The ``grpc.health.v1`` status name: SERVING, NOT_SERVING, ..."""
        return _status_name(self._call(self._health.Check, _health_request(service), timeout))

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class AsyncClient(_Connection):
    """The asyncio form of :class:`Client` (same arguments and methods, awaited);
    ``async with`` it or ``await close()``. Create it inside the event loop that uses it."""

    def _open(self, o: _Options) -> None:
        self._channel = (
            grpc.aio.secure_channel(o.address, o.credentials, o.options)
            if o.credentials is not None
            else grpc.aio.insecure_channel(o.address, o.options)
        )
        self._stub = router_pb2_grpc.RouterServiceStub(self._channel)
        self._health: Any = health_pb2_grpc.HealthStub(self._channel)

    async def _call(self, rpc: Any, request: Any, timeout: float | None) -> Any:
        try:
            return await rpc(
                request, timeout=self._options.deadline(timeout), metadata=self._options.metadata
            )
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None

    async def classify(
        self,
        text: str,
        *,
        allowed_labels: Sequence[str] = (),
        top_labels: int = 0,
        timeout: float | None = None,
    ) -> Classification:
        request = _request(text, allowed_labels, top_labels)
        return Classification.from_pb(await self._call(self._stub.Classify, request, timeout))

    async def classify_batch(
        self,
        texts: Sequence[str],
        *,
        allowed_labels: Sequence[str] = (),
        top_labels: int = 0,
        timeout: float | None = None,
    ) -> list[Classification]:
        request = _batch(texts, allowed_labels, top_labels)
        response = await self._call(self._stub.ClassifyBatch, request, timeout)
        return [Classification.from_pb(r) for r in response.responses]

    async def index_info(self, *, timeout: float | None = None) -> IndexInfo:
        request = pb.GetIndexInfoRequest()
        return IndexInfo.from_pb(await self._call(self._stub.GetIndexInfo, request, timeout))

    async def submit_feedback(
        self,
        correct_label: str | None,
        *,
        text: str = "",
        request_id: str = "",
        source: str = "",
        timeout: float | None = None,
    ) -> None:
        request = _feedback(text, request_id, correct_label, source)
        await self._call(self._stub.SubmitFeedback, request, timeout)

    async def health(self, service: str = "", *, timeout: float | None = None) -> str:
        response = await self._call(self._health.Check, _health_request(service), timeout)
        return _status_name(response)

    async def close(self) -> None:
        await self._channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

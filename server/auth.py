"""Bearer-token auth of every call, in one gRPC server interceptor.

A caller sends ``authorization: Bearer <token>``; no token is UNAUTHENTICATED, a token
not in ``server.auth.tokens_file`` is PERMISSION_DENIED. The health service is exempt:
orchestrators probe it without credentials. Tokens are compared as sha256 digests with
``hmac.compare_digest`` against every known token, so neither the time taken nor the
file's order says which bytes matched; the file may hold the digests themselves
(``sha256:<hex>``) instead of the tokens. No token, given or known, is ever logged.

The file is re-read when its content changes, checked at most once a second on the
path of a call, so tokens are added and revoked without a restart. A change that does
not parse keeps the tokens in use (and says why in the log).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health

from qroute.errors import ConfigError

__all__ = ["TokenAuthInterceptor", "TokenFile", "parse_tokens"]

log = logging.getLogger(__name__)

_EXEMPT = f"/{health.SERVICE_NAME}/"
_PREFIX = "sha256:"
_SCHEME = "bearer "
# How often, at most, a call looks at the file again.
_CHECK_EVERY_S = 1.0


def parse_tokens(text: str, source: str) -> frozenset[bytes]:
    """The sha256 digests of the tokens in a tokens file's ``text``; raises ConfigError
    naming ``source`` and the line of a ``sha256:`` entry that is not 64 hex digits."""
    digests = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(_PREFIX):
            hexdigest = line[len(_PREFIX) :].strip().lower()
            try:
                digest = bytes.fromhex(hexdigest)
            except ValueError:
                digest = b""
            if len(digest) != hashlib.sha256().digest_size:
                raise ConfigError(
                    f"{source}, line {number}: a sha256: entry needs 64 hex digits "
                    "(`printf %s TOKEN | sha256sum`)"
                )
            digests.add(digest)
        else:
            digests.add(hashlib.sha256(line.encode("utf-8")).digest())
    return frozenset(digests)


class TokenFile:
    """The tokens of ``path``, kept current: ``load`` reads it (raising ConfigError),
    ``accepts`` re-reads it when its content changed, at most once per ``every_s``."""

    def __init__(self, path: str | Path, every_s: float = _CHECK_EVERY_S) -> None:
        self._path = Path(path)
        self._source = f"server.auth.tokens_file {self._path}"
        self._every_s = every_s
        self._checked = -float("inf")
        self._seen: bytes | None = None
        self._digests: frozenset[bytes] = frozenset()
        self._problem: str | None = None

    def load(self) -> None:
        """Read the file now; raises ConfigError when it cannot be read or parsed."""
        try:
            data = self._path.read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"cannot read {self._source}: {exc.strerror} (unset it for no auth)"
            ) from None
        self._install(data)

    def _install(self, data: bytes) -> None:
        try:
            # utf-8-sig: a byte order mark (Notepad, PowerShell 5) would otherwise become
            # part of the first line, silently refusing its token or digest.
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ConfigError(f"{self._source} is not UTF-8 text") from None
        digests = parse_tokens(text, self._source)
        if not digests:
            log.warning("%s holds no token: every call but health is refused", self._source)
        self._digests = digests
        self._seen = hashlib.sha256(data).digest()
        self._checked = time.monotonic()

    def _refresh(self) -> None:
        now = time.monotonic()
        if now - self._checked < self._every_s:
            return
        self._checked = now
        try:
            data = self._path.read_bytes()
        except OSError as exc:
            self._keep(f"cannot read {self._source}: {exc.strerror}")
            return
        if hashlib.sha256(data).digest() == self._seen:
            return
        try:
            self._install(data)
        except ConfigError as exc:
            self._keep(str(exc))
            return
        self._problem = None
        log.info("%s re-read: %d token(s)", self._source, len(self._digests))

    def _keep(self, problem: str) -> None:
        if problem != self._problem:  # once per distinct cause, not on every check
            log.error("%s; the tokens read before keep serving", problem)
        self._problem = problem

    def accepts(self, token: str) -> bool:
        self._refresh()
        digest = hashlib.sha256(token.encode("utf-8")).digest()
        # Compare against every token: stopping at the first match would time its place.
        found = False
        for known in self._digests:
            found |= hmac.compare_digest(digest, known)
        return found


def _bearer(metadata: Any) -> str | None:
    """The token of the call's ``authorization: Bearer`` metadata, or None."""
    for key, value in metadata or ():
        if key != "authorization":
            continue
        text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
        if text[: len(_SCHEME)].lower() == _SCHEME:
            return text[len(_SCHEME) :].strip() or None
    return None


def _refusal(
    handler: grpc.RpcMethodHandler[Any, Any], code: grpc.StatusCode, message: str
) -> grpc.RpcMethodHandler[Any, Any]:
    """A handler of the same shape as ``handler`` that ends the call with ``code``."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(code, message)

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse)
    return grpc.unary_unary_rpc_method_handler(refuse)


class TokenAuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses every call but health without a known bearer token."""

    def __init__(self, tokens: TokenFile) -> None:
        self.tokens = tokens

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(_EXEMPT):
            return handler
        token = _bearer(handler_call_details.invocation_metadata)
        if token is None:
            return _refusal(
                handler,
                grpc.StatusCode.UNAUTHENTICATED,
                "this router needs a token: send `authorization: Bearer <token>`",
            )
        if not self.tokens.accepts(token):
            return _refusal(handler, grpc.StatusCode.PERMISSION_DENIED, "the token is not accepted")
        return handler

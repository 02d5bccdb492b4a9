"""The serving sections: the router's listener, its TLS and auth, and how clients dial it."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import (
    Field,
    SecretStr,
    model_validator,
)

from qroute.config.section import Section


class TLSSettings(Section):
    """The router's certificate (restart-only paths; the files are re-read when they
    change, so certificates rotate without a restart). None: plaintext."""

    # PEM: the certificate chain (leaf first) and its private key.
    cert_file: str | None = None
    key_file: str | None = None
    # PEM CA certificate(s): set, clients must present a certificate signed by one (mTLS).
    client_ca_file: str | None = None

    @model_validator(mode="after")
    def _pair(self) -> TLSSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (the router's TLS pair)")
        if self.client_ca_file is not None and self.cert_file is None:
            raise ValueError("client_ca_file (mTLS) needs cert_file and key_file")
        return self

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None


class AuthSettings(Section):
    """Bearer-token auth of every call but health (restart-only path; the file is
    re-read when it changes)."""

    # One token per line, or its digest as sha256:<64 hex>; blank lines and # comments
    # are ignored. None: no auth.
    tokens_file: str | None = None

    @property
    def enabled(self) -> bool:
        return self.tokens_file is not None


class ServerSettings(Section):
    bind: str = "127.0.0.1:50051"
    # How often the router looks for a newly published index version, and for a
    # changed config file.
    index_poll_s: float = Field(2.0, gt=0)
    config_poll_s: float = Field(2.0, gt=0)
    # Prometheus metrics over HTTP on this port (0: any free port; null: off).
    metrics_port: int | None = Field(9100, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    # On SIGTERM/SIGINT: health turns NOT_SERVING, new calls are refused (UNAVAILABLE),
    # and accepted ones get this long to finish before they are cancelled.
    shutdown_grace_s: float = Field(5.0, ge=0)
    # OpenTelemetry spans per request and stage: off, console (stdout) or otlp (the
    # [tracing] extra; endpoint and headers from the standard OTEL_EXPORTER_OTLP_* vars).
    tracing: Literal["off", "console", "otlp"] = "off"
    tls: TLSSettings = TLSSettings()
    auth: AuthSettings = AuthSettings()
    # gRPC server reflection (grpcurl without the proto). None: on unless auth is on
    # (with auth, reflection calls need a token like any other).
    reflection: bool | None = None
    # Router processes sharing `bind` (SO_REUSEPORT), each with its own models (one
    # intra-op thread each), batcher, result cache and metrics port; 0: one per CPU core
    # this process may use. 1: a single process, no supervisor.
    workers: int = Field(1, ge=0, le=256)

    @property
    def worker_count(self) -> int:
        return self.workers or len(os.sched_getaffinity(0))

    @property
    def intra_op_threads(self) -> int:
        """Threads a model library may use within one operation, for every model a
        router process loads (torch, ONNX Runtime sessions): 1 with several workers, as
        the cores are shared out as processes and more threads per process would only
        fight over them; 0 (the library's own default) with one."""
        return 1 if self.worker_count > 1 else 0

    @property
    def reflection_enabled(self) -> bool:
        return self.reflection if self.reflection is not None else not self.auth.enabled

    @model_validator(mode="after")
    def _metrics_ports(self) -> ServerSettings:
        # Worker i serves its metrics on metrics_port + i: the last one must be a port.
        if self.metrics_port and self.metrics_port + self.worker_count - 1 > 65535:
            raise ValueError(
                f"metrics_port {self.metrics_port} + {self.worker_count} workers passes port "
                "65535 (worker i serves metrics_port + i): lower metrics_port"
            )
        return self


class ClientSettings(Section):
    """How ``qroute classify`` and ``qroute health`` reach a router (read per run; the
    router itself never uses them)."""

    # host:port to dial; null: the router's own server.bind (0.0.0.0 / [::] dial loopback).
    address: str | None = None
    # TLS: verified against ca_file, else the system's roots. cert_file + key_file: mTLS.
    tls: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    # The name the router's certificate is verified by, when it is not the address's host.
    server_name: str | None = None
    # Sent as `authorization: Bearer <token>` on every call.
    token: SecretStr | None = None
    # Default deadline of a classify call, retries on UNAVAILABLE included.
    timeout_s: float = Field(30.0, gt=0)

    @model_validator(mode="after")
    def _key_pair(self) -> ClientSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (the client's mTLS pair)")
        return self

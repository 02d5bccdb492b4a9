"""The router's TLS credentials (``server.tls``), re-read when the files change.

gRPC asks ``fetch`` before each new connection's handshake; it answers None while the
files' content is the one in use, else the new certificate configuration. Rotating a
certificate (cert-manager, a Kubernetes Secret's symlink swap) therefore needs no
restart: connections made after the change see the new certificate, open ones keep
theirs. A file that cannot be read mid-rotation keeps the configuration in use.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
from pathlib import Path

import grpc

from qroute.config import TLSSettings
from qroute.errors import ConfigError

__all__ = ["CertificateFiles", "is_loopback"]

log = logging.getLogger(__name__)

# What each file must hold: a PEM certificate, or a PEM private key of any kind
# (PKCS#8, or the older RSA / EC forms).
_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----")
_KEY = re.compile(rb"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----")
_EXPECTED = {
    "cert_file": ("certificate", _CERTIFICATE),
    "key_file": ("private key", _KEY),
    "client_ca_file": ("CA certificate", _CERTIFICATE),
}


def is_loopback(bind: str) -> bool:
    """Whether a ``host:port`` (or ``unix:`` socket) bind address is reachable from this
    machine only."""
    if bind.startswith("unix:"):
        return True
    host = bind.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class CertificateFiles:
    """The PEM files of ``server.tls``; ``credentials()`` reads them (raising
    ConfigError naming the setting) and returns server credentials that follow them."""

    def __init__(self, settings: TLSSettings) -> None:
        assert settings.cert_file is not None and settings.key_file is not None
        self._files = {
            name: Path(path)
            for name, path in (
                ("cert_file", settings.cert_file),
                ("key_file", settings.key_file),
                ("client_ca_file", settings.client_ca_file),
            )
            if path is not None
        }
        self.mutual = settings.client_ca_file is not None
        self._seen: bytes | None = None
        self._problem: str | None = None

    def _read(self) -> dict[str, bytes]:
        contents = {}
        for name, path in self._files.items():
            where = f"server.tls.{name} {path}"
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise ConfigError(f"cannot read {where}: {exc.strerror}") from None
            what, pattern = _EXPECTED[name]
            if not pattern.search(data):
                raise ConfigError(f"{where} holds no PEM {what}")
            contents[name] = data
        return contents

    @staticmethod
    def _digest(contents: dict[str, bytes]) -> bytes:
        digest = hashlib.sha256()
        for name in sorted(contents):
            digest.update(hashlib.sha256(contents[name]).digest())
        return digest.digest()

    def _configuration(self, contents: dict[str, bytes]) -> grpc.ServerCertificateConfiguration:
        return grpc.ssl_server_certificate_configuration(
            [(contents["key_file"], contents["cert_file"])],
            root_certificates=contents.get("client_ca_file"),
        )

    def credentials(self) -> grpc.ServerCredentials:
        contents = self._read()
        self._seen = self._digest(contents)
        return grpc.dynamic_ssl_server_credentials(
            self._configuration(contents),
            # grpc documents None as "keep the current one"; the stubs do not allow it.
            self.fetch,  # type: ignore[arg-type]
            require_client_authentication=self.mutual,
        )

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """None while the files are unchanged; the new configuration once they change."""
        try:
            contents = self._read()
        except ConfigError as exc:
            if str(exc) != self._problem:  # once per cause: this runs on every handshake
                log.error("%s; the certificate in use keeps serving", exc)
                self._problem = str(exc)
            return None
        self._problem = None
        digest = self._digest(contents)
        if digest == self._seen:
            return None
        self._seen = digest
        log.info("TLS certificate files changed: new connections use the new ones")
        return self._configuration(contents)

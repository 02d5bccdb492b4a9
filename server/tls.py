"""The router's TLS credentials (``server.tls``), re-read when the files change.

gRPC asks ``fetch`` before each new connection's handshake; it answers None while the
files' content is the one in use, else the new certificate configuration. Rotating a
certificate (cert-manager, a Kubernetes Secret's symlink swap) therefore needs no
restart: connections made after the change see the new certificate, open ones keep
theirs. A file that cannot be read mid-rotation, or a key that does not belong to its
certificate (the key renewed, the certificate not yet), keeps the configuration in use.

The pair is checked here (stdlib OpenSSL) before gRPC sees it: gRPC itself only says
"Unable to create secure server", which at start reads as a port it could not bind, and
mid-rotation it keeps the old certificate without a word to this module.
"""

from __future__ import annotations

import contextlib
import hashlib
import ipaddress
import logging
import re
import ssl
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
# A key gRPC cannot use: it takes no passphrase.
_ENCRYPTED = re.compile(rb"-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type: *4, *ENCRYPTED")


class _Passphrase(Exception):
    """Raised by the passphrase callback: OpenSSL asked for one (an encrypted key)."""


def _no_passphrase() -> bytes:
    raise _Passphrase


def _why(exc: OSError) -> str:
    """OpenSSL's reason (KEY_VALUES_MISMATCH, PEM lib, ...) or the OS error's text."""
    return str(getattr(exc, "reason", None) or exc.strerror or exc)


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
            if name == "key_file" and _ENCRYPTED.search(data):
                raise ConfigError(f"{where} is encrypted: gRPC needs the key without a passphrase")
            contents[name] = data
        return contents

    def _check(self) -> None:
        """Raise ConfigError, naming the settings, when the files do not parse or the key
        does not belong to the certificate. Reads the paths again (the stdlib loads PEM
        from files only); gRPC stays the judge of the bytes it is given, so a change in
        between costs at most one more look on the next handshake."""
        cert, key = self._files["cert_file"], self._files["key_file"]
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        # Judge only whether the files parse and belong together: which key sizes and
        # digests are acceptable is gRPC's (BoringSSL's) call, not this OpenSSL's policy.
        with contextlib.suppress(ssl.SSLError):  # a build without security levels
            context.set_ciphers("DEFAULT:@SECLEVEL=0")
        try:
            context.load_cert_chain(cert, key, password=_no_passphrase)
        except _Passphrase:
            raise ConfigError(
                f"server.tls.key_file {key} is encrypted: gRPC needs the key without a passphrase"
            ) from None
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"server.tls.key_file {key} and server.tls.cert_file {cert} are not a "
                f"usable pair ({_why(exc)}): the key must be the "
                "certificate's own, both PEM (replace the key, then the certificate, or "
                "both in one rename)"
            ) from None
        ca = self._files.get("client_ca_file")
        if ca is not None:
            try:
                context.load_verify_locations(cafile=ca)
            except (ssl.SSLError, OSError) as exc:
                raise ConfigError(
                    f"server.tls.client_ca_file {ca} holds no usable CA certificate ({_why(exc)})"
                ) from None

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
        self._check()
        self._seen = self._digest(contents)
        return grpc.dynamic_ssl_server_credentials(
            self._configuration(contents),
            # grpc documents None as "keep the current one"; the stubs do not allow it.
            self.fetch,  # type: ignore[arg-type]
            require_client_authentication=self.mutual,
        )

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """None while the files are unchanged, or changed into something unusable (the
        configuration in use keeps serving); the new configuration once they change."""
        try:
            contents = self._read()
        except ConfigError as exc:
            self._keep(str(exc))
            return None
        digest = self._digest(contents)
        if digest == self._seen:
            self._problem = None
            return None
        try:
            self._check()
        except ConfigError as exc:
            # Not remembered as seen: the next handshake looks again, so the certificate
            # that completes a rotation is picked up as soon as it lands.
            self._keep(str(exc))
            return None
        self._problem = None
        self._seen = digest
        log.info("TLS certificate files changed: new connections use the new ones")
        return self._configuration(contents)

    def _keep(self, problem: str) -> None:
        if problem != self._problem:  # once per cause: this runs on every handshake
            log.error("%s; the certificate in use keeps serving", problem)
            self._problem = problem

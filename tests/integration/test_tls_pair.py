"""A TLS key that does not belong to its certificate (or a PEM that does not parse)
names ``server.tls``, at start and mid-rotation, instead of passing for a bind failure
or for an applied rotation."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest
from qroute_server.app import RouterApp
from qroute_server.tls import CertificateFiles

from qroute.config import Settings, TLSSettings
from qroute.errors import BindError, ConfigError
from tests.integration.certificates import ROUTER_NAMES, issue, write_pair


def _pairs(directory: Path) -> tuple[tuple[Path, Path], tuple[Path, Path]]:
    one = write_pair(directory / "one", "router", *issue("router", None, ROUTER_NAMES))
    two = write_pair(directory / "two", "router", *issue("router", None, ROUTER_NAMES))
    return one, two


async def test_a_key_of_another_certificate_ends_the_start_naming_tls(tmp_path: Path) -> None:
    (cert, _), (_, other_key) = _pairs(tmp_path)
    settings = Settings(
        server={
            "bind": "127.0.0.1:0",
            "metrics_port": None,
            "tls": {"cert_file": str(cert), "key_file": str(other_key)},
        },
        store={"location": str(tmp_path / "store"), "collection": "test"},
    )
    app = RouterApp(settings)
    try:
        with pytest.raises(ConfigError, match=r"server\.tls\.key_file") as raised:
            await app.start()
        assert not isinstance(raised.value, BindError)
        assert "server.tls.cert_file" in str(raised.value)
    finally:
        await app.stop(grace=0)


def test_a_pem_that_does_not_parse_ends_the_start(tmp_path: Path) -> None:
    (cert, key), _ = _pairs(tmp_path)
    broken = tmp_path / "broken.key"
    broken.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n")
    files = CertificateFiles(TLSSettings(cert_file=str(cert), key_file=str(broken)))
    with pytest.raises(ConfigError, match=r"server\.tls\.key_file"):
        files.credentials()
    # The matching pair is fine.
    CertificateFiles(TLSSettings(cert_file=str(cert), key_file=str(key))).credentials()


def test_a_half_rotated_pair_keeps_the_certificate_in_use(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (cert, key), (new_cert, new_key) = _pairs(tmp_path)
    files = CertificateFiles(TLSSettings(cert_file=str(cert), key_file=str(key)))
    files.credentials()
    assert files.fetch() is None
    # The key first, as docs/serving.md says: until the certificate follows, the pair
    # does not match and the one in use keeps serving, said once, naming the settings.
    os.replace(new_key, key)
    with caplog.at_level(logging.INFO, logger="qroute_server.tls"):
        assert files.fetch() is None
        assert files.fetch() is None
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(problems) == 1
    assert "server.tls.key_file" in problems[0].getMessage()
    assert "new connections use the new ones" not in caplog.text
    os.replace(new_cert, cert)
    assert files.fetch() is not None
    assert files.fetch() is None

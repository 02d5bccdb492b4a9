"""Certificates made in the test, as PEM files: a CA with a router and a client
certificate signed by it, or a self-signed router certificate."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

Issuer = tuple[x509.Name, ec.EllipticCurvePrivateKey]
# What the router's certificate is valid for: the addresses the tests dial.
ROUTER_NAMES: list[x509.GeneralName] = [
    x509.DNSName("localhost"),
    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
]


def issue(
    subject: str, issuer: Issuer | None, san: list[x509.GeneralName] | None = None
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A certificate for ``subject`` signed by ``issuer`` (None: self-signed, a CA)."""
    now = datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name, issuer_key = issuer or (name, key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), True)
    )
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), False)
    return builder.sign(issuer_key, hashes.SHA256()), key


def write_pair(
    directory: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> tuple[Path, Path]:
    """``name.pem`` and ``name.key`` in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def certificates(directory: Path) -> dict[str, Path]:
    """A CA, a router certificate for 127.0.0.1 and localhost, and a client certificate,
    as PEM files: ``ca.pem``, ``server.pem``/``server.key``, ``client.pem``/``client.key``."""
    ca, ca_key = issue("qroute test CA", None)
    server, server_key = issue("router", (ca.subject, ca_key), san=ROUTER_NAMES)
    client, client_key = issue("caller", (ca.subject, ca_key))
    files = {}
    for name, cert, key in (
        ("ca", ca, ca_key),
        ("server", server, server_key),
        ("client", client, client_key),
    ):
        files[f"{name}.pem"], files[f"{name}.key"] = write_pair(directory, name, cert, key)
    return files

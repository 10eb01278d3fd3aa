"""Credentials for a secure Flower deployment: TLS certificates and SuperNode keys.

A hospital network runs the SuperLink with TLS (``--ssl-ca-certfile/--ssl-certfile/
--ssl-keyfile``) and SuperNode authentication (``--enable-supernode-auth``); every SuperNode
verifies the SuperLink's certificate (``--root-certificates``) and signs its requests with its
own EC key (``--auth-supernode-private-key``), whose public half is registered with
``flwr supernode register``. ``hevit flower-credentials`` writes all of these; a production
deployment would take the certificate from the hospital's own CA instead.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["TlsFiles", "make_supernode_key", "make_tls_certificates"]


@dataclass(frozen=True)
class TlsFiles:
    ca_certificate: Path
    server_certificate: Path
    server_key: Path


def _write_private(path: Path, data: bytes) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


def make_tls_certificates(folder, *, hosts=("127.0.0.1", "localhost"), days: int = 365) -> TlsFiles:
    """A private CA and a SuperLink certificate it signs for ``hosts`` (IP addresses or DNS
    names), ECDSA P-384. Private keys are written with mode 0600 (new files only)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hevit federation CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA384())
    )
    names = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    server_key = ec.generate_private_key(ec.SECP384R1())
    server = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, str(hosts[0]))]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA384())
    )
    pem = serialization.Encoding.PEM
    files = TlsFiles(folder / "ca.crt", folder / "server.pem", folder / "server.key")
    files.ca_certificate.write_bytes(ca.public_bytes(pem))
    files.server_certificate.write_bytes(server.public_bytes(pem))
    _write_private(
        files.server_key,
        server_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
    return files


def make_supernode_key(folder, name: str) -> tuple[Path, Path]:
    """A SuperNode's EC P-384 key pair in OpenSSH format: (private key, 0600; public key)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP384R1())
    private = _write_private(
        folder / f"{name}.key",
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ),
    )
    public = folder / f"{name}.pub"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
    )
    return private, public

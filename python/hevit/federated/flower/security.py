"""Credentials for a secure Flower deployment: TLS certificates and SuperNode keys.

A hospital network runs the SuperLink with TLS (``--ssl-ca-certfile/--ssl-certfile/
--ssl-keyfile``) and SuperNode authentication (``--enable-supernode-auth``); every SuperNode
verifies the SuperLink's certificate (``--root-certificates``) and signs its requests with its
own EC key (``--auth-supernode-private-key``), whose public half is registered with
``flwr supernode register``. ``hevit flower-credentials`` writes all of these; a production
deployment would take the certificate from the hospital's own CA instead.

:func:`observe_transport` reads how the Flower process serving this app was started (the
``flower-superlink`` or ``flower-supernode`` among the process's ancestors, Linux ``/proc``), so
the apps can refuse a network without TLS or node authentication that the run did not declare
insecure, and the report can say what was observed rather than what was claimed.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from ...errors import InsecureTransportError

__all__ = [
    "TlsFiles",
    "Transport",
    "make_supernode_key",
    "make_tls_certificates",
    "observe_transport",
    "require_secure_transport",
]


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


@dataclass(frozen=True)
class Transport:
    """How the Flower process that serves an app talks to the other side.

    ``observed`` is False when no ``flower-superlink``/``flower-supernode`` ancestor was found
    (another platform, or a ClientApp/ServerApp started by hand in ``process`` isolation): then
    nothing is known and the other fields are False.
    """

    observed: bool
    #: Flower's simulation runtime: every node in one process tree, no network between them
    simulation: bool = False
    tls: bool = False
    node_authentication: bool = False

    @property
    def secure(self) -> bool:
        return self.simulation or (self.tls and self.node_authentication)

    def describe(self) -> str:
        if not self.observed:
            return "not observed"
        if self.simulation:
            return "simulation (one machine, no network)"
        parts = ["TLS" if self.tls else "no TLS"]
        parts.append(
            "SuperNode authentication" if self.node_authentication else "no node authentication"
        )
        return " + ".join(parts)

    def to_dict(self) -> dict:
        return {**asdict(self), "description": self.describe()}


#: flags that make a connection secure, per Flower executable (Flower 1.41's CLI)
_SERVER, _NODE = "flower-superlink", "flower-supernode"


def _ancestor_command_lines(proc: Path = Path("/proc")):
    """argv of this process's ancestors, nearest first (empty where /proc is not readable)."""
    pid = os.getppid()
    seen = set()
    while pid > 1 and pid not in seen:
        seen.add(pid)
        try:
            argv = (proc / str(pid) / "cmdline").read_bytes().split(b"\0")
            stat = (proc / str(pid) / "stat").read_text()
        except OSError:
            return
        yield [a.decode(errors="replace") for a in argv if a]
        # the parent pid is the second field after the parenthesised command name
        pid = int(stat.rsplit(")", 1)[1].split()[1])


def observe_transport(role: str, *, proc: Path = Path("/proc")) -> Transport:
    """The transport of the Flower process serving this ``role`` (``server``: the SuperLink the
    ServerApp runs under; ``node``: the SuperNode the ClientApp runs under), read from that
    process's command line."""
    if role not in ("server", "node"):
        raise ValueError(f"role must be 'server' or 'node', got {role!r}")
    want = _SERVER if role == "server" else _NODE
    for argv in _ancestor_command_lines(proc):
        names = [Path(a).name for a in argv[:2]]
        if want in names or (role == "node" and _SERVER in names):
            flags = set(argv)
            if _SERVER in names and "--simulation" in flags:
                return Transport(observed=True, simulation=True)
            if role == "node" and _SERVER in names:
                break  # a node under a SuperLink that is not a simulation: not Flower's layout
            insecure = "--insecure" in flags
            if role == "server":
                tls = not insecure and "--ssl-certfile" in flags
                auth = "--enable-supernode-auth" in flags
            else:
                tls = not insecure
                auth = "--auth-supernode-private-key" in flags
            return Transport(observed=True, tls=tls, node_authentication=auth)
    return Transport(observed=False)


def require_secure_transport(transport: Transport, *, insecure_declared: bool, where: str) -> None:
    """Refuses an observed network without TLS or node authentication unless the run declared
    itself insecure (run_config ``insecure = true``, which the report records)."""
    if transport.observed and not transport.secure and not insecure_declared:
        raise InsecureTransportError(
            f"{where} runs over {transport.describe()}; start the SuperLink with TLS and "
            "--enable-supernode-auth (see `hevit flower-credentials`), or declare the run "
            "insecure with run_config insecure=true"
        )

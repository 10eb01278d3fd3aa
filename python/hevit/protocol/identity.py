"""Who is who in a federation: each hospital's Ed25519 identity key and the roster of all of them.

A hospital signs every contribution and every commitment with its :class:`HospitalIdentity`
(the private key never leaves it; files are 0600 in a private folder). The :class:`Roster` is the
federation's public material: the registered hospital ids, their public keys and the quorum. It is
provisioned to every hospital with its key folder (``hevit keygen``), never taken from the server:
a key holder verifies signatures against its own copy, so a server cannot add a hospital, speak for
one, or lower the quorum.

The quorum must be a strict majority of the roster. Two different aggregates of one round could
otherwise both collect a quorum of commitments from distinct hospitals (each hospital commits to one
aggregate per round), and the difference of two sums over overlapping sets is an individual update.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..errors import ParameterError, SecretKeyRefusedError, SerializationError, VerificationError

__all__ = ["HospitalIdentity", "Roster", "refuse_identity"]

_ROSTER_FORMAT = "hevit-roster/1"
_IDENTITY_FORMAT = b"hevit-identity/1\n"
#: Longest hospital id accepted (ids travel in every message header).
MAX_ID_LENGTH = 64


def _check_id(hospital_id) -> str:
    if (
        not isinstance(hospital_id, str)
        or not 0 < len(hospital_id) <= MAX_ID_LENGTH
        or not hospital_id.isprintable()
        or hospital_id.strip() != hospital_id
    ):
        raise ParameterError(
            f"a hospital id is a printable string of 1..{MAX_ID_LENGTH} characters without "
            f"surrounding spaces, got {hospital_id!r}"
        )
    return hospital_id


class HospitalIdentity:
    """One hospital's signing key (Ed25519). Keep it with the hospital's secret key files.

    Parameters
    ----------
    hospital_id : the id the roster registers this key under
    private_key : an ``Ed25519PrivateKey`` (use :meth:`generate` or :meth:`load`)
    """

    __slots__ = ("_key", "hospital_id")

    def __init__(self, hospital_id: str, private_key: Ed25519PrivateKey) -> None:
        if not isinstance(private_key, Ed25519PrivateKey):
            raise TypeError("private_key must be an Ed25519PrivateKey")
        self.hospital_id = _check_id(hospital_id)
        self._key = private_key

    @classmethod
    def generate(cls, hospital_id: str) -> HospitalIdentity:
        return cls(hospital_id, Ed25519PrivateKey.generate())

    @property
    def public_key(self) -> bytes:
        """The 32-byte public key the roster holds."""
        return self._key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(bytes(message))

    def save(self, path) -> Path:
        """Writes a new file readable by the owner only (mode 0600, never overwriting)."""
        path = Path(path)
        raw = self._key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        body = _IDENTITY_FORMAT + self.hospital_id.encode() + b"\n" + raw.hex().encode() + b"\n"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(body)
        return path

    @classmethod
    def load(cls, path) -> HospitalIdentity:
        """Reads a file written by :meth:`save`; refuses one other users can access or own, or
        that lies in a folder others can write to."""
        from ..he.context import check_private_folder

        path = Path(path)
        info = path.stat()
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise PermissionError(
                f"{path} holds a hospital's signing key but is accessible to other users "
                f"(mode {stat.filemode(info.st_mode)}); run `chmod 600 {path}`"
            )
        if hasattr(os, "getuid") and info.st_uid != os.getuid():
            raise PermissionError(f"{path} holds a signing key but belongs to user {info.st_uid}")
        check_private_folder(path.parent, what="the folder of a signing key")
        lines = path.read_bytes().split(b"\n")
        try:
            if lines[0] + b"\n" != _IDENTITY_FORMAT or len(lines) != 4 or lines[3]:
                raise ValueError("not a hevit identity file")
            raw = bytes.fromhex(lines[2].decode())
            key = Ed25519PrivateKey.from_private_bytes(raw)
            return cls(lines[1].decode(), key)
        except (ValueError, UnicodeDecodeError) as exc:
            raise SerializationError(f"{path}: damaged identity file ({exc})") from None

    def __repr__(self) -> str:
        return f"HospitalIdentity({self.hospital_id!r}, <private key hidden>)"


def refuse_identity(obj, where: str) -> None:
    """Server-side objects never take a signing key (SecretKeyRefusedError)."""
    if isinstance(obj, (HospitalIdentity, Ed25519PrivateKey)):
        raise SecretKeyRefusedError(f"{where} takes public material only, not a signing key")


@dataclass(frozen=True)
class Roster:
    """The registered hospitals of a federation, their public keys and the quorum.

    Parameters
    ----------
    federation : a name for the federation (bound into every signature)
    hospitals : {hospital id: 32-byte Ed25519 public key}
    quorum : fewest distinct contributors an aggregate needs, a strict majority of the hospitals
    """

    federation: str
    hospitals: dict[str, bytes] = field(default_factory=dict)
    quorum: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.federation, str) or not 0 < len(self.federation) <= 128:
            raise ParameterError("a federation name is a string of 1..128 characters")
        if not self.hospitals:
            raise ParameterError("a roster registers at least one hospital")
        keys = {}
        for hid, key in self.hospitals.items():
            key = bytes(key)
            if len(key) != 32:
                raise ParameterError(f"hospital {hid!r}: an Ed25519 public key has 32 bytes")
            keys[_check_id(hid)] = key
        if len(set(keys.values())) != len(keys):
            raise ParameterError("two hospitals share one public key")
        object.__setattr__(self, "hospitals", dict(sorted(keys.items())))
        quorum = self.quorum
        if not isinstance(quorum, int) or isinstance(quorum, bool):
            raise ParameterError(f"quorum must be an integer, got {quorum!r}")
        n = len(keys)
        if not n // 2 < quorum <= n:
            raise ParameterError(
                f"quorum {quorum} of {n} hospitals: it must be a strict majority "
                f"({n // 2 + 1}..{n}) so that no round can have two aggregates that both collect a "
                "quorum of commitments"
            )

    @classmethod
    def of(cls, federation: str, identities, *, quorum: int | None = None) -> Roster:
        """The roster of these identities (``quorum`` default: all of them)."""
        identities = list(identities)
        return cls(
            federation,
            {i.hospital_id: i.public_key for i in identities},
            len(identities) if quorum is None else int(quorum),
        )

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(self.hospitals)

    @property
    def digest(self) -> bytes:
        """32 bytes binding a signature to this federation, its members and its quorum."""
        return hashlib.blake2b(self.to_bytes(), digest_size=32, person=b"hevit-roster").digest()

    def verify(self, hospital_id: str, message: bytes, signature: bytes) -> None:
        """Raises VerificationError unless ``signature`` is ``hospital_id``'s on ``message``."""
        key = self.hospitals.get(hospital_id)
        if key is None:
            raise VerificationError(f"{hospital_id!r} is not a registered hospital")
        if not isinstance(signature, (bytes, bytearray)) or len(signature) != 64:
            raise VerificationError(f"{hospital_id!r}: a signature has 64 bytes")
        try:
            Ed25519PublicKey.from_public_bytes(key).verify(bytes(signature), bytes(message))
        except InvalidSignature:
            raise VerificationError(f"{hospital_id!r}: signature does not verify") from None

    def to_bytes(self) -> bytes:
        body = {
            "format": _ROSTER_FORMAT,
            "federation": self.federation,
            "quorum": self.quorum,
            "hospitals": {h: k.hex() for h, k in self.hospitals.items()},
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Roster:
        try:
            body = json.loads(bytes(data))
            if body.get("format") != _ROSTER_FORMAT:
                raise ValueError("not a hevit roster")
            hospitals = {str(h): bytes.fromhex(k) for h, k in body["hospitals"].items()}
            return cls(str(body["federation"]), hospitals, body["quorum"])
        except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
            if isinstance(exc, ParameterError):
                raise
            raise SerializationError(f"damaged roster: {exc}") from None

    def save(self, path) -> Path:
        path = Path(path)
        path.write_bytes(self.to_bytes())
        return path

    @classmethod
    def load(cls, path) -> Roster:
        return cls.from_bytes(Path(path).read_bytes())


def save_federation_identities(
    hospital_dir, server_dir, *, federation: str, hospitals: int, quorum: int | None = None
) -> Roster:
    """Fresh identities for ``client-0 .. client-(hospitals-1)`` written to
    ``hospital_dir/identities/<id>.key`` (0600 in a 0700 folder) and their roster to
    ``roster.json`` in both folders; returns the roster. For one operator provisioning a whole
    federation (tests, simulations); in a real one each hospital generates its own identity and
    sends only its public key."""
    identities = [HospitalIdentity.generate(f"client-{k}") for k in range(int(hospitals))]
    roster = Roster.of(federation, identities, quorum=quorum)
    folder = Path(hospital_dir) / "identities"
    folder.mkdir(mode=0o700, parents=True, exist_ok=False)
    for identity in identities:
        identity.save(folder / f"{identity.hospital_id}.key")
    for d in (Path(hospital_dir), Path(server_dir)):
        roster.save(d / "roster.json")
    return roster

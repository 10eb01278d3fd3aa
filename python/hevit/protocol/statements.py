"""What hospitals sign: the canonical bytes of a contribution and of a commitment.

A signature covers every fact a key holder later checks, in one fixed binary encoding (a domain
tag, then each field length-prefixed), so no field can be moved, dropped or reinterpreted:

- :class:`ContributionStatement`: "in this federation, session, task and round, under this key
  set, I (contributor) contribute the ciphertext whose public seeds hash to ``seeds_digest``,
  of this shape, having trained from the aggregate ``parent``". The seeds fix c1 of the
  contribution (c1 is their expansion), so a key holder that checks the seeds in an aggregate
  against the signed digests knows c1 of the sum was not chosen by the server.
- :class:`CommitStatement`: "I hold the aggregate with this digest for this round". A round's
  aggregate is released to the server only with a quorum of matching commitments.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from ..errors import SerializationError

__all__ = ["CommitStatement", "ContributionStatement", "aggregate_digest", "seeds_digest"]

#: Longest session and task names (they travel in every message header).
MAX_NAME_LENGTH = 128


def _field(value) -> bytes:
    if isinstance(value, int):
        data = struct.pack("<q", value)
    elif isinstance(value, str):
        data = value.encode()
    else:
        data = bytes(value)
    return struct.pack("<I", len(data)) + data


def _encode(tag: bytes, *values) -> bytes:
    return b"".join([_field(tag), *(_field(v) for v in values)])


def _digest(data: bytes, person: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=32, person=person).digest()


def seeds_digest(seeds: bytes) -> bytes:
    """The hash a contributor signs of its ciphertexts' public seeds (in ciphertext order)."""
    return _digest(bytes(seeds), b"hevit-seeds")


def _check_name(value, what: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_NAME_LENGTH:
        raise SerializationError(f"{what} must be a string of 1..{MAX_NAME_LENGTH} characters")
    return value


def _check_digest(value, what: str, *, empty: bool = False) -> bytes:
    value = bytes(value)
    if len(value) != 32 and not (empty and len(value) == 0):
        raise SerializationError(f"{what} must be 32 bytes" + (" or empty" if empty else ""))
    return value


@dataclass(frozen=True)
class ContributionStatement:
    federation: bytes
    session: str
    task: str
    round: int
    keyset_id: bytes
    contributor: str
    #: digest of the aggregate this contribution was computed from (empty: none)
    parent: bytes
    seeds_digest: bytes
    rows: int
    cols: int

    def __post_init__(self) -> None:
        _check_digest(self.federation, "federation")
        _check_name(self.session, "session")
        _check_name(self.task, "task")
        _check_name(self.contributor, "contributor")
        _check_digest(self.parent, "parent", empty=True)
        _check_digest(self.seeds_digest, "seeds_digest")
        if len(bytes(self.keyset_id)) != 16:
            raise SerializationError("keyset_id must be 16 bytes")
        for name in ("round", "rows", "cols"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v < 2**40:
                raise SerializationError(f"{name} must be an integer in [0, 2^40)")

    def to_bytes(self) -> bytes:
        return _encode(
            b"hevit-contribution/1",
            self.federation,
            self.session,
            self.task,
            self.round,
            self.keyset_id,
            self.contributor,
            self.parent,
            self.seeds_digest,
            self.rows,
            self.cols,
        )

    def to_meta(self) -> dict:
        """JSON-safe form for a message header (rebuilt and re-encoded by the verifier)."""
        return {
            "federation": self.federation.hex(),
            "session": self.session,
            "task": self.task,
            "round": self.round,
            "keyset_id": self.keyset_id.hex(),
            "contributor": self.contributor,
            "parent": self.parent.hex(),
            "seeds_digest": self.seeds_digest.hex(),
            "rows": self.rows,
            "cols": self.cols,
        }

    @classmethod
    def from_meta(cls, meta) -> ContributionStatement:
        try:
            if not isinstance(meta, dict) or set(meta) != set(_STATEMENT_KEYS):
                raise ValueError("wrong fields")
            return cls(
                bytes.fromhex(meta["federation"]),
                meta["session"],
                meta["task"],
                meta["round"],
                bytes.fromhex(meta["keyset_id"]),
                meta["contributor"],
                bytes.fromhex(meta["parent"]),
                bytes.fromhex(meta["seeds_digest"]),
                meta["rows"],
                meta["cols"],
            )
        except (ValueError, TypeError, AttributeError) as exc:
            if isinstance(exc, SerializationError):
                raise
            raise SerializationError(f"malformed contribution statement: {exc}") from None


_STATEMENT_KEYS = (
    "federation",
    "session",
    "task",
    "round",
    "keyset_id",
    "contributor",
    "parent",
    "seeds_digest",
    "rows",
    "cols",
)


_COMMIT_KEYS = ("federation", "session", "task", "round", "digest", "signer")


@dataclass(frozen=True)
class CommitStatement:
    federation: bytes
    session: str
    task: str
    round: int
    #: the aggregate's digest (:func:`aggregate_digest`)
    digest: bytes
    signer: str

    def __post_init__(self) -> None:
        _check_digest(self.federation, "federation")
        _check_name(self.session, "session")
        _check_name(self.task, "task")
        _check_name(self.signer, "signer")
        _check_digest(self.digest, "digest")
        if not isinstance(self.round, int) or isinstance(self.round, bool) or self.round < 0:
            raise SerializationError("round must be a non-negative integer")

    def to_meta(self) -> dict:
        """JSON-safe form for a message header (rebuilt and re-encoded by the verifier)."""
        return {
            "federation": self.federation.hex(),
            "session": self.session,
            "task": self.task,
            "round": self.round,
            "digest": self.digest.hex(),
            "signer": self.signer,
        }

    @classmethod
    def from_meta(cls, meta) -> CommitStatement:
        try:
            if not isinstance(meta, dict) or set(meta) != set(_COMMIT_KEYS):
                raise ValueError("wrong fields")
            return cls(
                bytes.fromhex(meta["federation"]),
                meta["session"],
                meta["task"],
                meta["round"],
                bytes.fromhex(meta["digest"]),
                meta["signer"],
            )
        except (ValueError, TypeError, AttributeError) as exc:
            if isinstance(exc, SerializationError):
                raise
            raise SerializationError(f"malformed commitment statement: {exc}") from None

    def to_bytes(self) -> bytes:
        return _encode(
            b"hevit-commit/1",
            self.federation,
            self.session,
            self.task,
            self.round,
            self.digest,
            self.signer,
        )


def aggregate_digest(batch: bytes, statements: list[bytes], signatures: list[bytes]) -> bytes:
    """The digest every key holder computes of an aggregate as received: the summed ciphertext's
    bytes and every signed statement it lists, in order."""
    parts = [_field(b"hevit-aggregate/1"), _field(batch)]
    for statement, signature in zip(statements, signatures, strict=True):
        parts += [_field(statement), _field(signature)]
    return _digest(b"".join(parts), b"hevit-aggregate")

"""The bytes clients and servers exchange, whatever carries them (in-process calls or Flower).

Wire form::

    b"HVFM" | u16 version | u32 header length | JSON header | blob 0 | blob 1 | ...

The header names the message kind, strategy, round, sender, key set and each blob (name, type,
shape, byte count). Blobs are hevit ciphertext batches (``"ciphertext"``, validated again by
``EncryptedBatch.from_bytes`` against the receiver's context) or little-endian float64 arrays
(``"float64"``, plaintext strategies only). :func:`Message.from_bytes` checks every size against
the actual length before slicing anything, so a small hostile header cannot make the receiver
allocate or read more than it was sent.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field

import numpy as np

from ..errors import SerializationError

__all__ = ["KINDS", "MAX_BLOBS", "MAX_HEADER_BYTES", "Message"]

MAGIC = b"HVFM"
VERSION = 1
MAX_HEADER_BYTES = 64 * 1024
MAX_BLOBS = 64
#: Largest round number and blob size (bytes, and any one dimension) a header may declare.
MAX_ROUND = 2**31 - 1
MAX_BLOB_BYTES = 2**40
#: Message kinds: client -> server ("update", "statistics", "infer-request", "commit": a signed
#: commitment to the aggregate it holds), server -> client ("aggregate", "infer-reply").
KINDS = ("update", "statistics", "aggregate", "infer-request", "infer-reply", "commit")
_PREFIX = struct.Struct("<4sHI")
_BLOB_TYPES = ("ciphertext", "float64")


@dataclass(frozen=True)
class Message:
    """One protocol message. ``blobs`` maps names to ciphertext bytes or float64 arrays."""

    kind: str
    strategy: str
    round: int
    sender: str
    keyset_id: str = ""
    blobs: dict[str, bytes | np.ndarray] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        if self.kind not in KINDS:
            raise SerializationError(f"unknown message kind {self.kind!r}; expected one of {KINDS}")
        if len(self.blobs) > MAX_BLOBS:
            raise SerializationError(f"{len(self.blobs)} blobs exceed the limit of {MAX_BLOBS}")
        entries, payloads = [], []
        for name, value in self.blobs.items():
            if isinstance(value, (bytes, bytearray, memoryview)):
                data = bytes(value)
                entries.append(
                    {"name": name, "type": "ciphertext", "shape": [], "nbytes": len(data)}
                )
            else:
                arr = np.ascontiguousarray(value, dtype="<f8")
                data = arr.tobytes()
                entries.append(
                    {"name": name, "type": "float64", "shape": list(arr.shape), "nbytes": len(data)}
                )
            payloads.append(data)
        header = {
            "kind": self.kind,
            "strategy": self.strategy,
            "round": int(self.round),
            "sender": self.sender,
            "keyset_id": self.keyset_id,
            "meta": self.meta,
            "blobs": entries,
        }
        head = json.dumps(header, separators=(",", ":"), sort_keys=True, allow_nan=False).encode()
        if len(head) > MAX_HEADER_BYTES:
            raise SerializationError(
                f"message header of {len(head)} bytes exceeds {MAX_HEADER_BYTES}"
            )
        return b"".join([_PREFIX.pack(MAGIC, VERSION, len(head)), head, *payloads])

    @classmethod
    def from_bytes(cls, data: bytes, *, max_bytes: int = 1 << 31) -> Message:
        """Parses and validates a message.

        Raises
        ------
        hevit.errors.SerializationError
            Wrong magic or version, oversized or malformed header, sizes that do not add up to
            the bytes received, bad shapes, unknown kinds or blob types; a header (meta included)
            with NaN, Infinity or -Infinity, a number that overflows to inf (``1e999``), or a
            key repeated in any object (JSON would keep the last one silently, so two readers
            could see different values).
        """

        def no_duplicate_keys(pairs):
            obj = {}
            for key, value in pairs:
                if key in obj:
                    raise SerializationError(f"key {key!r} is repeated in an object")
                obj[key] = value
            return obj

        def no_constant(name):
            raise SerializationError(f"{name} is not a JSON number")

        def finite_float(text):
            value = float(text)
            if not math.isfinite(value):
                raise SerializationError(f"{text} overflows to {value}")
            return value

        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise SerializationError(f"a message is bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) > max_bytes:
            raise SerializationError(
                f"message of {len(data)} bytes exceeds the limit of {max_bytes}"
            )
        if len(data) < _PREFIX.size:
            raise SerializationError(
                f"truncated message: {len(data)} bytes, the prefix alone is {_PREFIX.size}"
            )
        magic, version, head_len = _PREFIX.unpack_from(data)
        if magic != MAGIC:
            raise SerializationError("not a hevit federated message (bad magic)")
        if version != VERSION:
            raise SerializationError(
                f"unsupported message version {version} (this hevit reads {VERSION})"
            )
        if head_len > MAX_HEADER_BYTES or _PREFIX.size + head_len > len(data):
            raise SerializationError(f"message header length {head_len} is too large or truncated")
        try:
            header = json.loads(
                data[_PREFIX.size : _PREFIX.size + head_len].decode("utf-8"),
                object_pairs_hook=no_duplicate_keys,
                parse_constant=no_constant,
                parse_float=finite_float,
            )
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            # ValueError covers JSONDecodeError and integers past Python's digit limit
            raise SerializationError(f"malformed message header: {exc}") from None
        header = _check_header(header)
        offset = _PREFIX.size + head_len
        total = sum(e["nbytes"] for e in header["blobs"])
        if offset + total != len(data):
            raise SerializationError(
                f"message sizes do not add up: header declares {total} payload bytes, {len(data) - offset} received"
            )
        blobs: dict[str, bytes | np.ndarray] = {}
        for e in header["blobs"]:
            chunk = data[offset : offset + e["nbytes"]]
            offset += e["nbytes"]
            if e["type"] == "ciphertext":
                blobs[e["name"]] = chunk
            else:
                arr = np.frombuffer(chunk, dtype="<f8").reshape(e["shape"]).astype(np.float64)
                if not np.all(np.isfinite(arr)):
                    raise SerializationError(f"blob {e['name']!r} holds NaN or inf")
                blobs[e["name"]] = arr
        return cls(
            header["kind"],
            header["strategy"],
            header["round"],
            header["sender"],
            header["keyset_id"],
            blobs,
            header["meta"],
        )


def _check_header(header) -> dict:
    if not isinstance(header, dict):
        raise SerializationError("message header is not an object")
    expected = {
        "kind": str,
        "strategy": str,
        "round": int,
        "sender": str,
        "keyset_id": str,
        "meta": dict,
        "blobs": list,
    }
    for key, typ in expected.items():
        if not isinstance(header.get(key), typ) or (
            typ is int and isinstance(header.get(key), bool)
        ):
            raise SerializationError(
                f"message header field {key!r} is missing or not a {typ.__name__}"
            )
    if header["kind"] not in KINDS:
        raise SerializationError(f"unknown message kind {header['kind']!r}")
    if not 0 <= header["round"] <= MAX_ROUND:
        raise SerializationError(f"round {header['round']} is outside [0, {MAX_ROUND}]")
    if len(header["blobs"]) > MAX_BLOBS:
        raise SerializationError(f"{len(header['blobs'])} blobs exceed the limit of {MAX_BLOBS}")
    names = set()
    for e in header["blobs"]:
        if not isinstance(e, dict) or set(e) != {"name", "type", "shape", "nbytes"}:
            raise SerializationError("malformed blob entry in message header")
        if not isinstance(e["name"], str) or e["name"] in names:
            raise SerializationError(f"blob name {e.get('name')!r} is not a string or is repeated")
        names.add(e["name"])
        if e["type"] not in _BLOB_TYPES:
            raise SerializationError(f"unknown blob type {e['type']!r}")
        if (
            not isinstance(e["nbytes"], int)
            or isinstance(e["nbytes"], bool)
            or not 0 <= e["nbytes"] <= MAX_BLOB_BYTES
        ):
            raise SerializationError(f"blob {e['name']!r} has an invalid byte count")
        shape = e["shape"]
        if (
            not isinstance(shape, list)
            or not all(
                isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= MAX_BLOB_BYTES
                for d in shape
            )
            or len(shape) > 4
        ):
            raise SerializationError(f"blob {e['name']!r} has an invalid shape {shape!r}")
        if e["type"] == "float64" and 8 * math.prod(shape) != e["nbytes"]:
            raise SerializationError(
                f"blob {e['name']!r}: shape {shape} does not match {e['nbytes']} bytes"
            )
        if e["type"] == "ciphertext" and shape:
            raise SerializationError(f"ciphertext blob {e['name']!r} must not declare a shape")
    return header

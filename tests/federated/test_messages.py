"""Federated message bytes: round trips, and hostile bytes that must raise SerializationError
(never crash, never allocate from a lying header)."""

from __future__ import annotations

import json
import os
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hevit.errors import SerializationError
from hevit.federated import Message

EXAMPLES = int(os.environ.get("HEVIT_FUZZ_EXAMPLES", "200"))


def sample_message() -> Message:
    return Message(
        "update",
        "he-fedavg",
        3,
        "client-1",
        "ab" * 16,
        {"update": b"\x01\x02" * 50, "extra": np.arange(12, dtype=float).reshape(3, 4)},
        {"note": 1},
    )


def test_round_trip():
    msg = sample_message()
    data = msg.to_bytes()
    back = Message.from_bytes(data)
    assert (back.kind, back.strategy, back.round, back.sender, back.keyset_id, back.meta) == (
        msg.kind,
        msg.strategy,
        msg.round,
        msg.sender,
        msg.keyset_id,
        msg.meta,
    )
    assert back.blobs["update"] == msg.blobs["update"]
    np.testing.assert_array_equal(back.blobs["extra"], msg.blobs["extra"])
    assert back.to_bytes() == data


def _rewrite_header(data: bytes, edit) -> bytes:
    head_len = struct.unpack_from("<I", data, 6)[0]
    header = json.loads(data[10 : 10 + head_len])
    edit(header)
    head = json.dumps(header).encode()
    return data[:6] + struct.pack("<I", len(head)) + head + data[10 + head_len :]


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda h: h["blobs"][0].update(nbytes=1 << 40), "do not add up"),
        (lambda h: h["blobs"][1].update(shape=[1 << 20, 1 << 20]), "does not match"),
        (lambda h: h["blobs"][1].update(shape=[-1, 4]), "invalid shape"),
        (lambda h: h["blobs"][0].update(type="pickle"), "unknown blob type"),
        (lambda h: h.update(kind="shell"), "unknown message kind"),
        (lambda h: h.update(round=-1), r"round -1 is outside"),
        (lambda h: h.update(round=True), "round"),
        (lambda h: h.pop("sender"), "sender"),
        (lambda h: h["blobs"].append(dict(h["blobs"][0])), "repeated"),
        (
            lambda h: h.update(
                blobs=[
                    {"name": str(i), "type": "ciphertext", "shape": [], "nbytes": 0}
                    for i in range(100)
                ]
            ),
            "limit",
        ),
    ],
)
def test_lying_headers_are_refused(edit, match):
    with pytest.raises(SerializationError, match=match):
        Message.from_bytes(_rewrite_header(sample_message().to_bytes(), edit))


def test_prefix_checks():
    data = sample_message().to_bytes()
    with pytest.raises(SerializationError, match="magic"):
        Message.from_bytes(b"XXXX" + data[4:])
    with pytest.raises(SerializationError, match="version"):
        Message.from_bytes(data[:4] + struct.pack("<H", 9) + data[6:])
    with pytest.raises(SerializationError, match="header length"):
        Message.from_bytes(data[:6] + struct.pack("<I", 1 << 31) + data[10:])
    with pytest.raises(SerializationError, match="limit"):
        Message.from_bytes(data, max_bytes=100)
    with pytest.raises(SerializationError, match="NaN"):
        Message.from_bytes(
            Message("update", "plain-fedavg", 1, "a", "", {"u": np.array([np.nan])}).to_bytes()
        )


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzz_truncations_and_flips(data):
    raw = bytearray(sample_message().to_bytes())
    action = data.draw(st.sampled_from(["truncate", "flip", "insert"]))
    if action == "truncate":
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    elif action == "flip":
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] ^= data.draw(st.integers(1, 255))
    else:
        pos = data.draw(st.integers(0, len(raw)))
        raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=16))
    try:
        msg = Message.from_bytes(bytes(raw))
    except SerializationError:
        return
    # a flip inside a payload or a JSON-preserving edit may still parse: it must then be a
    # structurally valid message (the ciphertext loader and the server validate the rest)
    assert msg.kind in ("update", "statistics", "aggregate", "infer-request", "infer-reply")


@settings(max_examples=EXAMPLES, deadline=None)
@given(st.binary(max_size=512))
def test_fuzz_random_bytes(blob):
    try:
        Message.from_bytes(b"HVFM\x01\x00" + blob)
    except SerializationError:
        pass


def test_deeply_nested_header_is_refused_not_a_crash():
    head = b"[" * 60000
    with pytest.raises(SerializationError):
        Message.from_bytes(b"HVFM\x01\x00" + struct.pack("<I", len(head)) + head)


def _raw_message(header: dict, payload: bytes = b"") -> bytes:
    import json

    from hevit.federated.messages import _PREFIX, MAGIC, VERSION

    head = json.dumps(header).encode()
    return _PREFIX.pack(MAGIC, VERSION, len(head)) + head + payload


@given(
    field=st.sampled_from(["round", "nbytes", "dim"]),
    value=st.one_of(st.integers(min_value=2**40 + 1), st.integers(max_value=-1)),
)
@settings(max_examples=80, deadline=None)
def test_absurd_integers_raise_the_documented_error(field, value):
    """Rounds, byte counts and dimensions past the limits are SerializationError, never a bare
    ValueError from numpy or Python's integer parser."""
    entry = {"name": "u", "type": "float64", "shape": [0], "nbytes": 0}
    header = {
        "kind": "update",
        "strategy": "plain-fedavg",
        "round": 1,
        "sender": "a",
        "keyset_id": "",
        "meta": {},
        "blobs": [entry],
    }
    if field == "round":
        header["round"] = value
    elif field == "nbytes":
        entry["nbytes"] = value
    else:
        entry["shape"] = [value, 0]
    with pytest.raises(SerializationError):
        Message.from_bytes(_raw_message(header))


def test_an_integer_past_the_parsers_digit_limit_is_a_serialization_error():
    from hevit.federated.messages import _PREFIX, MAGIC, VERSION

    head = b'{"round":' + b"9" * 5000 + b"}"
    with pytest.raises(SerializationError, match="malformed message header"):
        Message.from_bytes(_PREFIX.pack(MAGIC, VERSION, len(head)) + head)

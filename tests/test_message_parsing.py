"""Message.from_bytes refuses JSON headers that two parsers could read differently: NaN and
infinities (not JSON numbers, though Python's json reads them) and keys repeated in an object
(Python keeps the last silently), at any depth of the header and its meta."""

import json
import struct

import numpy as np
import pytest

from hevit.errors import SerializationError
from hevit.federated.messages import Message

_PREFIX = struct.Struct("<4sHI")


def _framed(head: str, payload: bytes = b"") -> bytes:
    raw = head.encode()
    return _PREFIX.pack(b"HVFM", 1, len(raw)) + raw + payload


def _valid_message() -> Message:
    return Message(
        "update",
        "he-fedavg",
        3,
        "hospital-1",
        "ab" * 16,
        {"w": np.arange(4.0)},
        {"rows": 10, "nested": {"loss": 0.25, "list": [1, 2.5]}},
    )


def _header_text(message: Message) -> tuple[str, bytes]:
    data = message.to_bytes()
    (_, _, head_len) = _PREFIX.unpack_from(data)
    head = data[_PREFIX.size : _PREFIX.size + head_len].decode()
    return head, data[_PREFIX.size + head_len :]


def test_the_unmodified_header_parses():
    message = _valid_message()
    back = Message.from_bytes(message.to_bytes())
    assert back.meta == message.meta and back.round == 3
    np.testing.assert_array_equal(back.blobs["w"], message.blobs["w"])


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("where", ["meta", "nested", "list"])
def test_non_finite_constants_are_refused_at_any_depth(constant, where):
    head, payload = _header_text(_valid_message())
    target = {"meta": '"rows":10', "nested": '"loss":0.25', "list": "[1,2.5]"}[where]
    replacement = {
        "meta": f'"rows":{constant}',
        "nested": f'"loss":{constant}',
        "list": f"[1,{constant}]",
    }[where]
    assert target in head
    forged = head.replace(target, replacement)
    # Python's own json would have accepted it: the refusal is ours
    json.loads(forged)
    with pytest.raises(SerializationError, match=f"{constant} is not a JSON number"):
        Message.from_bytes(_framed(forged, payload))


def test_numbers_that_overflow_to_infinity_are_refused():
    head, payload = _header_text(_valid_message())
    forged = head.replace('"loss":0.25', '"loss":1e999')
    assert json.loads(forged)["meta"]["nested"]["loss"] == float("inf")
    with pytest.raises(SerializationError, match="1e999 overflows to inf"):
        Message.from_bytes(_framed(forged, payload))


@pytest.mark.parametrize(
    "target, replacement, key",
    [
        ('"round":3', '"round":3,"round":4', "round"),  # top level
        ('"rows":10', '"rows":10,"rows":11', "rows"),  # meta
        ('"loss":0.25', '"loss":0.25,"loss":0.5', "loss"),  # nested meta
        ('"name":"w"', '"name":"w","name":"v"', "name"),  # a blob entry
    ],
)
def test_duplicate_keys_are_refused_at_any_depth(target, replacement, key):
    head, payload = _header_text(_valid_message())
    assert target in head
    forged = head.replace(target, replacement, 1)
    json.loads(forged)  # Python's json keeps the last value silently
    with pytest.raises(SerializationError, match=f"key '{key}' is repeated"):
        Message.from_bytes(_framed(forged, payload))

"""The wire format's payload checksum against an independent pure-Python CRC-32C."""

from __future__ import annotations

import numpy as np
import pytest

from hevit import _core


def crc32c(data: bytes) -> int:
    """Bitwise CRC-32C (Castagnoli, reflected 0x82F63B78), written from the definition."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def lane_checksum(data: bytes) -> bytes:
    """The documented layout: 8-byte word i goes to lane i mod 4, each lane a CRC-32C."""
    lanes = [bytearray() for _ in range(4)]
    for i in range(0, len(data), 8):
        lanes[(i // 8) % 4] += data[i : i + 8]
    return b"".join(crc32c(bytes(lane)).to_bytes(4, "little") for lane in lanes)


def test_crc32c_reference_matches_the_published_check_value():
    # RFC 3720 (iSCSI) / the CRC catalogue: CRC-32C of "123456789" is 0xE3069283
    assert crc32c(b"123456789") == 0xE3069283


@pytest.mark.parametrize("portable", [False, True])
def test_checksum_matches_reference_on_every_tail_length(portable, rng):
    sizes = list(range(0, 97)) + [int(s) for s in rng.integers(97, 5000, size=8)]
    for size in sizes:
        data = rng.integers(0, 256, size=size, dtype=np.uint8).tobytes()
        assert _core.payload_checksum(data, portable) == lane_checksum(data), size


def test_hardware_and_portable_paths_agree_on_large_payloads(rng):
    data = rng.integers(0, 256, size=1_000_003, dtype=np.uint8).tobytes()
    assert _core.payload_checksum(data) == _core.payload_checksum(data, True)


def test_every_single_bit_flip_changes_the_checksum(rng):
    data = bytearray(rng.integers(0, 256, size=77, dtype=np.uint8).tobytes())
    clean = _core.payload_checksum(bytes(data))
    for bit in range(len(data) * 8):
        data[bit // 8] ^= 1 << (bit % 8)
        assert _core.payload_checksum(bytes(data)) != clean, bit
        data[bit // 8] ^= 1 << (bit % 8)

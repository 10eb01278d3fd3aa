"""The labelled baseline of the ciphertext-only rows: ciphertext bytes read as if they were pixels.

This scores like noise by construction (uniform residues are not an image); it is kept only as a
baseline beside the distinguishing game (:mod:`.distinguishing`), which is the test that can fail.
"""

from __future__ import annotations

import numpy as np

__all__ = ["decode_as_plaintext"]

_HEADER = 64


def decode_as_plaintext(blob: bytes, count: int) -> np.ndarray:
    """The first ``count`` values an adversary can read out of ciphertext bytes: the payload after
    the hevit header taken as little-endian 32-bit words, centred and scaled to unit variance."""
    payload = np.frombuffer(blob[_HEADER:], dtype=np.uint8)
    words = payload[: (len(payload) // 4) * 4].view("<u4").astype(np.float64)
    if len(words) == 0:
        raise ValueError("ciphertext payload is empty")
    reps = -(-count // len(words))
    values = np.tile(words, reps)[:count]
    return (values - values.mean()) / (values.std() + 1e-12)

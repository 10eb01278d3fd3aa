"""Ciphertext-only adversary: no key, so the best it can do is read the ciphertext bytes as if
they were plaintext (decode the bit-packed residues as values) and push them through the same
inversions it would use on a plaintext update."""

from __future__ import annotations

import numpy as np

__all__ = ["ciphertext_only_reconstruction", "decode_as_plaintext"]

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


def ciphertext_only_reconstruction(
    observation, *, shape: tuple[int, ...], invert=None
) -> np.ndarray:
    """An image-shaped guess from the ciphertexts of ``observation``.

    With ``invert`` (a function from decoded plaintext-like arrays to an image) the adversary runs
    the plaintext attack on the decoded values; otherwise the decoded bytes are the image.
    """
    blobs = list(observation.ciphertexts.values())
    if not blobs:
        raise ValueError("observation holds no ciphertexts")
    if invert is not None:
        return invert({k: v for k, v in observation.ciphertexts.items()})
    return decode_as_plaintext(blobs[0], int(np.prod(shape))).reshape(shape).astype(np.float32)

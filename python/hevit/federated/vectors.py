"""Flat vectors (model updates, statistics) packed into batch-layout ciphertexts.

A length-L vector becomes a (rows, cols) matrix with ``cols = ceil(L / N)`` read row-major, so
every ciphertext (one per column) is full: no rotations, sums are slot-wise.
"""

from __future__ import annotations

import math

import numpy as np

from .. import he
from ..errors import LayoutError

__all__ = ["decrypt_vector", "encrypt_vector", "vector_shape"]


def vector_shape(length: int, params: he.CkksParams) -> tuple[int, int]:
    if length < 1:
        raise LayoutError("cannot encrypt an empty vector")
    cols = math.ceil(length / params.poly_modulus_degree)
    return math.ceil(length / cols), cols


def encrypt_vector(
    context: he.SecretContext, v, *, threads: int | None = None
) -> he.EncryptedBatch:
    v = np.asarray(v, dtype=np.float64).ravel()
    rows, cols = vector_shape(len(v), context.params)
    padded = np.zeros(rows * cols)
    padded[: len(v)] = v
    return context.encrypt(padded.reshape(rows, cols), layout="batch", threads=threads)


def decrypt_vector(
    context: he.SecretContext, batch: he.EncryptedBatch, length: int, *, threads: int | None = None
) -> np.ndarray:
    if batch.shape != vector_shape(length, context.params):
        raise LayoutError(
            f"a {length}-vector is packed as {vector_shape(length, context.params)}, got {batch.shape}"
        )
    return context.decrypt(batch, threads=threads).ravel()[:length]

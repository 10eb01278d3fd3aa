"""What an adversary without the key reads out of ciphertext bytes.

Two readers:

- :func:`decode_as_plaintext`, the labelled baseline of the ciphertext-only rows: ciphertext bytes
  read as if they were pixels. It scores like noise by construction (uniform residues are not an
  image).
- :class:`PublicAdversary`, what a real server-side adversary computes with the public parameters
  alone: it loads the bytes as the server does (:meth:`hevit.he.EncryptedBatch.from_bytes`, which
  expands each seed into c1), takes both polynomials out of the NTT domain and reduces them mod
  the first prime (the inverse NTT and the primes follow from the public parameters), and reads

  * c0 + c1 s' in coefficient form for each guessed key s' (s' = 0 always: c0 itself), centred
    mod q. A "ciphertext" made with no key, or with a key of zeros, is m + e there;
  * c0 - c0_ref for any earlier ciphertext with the same c1 (a reused seed): m - m_ref + e - e_ref.

  Semantically secure encryption leaves every one of these uniform; the distinguishing game
  (:mod:`.distinguishing`) trains its classifier on them. Key guesses are sparse (a list of
  (position, sign) terms: c1 s' is a sum of signed negacyclic shifts of c1): the adversary has no
  way to find an unknown key of 8 nonzero coefficients among the C(4096, 8) 2^8 ~ 2^82 of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import ValueRangeError

__all__ = ["PublicAdversary", "decode_as_plaintext"]

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


def _centred(values: np.ndarray, q: int) -> np.ndarray:
    """Residues mod q as signed values in (-q/2, q/2], divided by q (float64 keeps them exactly
    enough: |v| / q <= 1/2 with 53 bits)."""
    v = values.astype(np.int64)
    v = np.where(v > q // 2, v - q, v)
    return v.astype(np.float64) / q


def _negacyclic_shift(poly: np.ndarray, shift: int, q: int) -> np.ndarray:
    """X^shift * poly in Z_q[X]/(X^N + 1), poly in coefficient form (int64 residues)."""
    n = len(poly)
    shift %= 2 * n
    sign = 1
    if shift >= n:
        shift -= n
        sign = -1
    out = np.empty_like(poly)
    out[shift:] = poly[: n - shift]
    out[:shift] = (q - poly[n - shift :]) % q  # wrapped terms change sign
    return out if sign == 1 else (q - out) % q


class PublicAdversary:
    """A server-side adversary holding the public context (parameters and public keys): it turns
    each ciphertext it observes into features for a classifier (see the module docstring).

    Parameters
    ----------
    context : hevit.he.PublicContext
        What the server holds.
    count : int
        Coefficients of each view kept as features (the first ``count``).
    key_guesses : sequence of sequences of (position, sign)
        Sparse secret keys to try: each guess s' = sum sign * X^position.
    """

    def __init__(
        self,
        context,
        *,
        count: int = 1024,
        key_guesses: Sequence[Sequence[tuple[int, int]]] = (),
    ) -> None:
        from .. import _core

        self._inspection = _core.inspection
        self.context = context
        self.count = int(count)
        self.key_guesses = [list(g) for g in key_guesses]
        self._q = int(self._inspection.first_prime(context._core))
        self._n = context.params.poly_modulus_degree
        if not 0 < self.count <= self._n:
            raise ValueRangeError(f"count must be in [1, {self._n}], got {count}")
        self._seen: dict[bytes, np.ndarray] = {}

    @property
    def views(self) -> int:
        """Views per ciphertext: c0, one per key guess, and the reused-seed difference."""
        return 2 + len(self.key_guesses)

    def coefficients(self, blob: bytes, index: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(c0, c1) of ciphertext ``index`` in coefficient form mod the first prime, as int64."""
        from ..he import EncryptedBatch

        batch = EncryptedBatch.from_bytes(blob, self.context)
        both = self._inspection.ciphertext_coefficients(batch._core, index).astype(np.int64)
        return both[: self._n], both[self._n :]

    def features(self, blob: bytes, index: int = 0) -> np.ndarray:
        """The views of ciphertext ``index`` of ``blob``, ``views * count`` values. The first
        ciphertext seen with a given c1 becomes that c1's reference (its difference view is 0)."""
        q, k = self._q, self.count
        c0, c1 = self.coefficients(blob, index)
        views = [c0]
        for guess in self.key_guesses:
            acc = c0.copy()
            for position, sign in guess:
                term = _negacyclic_shift(c1, int(position), q)
                acc = (acc + term) % q if sign > 0 else (acc - term) % q
            views.append(acc)
        reference = self._seen.setdefault(c1.tobytes(), c0)
        views.append((c0 - reference) % q)
        return np.concatenate([_centred(v[:k], q) for v in views])

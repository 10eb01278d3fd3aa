"""The Li-Micciancio key-recovery attack on released CKKS decryptions (EUROCRYPT 2021).

A CKKS ciphertext satisfies ``c0 + c1 * s = m + e (mod q)``. Whoever holds the ciphertext (public)
and its exact decryption (the decoded values, from which ``m + e`` is recovered by re-encoding)
solves for the secret key: ``s = (m + e - c0) / c1`` in ``Z_q[X] / (X^N + 1)`` (``c1`` is
invertible with overwhelming probability). One released decryption suffices. Noise flooding
(:mod:`hevit.he.flooding`) is the countermeasure; ``tests/he/test_key_recovery.py`` shows both.

Only public information is used: the ciphertext polynomials and the CKKS encoding of the released
values, both exposed read-only by ``hevit._core.inspection``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import _core
from ..he import EncryptedBatch

__all__ = ["KeyRecoveryResult", "decrypts_correctly", "recover_secret_key"]


@dataclass
class KeyRecoveryResult:
    #: candidate secret key, centred coefficients modulo the first prime
    key: np.ndarray
    #: True when every coefficient is ternary, as a CKKS secret key must be
    ternary: bool


def recover_secret_key(
    batch: EncryptedBatch, released_values, *, index: int = 0
) -> KeyRecoveryResult:
    """Solves ``c0 + c1 * s = encode(released)`` for ``s`` from ciphertext ``index`` of ``batch``.

    ``released_values`` is the whole decrypted matrix of ``batch`` (rows x cols); the attack needs
    the decryption of every slot of the ciphertext, e.g. a batch-layout batch with N rows.
    """
    ctx = batch.context._core
    q = int(_core.inspection.first_prime(ctx))
    n = batch.context.params.poly_modulus_degree
    ct = _core.inspection.ciphertext_coefficients(batch._core, index)
    c0, c1 = [int(v) for v in ct[:n]], [int(v) for v in ct[n:]]
    values = np.ascontiguousarray(released_values, dtype=np.float64)
    m = [int(v) for v in _core.inspection.plaintext_coefficients(ctx, values, batch.layout, index)]
    ntt = _NegacyclicNtt(n, q)
    num = ntt.forward([(a - b) % q for a, b in zip(m, c0, strict=True)])
    den = ntt.forward(c1)
    if any(d == 0 for d in den):
        raise ArithmeticError("c1 is not invertible modulo q")
    s = ntt.inverse([a * pow(b, -1, q) % q for a, b in zip(num, den, strict=True)])
    centred = np.array([v - q if v > q // 2 else v for v in s], dtype=object)
    ternary = bool(all(v in (-1, 0, 1) for v in centred))
    return KeyRecoveryResult(key=centred, ternary=ternary)


def decrypts_correctly(
    key, batch: EncryptedBatch, values, *, index: int = 0, noise_bound: float
) -> bool:
    """Whether ``key`` decrypts ciphertext ``index`` of ``batch`` to ``values``' encoding up to
    ``noise_bound`` (in coefficient units): proof that the key is the real one."""
    ctx = batch.context._core
    q = int(_core.inspection.first_prime(ctx))
    n = batch.context.params.poly_modulus_degree
    ct = _core.inspection.ciphertext_coefficients(batch._core, index)
    c0, c1 = [int(v) for v in ct[:n]], [int(v) for v in ct[n:]]
    ntt = _NegacyclicNtt(n, q)
    s = [int(v) % q for v in key]
    prod = ntt.inverse([a * b % q for a, b in zip(ntt.forward(c1), ntt.forward(s), strict=True)])
    m = [
        int(v)
        for v in _core.inspection.plaintext_coefficients(
            ctx, np.ascontiguousarray(values, dtype=np.float64), batch.layout, index
        )
    ]
    worst = 0
    for a, b, c in zip(c0, prod, m, strict=True):
        d = (a + b - c) % q
        worst = max(worst, min(d, q - d))
    return worst <= noise_bound


class _NegacyclicNtt:
    """Number-theoretic transform for ``Z_q[X] / (X^N + 1)`` with Python integers (q < 2^62)."""

    def __init__(self, n: int, q: int) -> None:
        if (q - 1) % (2 * n):
            raise ValueError("q is not 1 mod 2N")
        self.n, self.q = n, q
        psi = next(
            p
            for p in (pow(g, (q - 1) // (2 * n), q) for g in range(2, 1000))
            if pow(p, n, q) == q - 1
        )
        self.psi = [pow(psi, i, q) for i in range(n)]
        inv_psi = pow(psi, -1, q)
        self.inv_psi = [pow(inv_psi, i, q) for i in range(n)]
        self.omega = psi * psi % q
        self.inv_n = pow(n, -1, q)

    def _cyclic(self, a: list[int], root: int) -> list[int]:
        n, q = self.n, self.q
        a = list(a)
        j = 0
        for i in range(1, n):  # bit reversal
            bit = n >> 1
            while j & bit:
                j ^= bit
                bit >>= 1
            j |= bit
            if i < j:
                a[i], a[j] = a[j], a[i]
        length = 2
        while length <= n:
            w_len = pow(root, n // length, q)
            half = length // 2
            ws = [1] * half
            for k in range(1, half):
                ws[k] = ws[k - 1] * w_len % q
            for start in range(0, n, length):
                for k in range(half):
                    u = a[start + k]
                    v = a[start + k + half] * ws[k] % q
                    a[start + k] = (u + v) % q
                    a[start + k + half] = (u - v) % q
            length <<= 1
        return a

    def forward(self, a: list[int]) -> list[int]:
        return self._cyclic([x * p % self.q for x, p in zip(a, self.psi, strict=True)], self.omega)

    def inverse(self, a: list[int]) -> list[int]:
        out = self._cyclic(a, pow(self.omega, -1, self.q))
        return [
            x * self.inv_n % self.q * p % self.q for x, p in zip(out, self.inv_psi, strict=True)
        ]

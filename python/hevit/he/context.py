"""Key holders and public contexts.

A :class:`SecretContext` is what a hospital (key holder) keeps: it generates keys, encrypts and
decrypts. A :class:`PublicContext` is what may leave the hospital: parameters, the public key and
Galois keys for exactly the rotation steps a plan needs. It has no secret key and cannot get one.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from .. import _core
from ..errors import ParameterError, SecretKeyRequiredError
from ._arrays import as_bytes, as_matrix, check_layout, resolve_threads
from .batch import CompactBatch, EncryptedBatch
from .params import CkksParams

__all__ = ["PublicContext", "SecretContext"]


class PublicContext:
    """Parameters, public key and evaluation keys: everything a server may hold.

    Make one with :meth:`SecretContext.public_context` or :meth:`from_bytes`.
    """

    __slots__ = ("_core",)

    def __init__(self, core: _core.PublicContext) -> None:
        if not isinstance(core, _core.PublicContext):
            raise TypeError("use SecretContext.public_context() or PublicContext.from_bytes()")
        self._core = core

    @classmethod
    def from_bytes(cls, data: bytes) -> PublicContext:
        """Loads a serialized public context (validating parameters, sizes and checksum)."""
        return cls(_core.PublicContext.from_bytes(as_bytes(data, what="data")))

    def to_bytes(self) -> bytes:
        """Serialized form: hevit header + parameters + public key + Galois keys (seeded)."""
        return self._core.to_bytes()

    @property
    def params(self) -> CkksParams:
        c = self._core
        return CkksParams(
            c.poly_modulus_degree, tuple(c.coeff_modulus_bits), c.scale_bits, c.max_norm
        )

    @property
    def rotation_steps(self) -> tuple[int, ...]:
        """Rotation steps that have a Galois key, sorted."""
        return tuple(self._core.rotation_steps)

    @property
    def conjugation(self) -> bool:
        """True when the Galois keys include complex conjugation (the two-layer head needs it)."""
        return bool(self._core.conjugation)

    @property
    def relinearization(self) -> bool:
        """True when the key set has relinearisation keys (ciphertext products)."""
        return bool(self._core.relinearization)

    @property
    def keyset_id(self) -> bytes:
        """16-byte identifier of the key set: BLAKE2b-128 of every key it holds (the public key,
        then the Galois and relinearisation keys), so a public key spliced with another key set's
        evaluation keys is another key set."""
        return self._core.keyset_id

    @property
    def params_fingerprint(self) -> bytes:
        """16-byte hash of the canonical parameter encoding."""
        return self._core.params_fingerprint

    def encrypt(self, x, *, layout: str, threads: int | None = None) -> EncryptedBatch:
        """Encrypts a (rows, features) matrix with the public key.

        For parties without the secret key. The ciphertexts are not seeded, so they take about
        twice the bytes of :meth:`SecretContext.encrypt`.
        """
        arr = as_matrix(x, name="x")
        core = self._core.encrypt(arr, check_layout(layout), resolve_threads(threads))
        return EncryptedBatch(core)

    def decrypt(self, batch: EncryptedBatch, *, threads: int | None = None) -> np.ndarray:
        """Always raises: a public context holds no secret key."""
        raise SecretKeyRequiredError(
            "this is a PublicContext (server side): it holds no secret key and cannot decrypt; "
            "send the ciphertext to a key holder, whose SecretContext.decrypt returns the values"
        )

    def __repr__(self) -> str:
        p = self.params
        return (
            f"PublicContext(N={p.poly_modulus_degree}, coeff_modulus_bits={p.coeff_modulus_bits}, "
            f"scale_bits={p.scale_bits}, rotation_steps={len(self.rotation_steps)})"
        )


def check_private_folder(folder, *, what: str) -> None:
    """Refuses a folder another user owns or that group/others can write to (PermissionError)."""
    folder = Path(folder)
    info = folder.stat()
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise PermissionError(
            f"{what} {folder} is writable by other users (mode {stat.filemode(info.st_mode)}); "
            f"run `chmod 700 {folder}`"
        )
    if hasattr(os, "getuid") and info.st_uid not in (os.getuid(), 0):
        raise PermissionError(f"{what} {folder} belongs to user {info.st_uid}")


class SecretContext:
    """The key holder's context: secret key plus the matching :class:`PublicContext`.

    Never send this object or its bytes to a server. :meth:`to_bytes` exists for the key
    holder's own storage; its bytes carry their own object kind, so they are refused wherever
    a public context is expected.
    """

    __slots__ = ("_core", "_public")

    def __init__(self, core: _core.SecretContext) -> None:
        if not isinstance(core, _core.SecretContext):
            raise TypeError("use SecretContext.generate() or SecretContext.from_bytes()")
        self._core = core
        self._public = PublicContext(core.public_context())

    @classmethod
    def generate(
        cls,
        params: CkksParams,
        *,
        rotation_steps: Iterable[int] = (),
        conjugation: bool = False,
        relinearization: bool = False,
    ) -> SecretContext:
        """Generates a fresh key set.

        Parameters
        ----------
        params : CkksParams
        rotation_steps : iterable of int
            Galois keys are made for exactly these steps (e.g. ``LinearPlan.required_rotation_steps(...)``).
        conjugation, relinearization : bool
            Also a conjugation key and relinearisation keys (the two-layer head needs both; see
            ``MlpPlan.evaluation_keys``).

        Raises
        ------
        hevit.errors.ParameterError
            For a step out of range, or evaluation keys with parameters that have no special prime.
        """
        if not isinstance(params, CkksParams):
            raise TypeError(f"params must be a CkksParams, got {type(params).__name__}")
        steps = sorted({int(s) for s in rotation_steps})
        core = _core.SecretContext.generate(
            params.poly_modulus_degree,
            list(params.coeff_modulus_bits),
            params.scale_bits,
            params.max_norm,
            steps,
            bool(conjugation),
            bool(relinearization),
        )
        return cls(core)

    def public_context(self) -> PublicContext:
        """The public part: what the server and other parties receive."""
        return self._public

    @property
    def params(self) -> CkksParams:
        return self._public.params

    def encrypt(self, x, *, layout: str, threads: int | None = None) -> EncryptedBatch:
        """Encrypts a (rows, features) matrix with the secret key.

        Symmetric and seeded: only c0 and a 64-byte seed travel, about half the bytes of
        public-key encryption. Each row's L2 norm must be at most ``params.max_norm``.

        Raises
        ------
        hevit.errors.ValueRangeError
            NaN/inf, or a row norm above ``max_norm``.
        hevit.errors.LayoutError
            Not a real 2-D array, or more rows/columns than the layout holds.
        """
        arr = as_matrix(x, name="x")
        return EncryptedBatch(
            self._core.encrypt(arr, check_layout(layout), resolve_threads(threads))
        )

    def decrypt(
        self, batch: EncryptedBatch | CompactBatch, *, threads: int | None = None
    ) -> np.ndarray:
        """Decrypts to a float64 array of the batch's logical shape (an EncryptedBatch, or the
        CompactBatch reply of a coefficient-layout plan).

        The values are exact CKKS decryptions and must stay with the key holder (IND-CPA-D);
        values that leave it go through :meth:`decrypt_flooded`.
        """
        if isinstance(batch, CompactBatch):
            return self._core.decrypt_compact(batch._core, resolve_threads(threads))
        if not isinstance(batch, EncryptedBatch):
            raise TypeError(
                f"batch must be an EncryptedBatch or a CompactBatch, got {type(batch).__name__}"
            )
        return self._core.decrypt(batch._core, resolve_threads(threads))

    def decrypt_flooded(
        self,
        batch: EncryptedBatch,
        *,
        sigma: float,
        noise_key: bytes,
        threads: int | None = None,
    ) -> np.ndarray:
        """Decrypts with noise flooding in the integer domain: the release path.

        After SEAL's decryption and before decoding, every coefficient of every ciphertext's
        plaintext polynomial gets an independent sample of the discrete Gaussian
        ``D_{Z, representable_sigma(sigma)}`` (exact, integer arithmetic, from ChaCha20 under
        ``noise_key``; see :mod:`hevit.he.flooding`). The result has the shape of
        :meth:`decrypt` and is a deterministic function of the secret key, the batch, ``sigma``
        and ``noise_key``: bit-identical at any thread count and at every holder of the key.

        Parameters
        ----------
        batch : EncryptedBatch
        sigma : float
            Flooding std in integer (coefficient) units, e.g. from
            :func:`hevit.he.flooding.coefficient_flooding_sigma`. A value in coefficients moves by
            ``sigma / scale``, a value in slots by ``sigma * sqrt(N / 2) / scale``.
        noise_key : bytes
            32 bytes the adversary does not know (e.g. :meth:`derive_key` of the aggregate's
            digest): a known noise can be subtracted. One key per released batch: ciphertext
            ``i`` of two batches flooded under one key gets the same noise, which the difference
            of the two releases cancels.

        Raises
        ------
        hevit.errors.ParameterError
            ``noise_key`` not 32 bytes; ``sigma`` not finite, below 1 or above 2^56, or so large
            that 64 sigma reaches a quarter of the modulus (the noise would wrap).
        hevit.errors.ContextMismatchError
            A batch of another key set.
        """
        if not isinstance(batch, EncryptedBatch):
            raise TypeError(f"batch must be an EncryptedBatch, got {type(batch).__name__}")
        key = as_bytes(noise_key, what="noise_key")
        if len(key) != 32:
            raise ParameterError(f"noise_key must be 32 bytes, got {len(key)}")
        return self._core.decrypt_flooded(batch._core, float(sigma), key, resolve_threads(threads))

    def derive_key(self, label: bytes) -> bytes:
        """A 32-byte key derived from the secret key and ``label`` (BLAKE2b-256 keyed by a hash
        of the secret key, over a domain-separation string and ``label``).

        Every holder of this secret key derives the same key for the same label; the output is
        a pseudorandom function of the label under a one-way hash of the key, so it reveals
        nothing about the secret key beyond that PRF value. The shared-key protocol uses it as
        the flooding-noise key of an aggregate (``label`` = the aggregate's digest).
        """
        return self._core.derive_key(as_bytes(label, what="label"))

    def to_bytes(self) -> bytes:
        """Serialized key holder state, including the secret key. Keep it private."""
        return self._core.to_bytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> SecretContext:
        return cls(_core.SecretContext.from_bytes(as_bytes(data, what="data")))

    def save(self, path) -> Path:
        """Writes the key holder's state (secret key included) to a new file readable by the
        owner only (mode 0600, created exclusively: an existing file is never overwritten)."""
        path = Path(path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(self.to_bytes())
        return path

    @classmethod
    def load(cls, path) -> SecretContext:
        """Reads a file written by :meth:`save`. Refuses a file that other users can read or
        write, that another user owns, or that sits in a folder other users can write to (they
        could swap the file)."""
        path = Path(path)
        info = path.stat()
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise PermissionError(
                f"{path} holds a secret key but is accessible to other users "
                f"(mode {stat.filemode(info.st_mode)}); run `chmod 600 {path}`"
            )
        check_private_folder(path.parent, what="the folder of a secret key file")
        if hasattr(os, "getuid") and info.st_uid != os.getuid():
            raise PermissionError(f"{path} holds a secret key but belongs to user {info.st_uid}")
        return cls.from_bytes(path.read_bytes())

    def __repr__(self) -> str:
        return f"SecretContext(<secret key hidden>, public={self._public!r})"

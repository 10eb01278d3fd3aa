"""Encrypted matrices: what travels between clients and server."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from .. import _core
from ..errors import SecretKeyRefusedError
from ._arrays import as_bytes, resolve_threads

__all__ = ["CompactBatch", "EncryptedBatch"]


class BatchHeader(NamedTuple):
    """Metadata of serialized EncryptedBatch bytes (see :meth:`EncryptedBatch.peek`)."""

    layout: str
    seed_count: int
    prime_count: int
    rows: int
    cols: int
    period: int
    scale: float
    norm_bound: float
    ciphertext_count: int


class EncryptedBatch:
    """A (rows, cols) matrix of reals encrypted in one slot layout under one key set.

    Obtain one from ``SecretContext.encrypt``, ``PublicContext.encrypt``, ``LinearPlan.apply``,
    :meth:`sum` or :meth:`from_bytes`.
    """

    __slots__ = ("_core",)

    def __init__(self, core: _core.EncryptedBatch) -> None:
        if not isinstance(core, _core.EncryptedBatch):
            raise TypeError(
                "EncryptedBatch objects come from encrypt(), apply(), sum() or from_bytes()"
            )
        self._core = core

    @property
    def shape(self) -> tuple[int, int]:
        """Logical (rows, cols) of the encrypted matrix."""
        return (self._core.rows, self._core.cols)

    @property
    def layout(self) -> str:
        """``"batch"``, ``"sample"`` or ``"coefficient"``."""
        return self._core.layout

    @property
    def ciphertext_count(self) -> int:
        return self._core.ciphertext_count

    @property
    def nbytes(self) -> int:
        """Size of :meth:`to_bytes` in bytes (computed without serializing)."""
        return self._core.byte_size

    @property
    def norm_bound(self) -> float:
        """Public bound on the L2 norm of every row."""
        return self._core.norm_bound

    @property
    def scale(self) -> float:
        return self._core.scale

    @property
    def seeded(self) -> bool:
        """True for fresh symmetric encryptions and their sums, which serialize as c0 plus seeds."""
        return self._core.seeded

    @property
    def seed_count(self) -> int:
        """Seeds per ciphertext: 1 fresh, k for a sum of k fresh batches, 0 when c1 is stored in full
        (public-key encryptions, plan outputs, sums of more than 255 fresh batches)."""
        return self._core.seed_count

    @property
    def seeds(self) -> bytes:
        """The public 64-byte seeds of a seeded batch, ciphertext after ciphertext (``seed_count``
        per ciphertext, in the order the summed batches were given); empty when c1 is stored in
        full. A key holder compares them with the seeds contributors signed before decrypting."""
        return self._core.seeds

    @property
    def context(self):
        from .context import PublicContext

        return PublicContext(self._core.context)

    def to_bytes(self, *, threads: int | None = None) -> bytes:
        """Compact wire form: hevit header, metadata, bit-packed coefficients (seeds for c1)."""
        return self._core.to_bytes(resolve_threads(threads))

    @staticmethod
    def peek(data) -> BatchHeader:
        """The metadata of serialized EncryptedBatch bytes, read without loading (magic, version,
        kind and size checked; no checksum pass, no seed expansion): what a server compares with
        its expectations before it spends work on a contribution. :meth:`from_bytes` validates
        everything again.

        Raises
        ------
        hevit.errors.SerializationError
            Not EncryptedBatch bytes of this format version, or truncated.
        """
        return BatchHeader(*_core.EncryptedBatch.peek(as_bytes(data, what="data")))

    @classmethod
    def from_bytes(cls, data: bytes, context, *, threads: int | None = None) -> EncryptedBatch:
        """Loads bytes made under ``context``'s key set.

        Raises
        ------
        hevit.errors.SerializationError
            Truncated, corrupted or malformed bytes, or bytes of another object kind.
        hevit.errors.ContextMismatchError
            Bytes made under other parameters or another key set.
        """
        core_ctx = _public_core(context)
        return cls(
            _core.EncryptedBatch.from_bytes(
                as_bytes(data, what="data"), core_ctx, resolve_threads(threads)
            )
        )

    @staticmethod
    def sum(batches: Sequence[EncryptedBatch], *, threads: int | None = None) -> EncryptedBatch:
        """Elementwise sum (aggregation across clients).

        The sum of seeded batches stays seeded: c1 of the sum is the sum of the seed expansions,
        so the aggregate of k fresh client batches serializes as c0 plus k 64-byte seeds per
        ciphertext, about half the bytes of c0 and c1.

        Raises
        ------
        hevit.errors.ContextMismatchError, hevit.errors.LayoutError
            Batches of different key sets, layouts, shapes or levels.
        """
        batches = list(batches)
        for b in batches:
            if not isinstance(b, EncryptedBatch):
                raise TypeError(f"sum takes EncryptedBatch objects, got {type(b).__name__}")
        return EncryptedBatch(
            _core.EncryptedBatch.sum([b._core for b in batches], resolve_threads(threads))
        )

    def __add__(self, other: EncryptedBatch) -> EncryptedBatch:
        return EncryptedBatch.sum([self, other])

    def __radd__(self, other) -> EncryptedBatch:
        # the built-in sum() starts from 0
        if isinstance(other, int) and other == 0:
            return self
        return NotImplemented

    def compact(self, *, threads: int | None = None) -> CompactBatch:
        """The compact reply of a coefficient-layout batch (a plan's output): c1 whole and c0 at
        the value coefficients only, switched to a power-of-two modulus sized from the scale
        (about a quarter of the bytes of the full ciphertexts). Decrypt it with
        ``SecretContext.decrypt``; it cannot be evaluated further.

        Raises
        ------
        hevit.errors.LayoutError
            The batch is not in the coefficient layout.
        """
        return CompactBatch(_core.CompactBatch.from_batch(self._core, resolve_threads(threads)))

    def __repr__(self) -> str:
        return f"EncryptedBatch(shape={self.shape}, layout={self.layout!r}, nbytes={self.nbytes})"


class CompactBatch:
    """A coefficient-layout reply reduced to what the key holder reads (see
    :meth:`EncryptedBatch.compact`)."""

    __slots__ = ("_core",)

    # The modulus switch keeps the rounding unit at most 2^-scale_bits of a value (the
    # parameters' input encoding precision): see hevit.he.reference.compact_tolerance.

    def __init__(self, core: _core.CompactBatch) -> None:
        if not isinstance(core, _core.CompactBatch):
            raise TypeError(
                "CompactBatch objects come from EncryptedBatch.compact() or from_bytes()"
            )
        self._core = core

    @property
    def shape(self) -> tuple[int, int]:
        return (self._core.rows, self._core.cols)

    @property
    def bits(self) -> int:
        """Bits per value of the power-of-two modulus it was switched to."""
        return self._core.bits

    def to_bytes(self) -> bytes:
        return self._core.to_bytes()

    @classmethod
    def from_bytes(cls, data, context) -> CompactBatch:
        """Loads bytes made under ``context``'s key set (validating sizes before allocating).

        Raises
        ------
        hevit.errors.SerializationError, hevit.errors.ContextMismatchError
        """
        return cls(
            _core.CompactBatch.from_bytes(as_bytes(data, what="data"), _public_core(context))
        )

    def __repr__(self) -> str:
        return f"CompactBatch(shape={self.shape}, bits={self.bits})"


def _server_core(context, what: str) -> _core.PublicContext:
    """The C++ public context of a server-side object; a SecretContext is refused, never quietly
    reduced to its public part (server-side objects must not hold or keep alive a secret key)."""
    from .context import PublicContext, SecretContext

    if isinstance(context, SecretContext):
        raise SecretKeyRefusedError(
            f"{what} takes the server's PublicContext, not a SecretContext "
            "(pass sk.public_context(), or the context loaded from its bytes)"
        )
    if not isinstance(context, PublicContext):
        raise TypeError(f"context must be a PublicContext, got {type(context).__name__}")
    return context._core


def _public_core(context) -> _core.PublicContext:
    """The public part of a key holder's or a server's context (loading bytes is legitimate on
    both sides)."""
    from .context import PublicContext, SecretContext

    if isinstance(context, SecretContext):
        context = context.public_context()
    if not isinstance(context, PublicContext):
        raise TypeError(f"context must be a PublicContext, got {type(context).__name__}")
    return context._core

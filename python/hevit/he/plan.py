"""Compiled linear layers on encrypted rows (plan/apply split)."""

from __future__ import annotations

from .. import _core
from ._arrays import as_matrix, as_vector, check_layout, resolve_threads
from .batch import CompactBatch, EncryptedBatch, _server_core
from .params import CkksParams

__all__ = ["LinearPlan"]


class CompiledPlan:
    """What every compiled plan offers: ``apply`` (ciphertext work only, safe from many threads
    at once), its layout, key switches and output bound. Subclasses hold the C++ plan."""

    __slots__ = ("_context", "_core")

    def __init__(self, core, context) -> None:
        self._core = core
        self._context = context

    def apply(self, batch: EncryptedBatch, *, threads: int | None = None) -> EncryptedBatch:
        """Evaluates the plan; the result has logical shape (rows, out_dim)."""
        if not isinstance(batch, EncryptedBatch):
            raise TypeError(f"batch must be an EncryptedBatch, got {type(batch).__name__}")
        return EncryptedBatch(self._core.apply(batch._core, resolve_threads(threads)))

    @property
    def layout(self) -> str:
        return self._core.layout

    @property
    def key_switches(self) -> int:
        """Key switches per ciphertext in ``apply``."""
        return self._core.key_switches

    @property
    def rotation_steps(self) -> tuple[int, ...]:
        """The rotation steps this compiled plan uses (each needs a Galois key)."""
        return tuple(self._core.rotation_steps)

    @property
    def output_norm_bound(self) -> float:
        """Public bound on the L2 norm of every output row."""
        return self._core.output_norm_bound


class LinearPlan(CompiledPlan):
    """y = W x + b with plaintext W (out_dim, in_dim) and b, evaluated on encrypted rows.

    ``compile`` does all static work once; ``apply`` does only ciphertext work and is safe to call
    from many threads at once.

    Layouts
    -------
    batch
        Throughput. Scalar weights as signed integers multiplied directly into the RNS limbs with
        128-bit lazy accumulation. No rotation and no evaluation key.
    sample
        Latency. Hybrid diagonal method with baby-step/giant-step rotations:
        ``(baby-1) + (giant-1) + log2(D'/C')`` key switches per ciphertext, e.g. 10 for 768 -> 3.
    """

    __slots__ = ()

    @staticmethod
    def required_rotation_steps(
        params: CkksParams, *, in_dim: int, out_dim: int, layout: str
    ) -> tuple[int, ...]:
        """Rotation steps (Galois keys) a plan of this shape will need, before any plan exists
        (what the key holder generates); empty for ``batch`` and ``coefficient``. A compiled
        plan's :attr:`rotation_steps` are the steps it uses."""
        if not isinstance(params, CkksParams):
            raise TypeError(f"params must be a CkksParams, got {type(params).__name__}")
        return tuple(
            _core.LinearPlan.rotation_steps_for(
                params.poly_modulus_degree,
                list(params.coeff_modulus_bits),
                params.scale_bits,
                params.max_norm,
                int(in_dim),
                int(out_dim),
                check_layout(layout),
            )
        )

    @classmethod
    def compile(
        cls,
        context,
        weights,
        bias=None,
        *,
        layout: str,
        input_norm_bound: float | None = None,
    ) -> LinearPlan:
        """Compiles ``W`` (out_dim, in_dim) and ``b`` (out_dim,) for ``context``.

        Parameters
        ----------
        context : PublicContext
            Needs Galois keys for ``LinearPlan.required_rotation_steps(...)`` in the sample layout. A
            SecretContext is refused (:class:`hevit.errors.SecretKeyRefusedError`).
        input_norm_bound : float, optional
            Bound on the L2 norm of input rows; default the context's ``max_norm``. Pass
            ``k * max_norm`` to apply the plan to a sum of ``k`` client batches.

        Raises
        ------
        hevit.errors.MissingKeyError
            A rotation step without a Galois key (the message names it).
        hevit.errors.ParameterError
            The layer's outputs cannot fit the modulus at this bound.
        """
        core_ctx = _server_core(context, "LinearPlan.compile")
        w = as_matrix(weights, name="weights")
        b = None if bias is None else as_vector(bias, name="bias")
        bound = 0.0 if input_norm_bound is None else float(input_norm_bound)
        if input_norm_bound is not None and not bound > 0:
            raise ValueError(f"input_norm_bound must be positive, got {input_norm_bound}")
        core = _core.LinearPlan.compile(core_ctx, w, b, check_layout(layout), bound)
        return cls(core, context)

    def apply_compact(self, batch: EncryptedBatch, *, threads: int | None = None) -> CompactBatch:
        """Coefficient layout: the layer's compact reply, bit for bit ``apply(batch).compact()``
        at a fraction of the cost (each output is read from the NTT-domain product with a row
        precomputed at compile; only c1 is transformed whole).

        Raises
        ------
        hevit.errors.LayoutError
            The plan is not in the coefficient layout (or as :meth:`apply`).
        """
        if not isinstance(batch, EncryptedBatch):
            raise TypeError(f"batch must be an EncryptedBatch, got {type(batch).__name__}")
        return CompactBatch(self._core.apply_compact(batch._core, resolve_threads(threads)))

    @property
    def shape(self) -> tuple[int, int]:
        """(out_dim, in_dim) of W."""
        return (self._core.out_dim, self._core.in_dim)

    @property
    def weight_scale_bits(self) -> float:
        """log2 of the scale the weights were quantised or encoded at."""
        return self._core.weight_scale_bits

    def __repr__(self) -> str:
        return (
            f"LinearPlan(shape={self.shape}, layout={self.layout!r}, key_switches={self.key_switches}, "
            f"weight_scale_bits={self.weight_scale_bits:.1f})"
        )

"""Compiled linear layers on encrypted rows (plan/apply split)."""

from __future__ import annotations

from .. import _core
from ._arrays import as_matrix, as_vector, check_layout, positive_finite, resolve_threads
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
        ``(baby-1) + (giant-1) + log2(D'/C')`` key switches per ciphertext, e.g. 11 for 768 -> 3 at
        N = 4096 (0 baby, 3 giant, 8 folds; :attr:`key_switches`).
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
        max_abs_error: float | None = None,
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
        max_abs_error : float, optional
            Coefficient layout: the largest error (value units) any output may carry. Every
            output's noise there scales with ``||W||_F`` of the whole head, not with its own row
            (see :attr:`output_error_bounds`); by default compile refuses a head in which an
            output would keep fewer than 10 bits of precision relative to its bound
            ``||w_k|| * input_norm_bound + |b_k|`` (a head with one large row and small others).

        Raises
        ------
        hevit.errors.MissingKeyError
            A rotation step without a Galois key (the message names it).
        hevit.errors.ParameterError
            The layer's outputs cannot fit the modulus at this bound, or (coefficient layout) an
            output would carry more error than its precision or ``max_abs_error`` allows.
        hevit.errors.ValueRangeError
            ``input_norm_bound`` or ``max_abs_error`` is not a positive finite number.
        """
        core_ctx = _server_core(context, "LinearPlan.compile")
        w = as_matrix(weights, name="weights")
        b = None if bias is None else as_vector(bias, name="bias")
        bound = (
            0.0
            if input_norm_bound is None
            else positive_finite(input_norm_bound, name="input_norm_bound")
        )
        tolerance = (
            0.0 if max_abs_error is None else positive_finite(max_abs_error, name="max_abs_error")
        )
        core = _core.LinearPlan.compile(core_ctx, w, b, check_layout(layout), bound, tolerance)
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
    def output_error_bounds(self) -> tuple[float, ...]:
        """Coefficient layout: the error bound compile derived for each output (value units, for
        fresh secret-key encryptions within the norm bound); empty for the other layouts."""
        return tuple(self._core.output_error_bounds)

    @property
    def weight_scale_bits(self) -> float:
        """log2 of the scale the weights were quantised or encoded at."""
        return self._core.weight_scale_bits

    def __repr__(self) -> str:
        return (
            f"LinearPlan(shape={self.shape}, layout={self.layout!r}, key_switches={self.key_switches}, "
            f"weight_scale_bits={self.weight_scale_bits:.1f})"
        )

"""Compiled two-layer heads on encrypted rows: y = W2 (W1 x + b1)^2 + b2 (plan/apply split)."""

from __future__ import annotations

from dataclasses import dataclass

from .. import _core
from ._arrays import as_matrix, as_vector, check_layout, positive_finite
from .batch import _server_core
from .context import PublicContext
from .params import CkksParams
from .plan import CompiledPlan

__all__ = ["EvaluationKeys", "MlpPlan"]


@dataclass(frozen=True)
class EvaluationKeys:
    """The evaluation keys a plan needs: pass them to :meth:`SecretContext.generate` as
    ``SecretContext.generate(params, **keys.as_kwargs())``."""

    rotation_steps: tuple[int, ...]
    conjugation: bool
    relinearization: bool

    def as_kwargs(self) -> dict:
        return {
            "rotation_steps": self.rotation_steps,
            "conjugation": self.conjugation,
            "relinearization": self.relinearization,
        }


class MlpPlan(CompiledPlan):
    """``y = W2 (W1 x + b1)^2 + b2`` (square element-wise) with plaintext weights, evaluated on
    encrypted rows by a party without the secret key.

    ``compile`` does all static work once (integer weights or diagonals at the levels and scales
    each stage sees, the -i constant of the square stage); ``apply`` does only ciphertext work.
    The server needs the relinearisation key and a conjugation key, plus in the ``sample``
    layout the rotation keys of both layers (:meth:`evaluation_keys`).

    Layouts
    -------
    batch
        Throughput: scalar multiply-accumulate for both layers (no rotation); one conjugation,
        two ciphertext squares and one relinearisation per hidden unit and group of N rows.
    sample
        Latency (one or two rows per ciphertext): diagonal method for both layers, one square
        stage per ciphertext.
    """

    __slots__ = ()

    @staticmethod
    def evaluation_keys(
        params: CkksParams, *, in_dim: int, hidden: int, out_dim: int, layout: str
    ) -> EvaluationKeys:
        """The evaluation keys a plan of this shape needs."""
        if not isinstance(params, CkksParams):
            raise TypeError(f"params must be a CkksParams, got {type(params).__name__}")
        steps, conjugation, relinearization = _core.MlpPlan.evaluation_keys_for(
            params.poly_modulus_degree,
            list(params.coeff_modulus_bits),
            params.scale_bits,
            params.max_norm,
            int(in_dim),
            int(hidden),
            int(out_dim),
            check_layout(layout),
        )
        return EvaluationKeys(tuple(steps), bool(conjugation), bool(relinearization))

    @classmethod
    def compile(
        cls,
        context: PublicContext,
        w1,
        b1,
        w2,
        b2,
        *,
        layout: str,
        input_norm_bound: float | None = None,
    ) -> MlpPlan:
        """Compiles ``W1`` (hidden, in_dim), ``b1`` (hidden,), ``W2`` (out_dim, hidden), ``b2``
        (out_dim,) for ``context`` (a PublicContext: server-side objects refuse a secret one).

        Raises
        ------
        hevit.errors.MissingKeyError
            The context lacks the relinearisation, conjugation or a rotation key.
        hevit.errors.ParameterError
            Fewer than three data primes, or a stage whose values cannot fit the modulus at this
            input bound (the hidden pre-activations are bounded by ``||w1_u|| * bound + |b1_u|``).
        hevit.errors.ValueRangeError
            ``input_norm_bound`` is not a positive finite number.
        """
        core_ctx = _server_core(context, "MlpPlan.compile")
        bound = (
            0.0
            if input_norm_bound is None
            else positive_finite(input_norm_bound, name="input_norm_bound")
        )
        core = _core.MlpPlan.compile(
            core_ctx,
            as_matrix(w1, name="w1"),
            as_vector(b1, name="b1"),
            as_matrix(w2, name="w2"),
            as_vector(b2, name="b2"),
            check_layout(layout),
            bound,
        )
        return cls(core, context)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(out_dim, hidden, in_dim)."""
        return (self._core.out_dim, self._core.hidden, self._core.in_dim)

    @property
    def hidden_bound(self) -> float:
        """Public bound on the hidden pre-activations |W1 x + b1|."""
        return self._core.hidden_bound

    def __repr__(self) -> str:
        return (
            f"MlpPlan(shape={self.shape}, layout={self.layout!r}, key_switches={self.key_switches}, "
            f"hidden_bound={self.hidden_bound:.3g})"
        )

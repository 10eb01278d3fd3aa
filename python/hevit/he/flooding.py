"""Noise flooding for CKKS decryptions that leave the key holder.

CKKS decryption returns the message *plus the ciphertext noise*, and that noise is a known linear
function of the secret key: whoever sees a ciphertext together with its exact decryption can
solve ``c0 + c1 * s = m + e`` for ``s`` (Li and Micciancio, "On the Security of Homomorphic
Encryption on Approximate Numbers", EUROCRYPT 2021; ``tests/he/test_key_recovery.py`` runs the
attack). SEAL does nothing about this, so decrypted values are flooded before they are released.

The release path: integer-domain flooding in C++
-------------------------------------------------
:meth:`hevit.he.SecretContext.decrypt_flooded` adds the flooding noise where the key-dependent
noise lives: after SEAL's decryption and before decoding, every coefficient of every
ciphertext's plaintext polynomial ``m + e`` (integers modulo the level's modulus) gets an
independent sample of the discrete Gaussian ``D_{Z,sigma}``, ``P(x) ~ exp(-x^2 / (2 sigma^2))``.
The sampler is exact and uses integer arithmetic only (Canonne, Kamath and Steinke, "The
Discrete Gaussian for Differential Privacy", NeurIPS 2020, Algorithms 1-3;
``cpp/include/hevit/discrete_gaussian.h``), with ``sigma`` rounded up to ``m * 2^e``
(:func:`representable_sigma`, at most 0.8% more noise). Its randomness is ChaCha20 under a
32-byte ``noise_key``: the same key and batch give bit-identical releases at every site and any
thread count (the shared-key protocol derives the key from the aggregate's digest with
:meth:`hevit.he.SecretContext.derive_key`), so averaging several sites' releases gains nothing.
Nothing on this path uses float64 before decoding: the noise is added to the integers that
carry the key-dependent noise, whatever the values' magnitude. A decoded value of 1e6 under
``release`` may show neither noise in float64 (both are below its resolution there), and that
is safe: the float64 output is a function of the flooded integers (post-processing). The float
path below instead added noise to decoded values, where float64 rounded it away and left a
function of the exact decryption.

Why the bound holds. Let ``e`` be the integer vector of key-dependent noise over all flooded
coefficients, with ``||e||_2 <= B``. The released coefficients are ``m + e + z`` with ``z`` drawn
from ``D_{Z,sigma}`` coordinate-wise; a simulator that knows only ``m`` outputs ``m + z``. The
Kullback-Leibler divergence between ``D_{Z,sigma}`` shifted by an integer ``e_i`` and
``D_{Z,sigma}`` is ``e_i^2 / (2 sigma^2)``: a shift by an integer maps ``Z`` onto itself, so both
laws have the same normalising sum, the log-ratio at ``x`` is ``(2 x e_i - e_i^2) / (2 sigma^2)``,
and its mean under the shifted law (mean ``e_i``, by symmetry) is ``e_i^2 / (2 sigma^2)``. This is
the continuous Gaussian's value, with equality; integer shifts need no smoothing argument (the
smoothing parameter of ``Z`` enters only for non-integer shifts or to compare ``D_{Z,sigma}``
with the continuous law: at the sigmas this bound produces, about 2^40 and more, it is far
below sigma either way). Coordinates are independent, so over one release the divergence is at most ``||e||^2 / (2 sigma^2) <= B^2 / (2 sigma^2)`` and over ``q``
releases ``q B^2 / (2 sigma^2)``. With

    sigma = B * sqrt(q / 2) * 2^(s / 2)

that is ``2^-s``, which bounds the advantage of any key-recovery (search) adversary at about
``2^-s`` (KL-divergence arguments for search problems; Li, Micciancio, Schultz and Sorrell,
CRYPTO 2022). Decoding the flooded coefficients to values (reading coefficients, or the CKKS
FFT for slots) is post-processing of the flooded integers and cannot increase the divergence.
:func:`coefficient_flooding_sigma` computes ``sigma`` for sums of fresh encryptions: ``B`` bounds
the L2 norm of the fresh noise (centred binomial, std sqrt(10.5), plus encoding rounding) over
all ``N * ciphertexts`` flooded coefficients. ``sigma`` is in integer units; a value in
coefficients moves by ``sigma / scale`` and a value in slots by ``sigma * sqrt(N / 2) / scale``.

Knobs (:class:`FloodingPolicy`): ``statistical_security_bits`` (default 40) and
``max_decryptions`` (default 2^16 released decryptions per key set). The bound covers ``q``
releases only if someone counts them: :class:`hevit.protocol.ReleaseLedger` counts the releases
of one key holder per key set, once per aggregate, and refuses the one past ``max_decryptions``
(:class:`hevit.errors.DecryptionBudgetError`: generate a new key set). Given a file it counts
across processes and restarts (a hospital keeps it in its key folder); without one it counts in
memory, per process.

The older float path (being retired)
------------------------------------
:func:`flood` adds float64 Gaussian noise to already decoded values (numpy's PCG64 seeded from
the OS) with ``sigma`` from the plan-kind bounds (:func:`sum_noise_norm_bound`,
:func:`linear_noise_norm_bound`, :func:`coefficient_noise_norm_bound`,
:func:`sample_noise_norm_bound`, :func:`mlp_noise_norm_bound`), in value units, then rounds to a
grid of ``2^-precision_bits``. It is not the release path: the noise is rounded away on values
whose magnitude dwarfs it in float64 (``release`` at values of 1e6), and different sites draw
different noise. It stays until its callers move to :meth:`~hevit.he.SecretContext.decrypt_flooded`.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass

import numpy as np

from .. import _core
from ..errors import ParameterError
from .params import CkksParams
from .reference import SIGMAS, value_noise_std

__all__ = [
    "FloodingPolicy",
    "coefficient_flooding_sigma",
    "coefficient_noise_norm_bound",
    "flood",
    "flooding_value_sigma",
    "linear_noise_norm_bound",
    "mlp_noise_norm_bound",
    "noise_norm_bound",
    "representable_sigma",
    "sample_noise_norm_bound",
    "sum_noise_norm_bound",
]


@dataclass(frozen=True)
class FloodingPolicy:
    """How decrypted values are flooded before they leave the key holder.

    Parameters
    ----------
    statistical_security_bits : int
        ``s``: key-recovery advantage about ``2^-s`` over all covered decryptions.
    max_decryptions : int
        ``q``: released decryptions under one key set the bound covers.
    precision_bits : int or None
        Round released values to multiples of ``2^-precision_bits``; ``None`` picks the coarsest
        power-of-two grid at or below sigma.
    """

    statistical_security_bits: int = 40
    max_decryptions: int = 2**16
    precision_bits: int | None = None

    def __post_init__(self) -> None:
        if not 16 <= int(self.statistical_security_bits) <= 128:
            raise ParameterError(
                f"statistical_security_bits must be in [16, 128], got {self.statistical_security_bits}"
            )
        if int(self.max_decryptions) < 1:
            raise ParameterError(f"max_decryptions must be >= 1, got {self.max_decryptions}")

    def sigma(self, noise_norm: float) -> float:
        """Flooding standard deviation for a released vector whose noise norm is <= ``noise_norm``."""
        if not noise_norm > 0 or not math.isfinite(noise_norm):
            raise ParameterError(f"noise_norm must be a positive finite bound, got {noise_norm}")
        return (
            noise_norm
            * math.sqrt(self.max_decryptions / 2.0)
            * 2.0 ** (self.statistical_security_bits / 2)
        )

    def grid(self, sigma: float) -> float:
        """Rounding step of released values."""
        if self.precision_bits is not None:
            return 2.0 ** -int(self.precision_bits)
        return 2.0 ** math.floor(math.log2(sigma))

    def describe(self) -> dict:
        return {
            "statistical_security_bits": int(self.statistical_security_bits),
            "max_decryptions": int(self.max_decryptions),
            "precision_bits": self.precision_bits,
        }


#: Std of one fresh key-dependent noise coefficient in integer units: the centred binomial of
#: ``hevit._core`` (21 + 21 coins, variance 10.5, SEAL's distribution; SEAL calls it sigma 3.2).
FRESH_NOISE_STD = math.sqrt(10.5)


def representable_sigma(sigma: float) -> float:
    """The exact std of the discrete Gaussian :meth:`~hevit.he.SecretContext.decrypt_flooded`
    draws for a requested ``sigma``: the smallest ``m * 2^e >= sigma`` with an integer ``m`` in
    [128, 256) (at most 0.8% more).

    Raises
    ------
    hevit.errors.ParameterError
        For ``sigma`` not finite, below 1 or above 2^56.
    """
    return _core.representable_sigma(float(sigma))


def coefficient_flooding_sigma(
    params: CkksParams, *, ciphertexts: int, summands: int, policy: FloodingPolicy
) -> float:
    """Integer-domain flooding std (coefficient units) for releasing, with
    :meth:`~hevit.he.SecretContext.decrypt_flooded`, the decryption of ``ciphertexts``
    ciphertexts that are each a sum of ``summands`` fresh encryptions.

    ``B = std * sqrt(summands) * (sqrt(N * ciphertexts) + SIGMAS)`` bounds the L2 norm of the
    key-dependent noise over every flooded coefficient (``std``: one fresh noise coefficient,
    centred binomial plus the encoding's rounding, ``hypot(sqrt(10.5), sqrt(1/12))``; a chi
    variable exceeds its mean by ``SIGMAS`` stds with probability below ``exp(-SIGMAS^2 / 2)``),
    and ``sigma = policy.sigma(B) = B * sqrt(q / 2) * 2^(s / 2)`` (module docstring). The same
    bound holds for every layout: it is a bound on coefficients. It covers sums of fresh
    encryptions only (plan outputs carry more noise). ``decrypt_flooded`` draws
    ``representable_sigma`` of the returned value.

    Raises
    ------
    hevit.errors.ParameterError
        For ``ciphertexts`` or ``summands`` below 1.
    """
    if not isinstance(params, CkksParams):
        raise TypeError(f"params must be a CkksParams, got {type(params).__name__}")
    if int(ciphertexts) < 1 or int(summands) < 1:
        raise ParameterError(
            f"ciphertexts and summands must be >= 1, got {ciphertexts} and {summands}"
        )
    std = math.hypot(FRESH_NOISE_STD, math.sqrt(1.0 / 12.0)) * math.sqrt(int(summands))
    coefficients = params.poly_modulus_degree * int(ciphertexts)
    bound = std * (math.sqrt(coefficients) + SIGMAS)
    return policy.sigma(bound)


def noise_norm_bound(std: float, count: int) -> float:
    """High-probability bound on the L2 norm of ``count`` independent noise values of std ``std``.

    A chi variable with ``count`` degrees of freedom exceeds ``sqrt(count) + t`` standard
    deviations with probability below ``exp(-t^2 / 2)``; ``t = SIGMAS``.
    """
    return std * (math.sqrt(max(int(count), 1)) + SIGMAS)


def sum_noise_norm_bound(params: CkksParams, count: int, summands: int) -> float:
    """Noise norm bound of ``count`` decrypted batch-layout values of a sum of ``summands`` fresh
    encryptions (values in coefficients or slots as the parameters decide:
    :func:`hevit.he.reference.value_noise_std`)."""
    return noise_norm_bound(
        value_noise_std(params, "batch") * math.sqrt(max(int(summands), 1)), count
    )


def linear_noise_norm_bound(
    params: CkksParams, weights: np.ndarray, rows: int, summands: int = 1
) -> float:
    """Noise norm bound of the ``rows x out_dim`` decrypted outputs of a batch-layout plan.

    The key-dependent part of each output is the input noise through that output's weights.
    """
    w = np.asarray(weights, dtype=np.float64)
    row_norm = float(np.max(np.linalg.norm(w, axis=1))) if w.size else 0.0
    std = value_noise_std(params, "batch") * math.sqrt(max(int(summands), 1)) * max(row_norm, 1.0)
    return noise_norm_bound(std, rows * w.shape[0])


def coefficient_noise_norm_bound(
    params: CkksParams, weights: np.ndarray, rows: int, *, compact: bool = True
) -> float:
    """Noise norm bound of the ``rows x out_dim`` decrypted outputs of a coefficient-layout plan.

    The input's noise polynomial is dense, and the product with the weight polynomial meets
    every weight of every row: each output carries noise of std ``coefficient_noise_std *
    ||W||_F`` (in value units). The compact reply switches c0 and c1 to a power-of-two modulus:
    the rounding of c1 meets the ternary key (about 2N/3 nonzero coefficients, std sqrt(N/18)
    units) and that of c0 adds sqrt(1/12) units, a unit being at most 2^-scale_bits.
    """
    from .reference import coefficient_noise_std

    w = np.asarray(weights, dtype=np.float64)
    std = coefficient_noise_std(params) * max(float(np.linalg.norm(w)), 1.0)
    if compact:
        unit = 2.0**-params.scale_bits
        n = params.poly_modulus_degree
        std = math.hypot(std, math.sqrt(n / 18.0 + 1.0 / 12.0) * unit)
    return noise_norm_bound(std, rows * w.shape[0])


def sample_noise_norm_bound(params: CkksParams, weights: np.ndarray, rows: int, plan) -> float:
    """Noise norm bound of the ``rows x out_dim`` decrypted outputs of a sample-layout ``plan``
    on rows of norm at most ``max_norm``: input noise, encoding rounding, the key switches of
    its rotations and its rescale (:func:`hevit.he.reference.sample_output_noise_std`)."""
    from .reference import sample_output_noise_std

    w = np.asarray(weights, dtype=np.float64)
    std = sample_output_noise_std(params, w, params.max_norm, plan)
    return noise_norm_bound(std, rows * w.shape[0])


def mlp_noise_norm_bound(
    params: CkksParams, w1: np.ndarray, w2: np.ndarray, rows: int, plan
) -> float:
    """Noise norm bound of the ``rows x out_dim`` decrypted outputs of an MlpPlan, from public
    quantities only (:func:`hevit.he.reference.mlp_output_noise_std`): the flooding must not
    depend on the private hidden values."""
    from .reference import mlp_output_noise_std

    std = mlp_output_noise_std(params, w1, w2, plan)
    return noise_norm_bound(std, rows * np.asarray(w2).shape[0])


def flood(
    values,
    noise_norm: float,
    policy: FloodingPolicy | None = None,
    *,
    max_sigma: float | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Returns ``values`` + Gaussian flooding noise, rounded to the policy's grid.

    Parameters
    ----------
    values : array
        Exact CKKS decryptions (one released vector or matrix).
    noise_norm : float
        Bound on the L2 norm of the ciphertext noise in ``values`` (see the ``*_noise_norm_bound``
        helpers).
    policy : FloodingPolicy
    max_sigma : float, optional
        Largest flooding std the task tolerates; exceeding it raises instead of releasing values
        the task cannot use.
    rng : numpy Generator, optional
        Only for tests that need reproducible noise. Production callers leave it ``None`` (OS
        entropy); a predictable flooding noise can be subtracted by the adversary.

    Raises
    ------
    hevit.errors.ParameterError
        If the flooding noise would exceed ``max_sigma``: use parameters with a larger scale
        (the ``release`` preset) or relax the policy knowingly.
    """
    policy = policy or FloodingPolicy()
    sigma = policy.sigma(noise_norm)
    if max_sigma is not None and sigma > max_sigma:
        raise ParameterError(
            f"noise flooding at {policy.statistical_security_bits}-bit statistical security over "
            f"{policy.max_decryptions} decryptions needs sigma {sigma:.3g}, above the task's tolerance "
            f"{max_sigma:.3g}; encrypt released values under a larger scale (e.g. the 'release' preset)"
        )
    arr = np.asarray(values, dtype=np.float64)
    rng = rng if rng is not None else np.random.default_rng(secrets.randbits(128))
    noisy = arr + rng.normal(0.0, sigma, size=arr.shape)
    step = policy.grid(sigma)
    return np.round(noisy / step) * step


def flooding_value_sigma(params: CkksParams, sigma: float) -> float:
    """The std a coefficient-domain flooding ``sigma`` gives one released batch-layout value:
    ``sigma / scale`` where values sit in coefficients, ``sigma sqrt(N/2) / scale`` in slots
    (each real or imaginary part of a slot sums N coefficients times roots of unity)."""
    from .reference import batch_in_coefficients

    sigma = representable_sigma(sigma)
    if batch_in_coefficients(params):
        return sigma / 2.0**params.scale_bits
    return sigma * math.sqrt(params.poly_modulus_degree / 2) / 2.0**params.scale_bits

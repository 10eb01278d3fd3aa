"""Plain numpy oracle for every encrypted kernel, and the CKKS error bounds tests compare against.

Tolerances are derived from the parameters, never picked as loose constants. Every noise source
is modelled by its standard deviation in value units and the bound is SIGMAS standard deviations
(or a worst case for deterministic rounding):

- fresh encryption noise: centred-binomial coefficients (sigma 3.2) decoded at a slot give
  sigma * sqrt(N/2) per real or imaginary part, divided by the scale;
- encoding rounding: uniform coefficients (std 1/sqrt(12)) propagate the same way;
- key switching (SEAL hybrid, one special prime P): per digit the error is (digit * e) / P with
  the digit uniform in [0, q_i) (not centred: rms q_i / sqrt(3)), so std about
  sqrt(digits) * (q_max / P) * sqrt(N/3) * sigma per coefficient, times sqrt(N/2) at a slot,
  with q_max / P bounded by 2^(bits(q_max) - bits(P) + 1). Measured with SEAL 4.1.2 this
  first-order model is exact for N=8192 (60, 40, 60) but up to 4x low for N=4096 with a special
  prime as small as the data primes, and worse when q_max > P; the bound multiplies it by
  4 * max(1, q_max / P)^2 to cover that;
- rescaling: rounding times the ternary secret, std about sqrt(N/2) * sqrt((1 + 2N/3) / 12).
  After rotate-and-add folds the ciphertext is nearly invariant under the fold automorphisms,
  its rounding errors are no longer independent, and the measured std varies with the key
  between 0.4x and 2x of that figure (N=4096, 30 key sets); the bound uses 3x when folds ran.
"""

from __future__ import annotations

import math

import numpy as np

from .params import CkksParams

__all__ = [
    "SIGMAS",
    "batch_in_coefficients",
    "ckks_noise_std",
    "coeff_modulus_primes",
    "coefficient_noise_std",
    "coefficient_output_errors",
    "compact_tolerance",
    "expected_weight_scale_bits",
    "fresh_noise_std",
    "fresh_value_noise_std",
    "linear",
    "linear_tolerance",
    "mlp",
    "mlp_output_noise_std",
    "mlp_tolerance",
    "public_round_trip_tolerance",
    "round_trip_tolerance",
    "sample_output_noise_std",
    "sum_tolerance",
    "value_noise_std",
]

#: Standard deviations an error may reach in a test. Tests compare up to a few million values;
#: a Gaussian exceeds 7 sigma with probability about 2.6e-12 per value.
SIGMAS = 7.0
_ERROR_SIGMA = 3.2


def linear(x: np.ndarray, weights: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """The plaintext layer ``x @ W.T + b`` in float64."""
    y = np.asarray(x, dtype=np.float64) @ np.asarray(weights, dtype=np.float64).T
    if bias is not None:
        y = y + np.asarray(bias, dtype=np.float64)
    return y


def ckks_noise_std(params: CkksParams) -> float:
    """Std of the CKKS error of one fresh value in value units: encryption noise (the part that
    depends on the secret key) and encoding rounding."""
    n = params.poly_modulus_degree
    noise = _ERROR_SIGMA * math.sqrt(n / 2)
    rounding = math.sqrt(n / 2 / 12.0)
    return math.hypot(noise, rounding) / 2.0**params.scale_bits


def fresh_noise_std(params: CkksParams) -> float:
    """Std of the error of one fresh value as decrypted: :func:`ckks_noise_std` plus float64
    rounding of the encoder's FFT (relative 2^-53 per butterfly level on values up to
    ``max_norm``), which only matters at scales of 2^50 and above."""
    float64 = 2.0**-53 * math.log2(params.poly_modulus_degree) * params.max_norm
    return math.hypot(ckks_noise_std(params), float64)


_fresh_std = fresh_noise_std


def _key_switch_std(params: CkksParams) -> float:
    """Slot std of one key switch in absolute (unscaled) units."""
    n = params.poly_modulus_degree
    bits = params.coeff_modulus_bits
    data, special = bits[:-1], bits[-1]
    ratio = 2.0 ** (max(data) - special + 1)
    measured_excess = 4.0 * max(1.0, 2.0 ** (max(data) - special)) ** 2
    first_order = (
        math.sqrt(len(data)) * ratio * math.sqrt(n / 3.0) * _ERROR_SIGMA * math.sqrt(n / 2)
    )
    return measured_excess * first_order


def _rescale_std(params: CkksParams) -> float:
    n = params.poly_modulus_degree
    return math.sqrt(n / 2) * math.sqrt((1 + 2 * n / 3) / 12.0)


def batch_in_coefficients(params: CkksParams) -> bool:
    """True when batch-layout values sit in polynomial coefficients (no FFT) rather than in
    slots: the parameters have one data prime (see ``cpp/include/hevit/packing.h``)."""
    return len(params.coeff_modulus_bits) - int(params.supports_rotations) == 1


def _in_coefficients(params: CkksParams, layout: str) -> bool:
    return layout == "coefficient" or (layout == "batch" and batch_in_coefficients(params))


def value_noise_std(params: CkksParams, layout: str = "batch") -> float:
    """Std of the CKKS error of one fresh value in ``layout`` (key-dependent noise and encoding
    rounding): one noise coefficient where values sit in coefficients
    (:func:`coefficient_noise_std`), the slot-decoded noise otherwise (:func:`ckks_noise_std`)."""
    if _in_coefficients(params, layout):
        return coefficient_noise_std(params)
    return ckks_noise_std(params)


def fresh_value_noise_std(params: CkksParams, layout: str = "batch") -> float:
    """:func:`value_noise_std` as decrypted: slot layouts add the encoder's float64 rounding
    (:func:`fresh_noise_std`); coefficients involve no FFT."""
    if _in_coefficients(params, layout):
        return coefficient_noise_std(params)
    return _fresh_std(params)


def round_trip_tolerance(params: CkksParams, layout: str = "batch") -> float:
    """Max abs error of encrypt -> decrypt for one value (values in slots: the noise decoded at a
    slot; in coefficients: one noise coefficient)."""
    return SIGMAS * fresh_value_noise_std(params, layout)


def coefficient_noise_std(params: CkksParams) -> float:
    """Std of the error of one fresh value in coefficients, in value units: one
    centred-binomial noise coefficient plus the rounding of the value to an integer (no FFT, so
    no sqrt(N) factor)."""
    return math.hypot(_ERROR_SIGMA, math.sqrt(1.0 / 12.0)) / 2.0**params.scale_bits


def public_round_trip_tolerance(params: CkksParams, layout: str = "batch") -> float:
    """Max abs error of public-key encrypt -> decrypt for one value.

    Public-key encryption adds e0 + e1 * s + u * e (u, s ternary with about 2N/3 nonzero
    coefficients), so each coefficient has std about sigma * sqrt(1 + 4N/3); decoding slots
    multiplies that by sqrt(N / 2).
    """
    n = params.poly_modulus_degree
    noise = _ERROR_SIGMA * math.sqrt(1 + 4 * n / 3) / 2.0**params.scale_bits
    if not _in_coefficients(params, layout):
        noise *= math.sqrt(n / 2)
    return SIGMAS * math.hypot(noise, fresh_value_noise_std(params, layout))


def sum_tolerance(params: CkksParams, count: int, layout: str = "batch") -> float:
    """Max abs error of the decrypted sum of ``count`` independently encrypted batches."""
    return SIGMAS * fresh_value_noise_std(params, layout) * math.sqrt(count)


def _is_prime(value: int) -> bool:
    """Deterministic Miller-Rabin for 64-bit integers (these bases suffice below 2^64)."""
    if value < 2:
        return False
    bases = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)
    for p in bases:
        if value % p == 0:
            return value == p
    d, r = value - 1, 0
    while d % 2 == 0:
        d, r = d // 2, r + 1
    for a in bases:
        x = pow(a, d, value)
        if x in (1, value - 1):
            continue
        for _ in range(r - 1):
            x = x * x % value
            if x == value - 1:
                break
        else:
            return False
    return True


def coeff_modulus_primes(params: CkksParams) -> tuple[int, ...]:
    """The RNS primes these parameters give, derived as SEAL's ``CoeffModulus::Create`` does: for
    each bit size b, as many primes congruent to 1 mod 2N as positions ask for b, counted down
    from 2^b, then handed out smallest first (the special prime, last, gets the largest)."""
    factor = 2 * params.poly_modulus_degree
    pools: dict[int, list[int]] = {}
    for bits in params.coeff_modulus_bits:
        pool = pools.setdefault(bits, [])
        # SEAL starts at the largest value below 2^b that is 1 mod 2N and steps down by 2N
        value = pool[-1] - factor if pool else ((1 << bits) - 1) // factor * factor + 1
        while value > 1 << (bits - 1) and not _is_prime(value):
            value -= factor
        if value <= 1 << (bits - 1):
            raise ValueError(f"no {bits}-bit prime congruent to 1 mod {factor} left")
        pool.append(value)
    # SEAL pops each size's list from the back: the smallest prime goes to the first position
    return tuple(pools[bits].pop() for bits in params.coeff_modulus_bits)


def expected_weight_scale_bits(
    params: CkksParams,
    weights: np.ndarray,
    layout: str,
    *,
    bias: np.ndarray | None = None,
    input_norm_bound: float | None = None,
) -> float:
    """log2 of the weight scale a LinearPlan of fresh inputs should choose, re-derived from the
    public parameters (their primes, :func:`coeff_modulus_primes`), the weights and the norm
    bound: outputs bounded by ``max_k ||w_k|| * bound + |b_k|`` must stay below a quarter of the
    data modulus (2.5 bits of headroom in slots, 2 in coefficients), and, in the batch layout,
    the 128-bit accumulation of ``in_dim`` integer products below 2^125.
    """
    w = np.asarray(weights, dtype=np.float64)
    bound = params.max_norm if input_norm_bound is None else float(input_norm_bound)
    b = np.zeros(w.shape[0]) if bias is None else np.abs(np.asarray(bias, dtype=np.float64))
    max_out = float(np.max(np.linalg.norm(w, axis=1) * bound + b))
    bound_log = math.log2(max(max_out, 1.0))
    primes = coeff_modulus_primes(params)
    data = primes[:-1] if len(primes) > 1 else primes
    modulus_log = sum(math.log2(q) for q in data)
    max_w = float(np.max(np.abs(w)))
    if layout == "coefficient":
        capacity = modulus_log - 2.0 - params.scale_bits - bound_log
        weight_cap = modulus_log - 2.0 - math.log2(max_w) if max_w > 0 else capacity
        return float(math.floor(min(capacity, weight_cap, 62.0)))
    if layout == "batch":
        capacity = modulus_log - 2.5 - params.scale_bits - bound_log
        int_bits = min(62.0, 125.0 - 60.0 - math.ceil(math.log2(max(w.shape[1], 2))))
        int_cap = int_bits - math.log2(max_w) if max_w > 0 else capacity
        return float(math.floor(min(capacity, int_cap)))
    if layout == "sample":
        if len(data) >= 2:
            return math.log2(data[-1])  # diagonals encoded at the prime the rescale removes
        return float(math.floor(min(60.0, modulus_log - 2.5 - params.scale_bits - bound_log)))
    raise ValueError(f"unknown layout {layout!r}")


def coefficient_output_errors(
    params: CkksParams,
    weights: np.ndarray,
    *,
    bias: np.ndarray | None = None,
    input_norm_bound: float | None = None,
) -> np.ndarray:
    """Error bound of each output of a coefficient-layout plan on fresh secret-key encryptions of
    rows within the norm bound, from public quantities: the dense input noise meets every
    weight of the head, so every output gets SIGMAS * :func:`coefficient_noise_std` *
    ``||W||_F``; the weight rounding at :func:`expected_weight_scale_bits` adds at most
    ``0.5 / weight_scale * sqrt(nnz_k) * bound``, the rounded bias and output 2 units."""
    w = np.asarray(weights, dtype=np.float64)
    bound = params.max_norm if input_norm_bound is None else float(input_norm_bound)
    weight_scale = 2.0 ** expected_weight_scale_bits(
        params, w, "coefficient", bias=bias, input_norm_bound=bound
    )
    noise = SIGMAS * coefficient_noise_std(params) * float(np.linalg.norm(w))
    nonzero = np.count_nonzero(w, axis=1)
    rounding = 0.5 / weight_scale * np.sqrt(nonzero) * bound
    return noise + rounding + 2.0 / (2.0**params.scale_bits * weight_scale)


def linear_tolerance(
    params: CkksParams,
    weights: np.ndarray,
    x: np.ndarray,
    plan,
    *,
    bias: np.ndarray | None = None,
) -> float:
    """Max abs error of ``plan.apply`` output (decrypted) against :func:`linear`.

    Parameters
    ----------
    params : CkksParams
    weights : (out_dim, in_dim) array the plan was compiled from
    x : (rows, in_dim) plaintext inputs
    plan : LinearPlan
        Supplies what the caller asked for at compile (the layout and the input norm bound) and,
        in the sample layout, the rotation schedule. The weight scale is not read from it: it is
        re-derived from the parameters (:func:`expected_weight_scale_bits`).
    bias : (out_dim,) array, optional
        The bias the plan was compiled with (it enters the output bound the weight scale is
        sized from).
    """
    w = np.asarray(weights, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    scale = 2.0**params.scale_bits
    weight_scale = 2.0 ** expected_weight_scale_bits(
        params, w, plan.layout, bias=bias, input_norm_bound=plan._core.input_norm_bound
    )
    row_norm = float(np.max(np.linalg.norm(w, axis=1)))
    x_norm = float(np.max(np.linalg.norm(x, axis=1)))
    # input noise through the layer (independent per feature)
    std = fresh_value_noise_std(params, plan.layout) * row_norm
    if plan.layout == "batch":
        # weights rounded to 1/weight_scale: deterministic worst case over the rows of x
        quant = 0.5 / weight_scale * float(np.max(np.sum(np.abs(x), axis=1)))
        # the rounded bias and the output rounding are below one unit of the output scale
        return SIGMAS * std + quant + 2.0 / (scale * weight_scale)
    if plan.layout == "coefficient":
        # the dense noise polynomial meets every weight of every row in the product: its std at
        # an output coefficient is sigma * ||W||_F; weights and bias are rounded as in batch
        quant = 0.5 / weight_scale * float(np.max(np.sum(np.abs(x), axis=1)))
        noise = coefficient_noise_std(params) * float(np.linalg.norm(w))
        return SIGMAS * noise + quant + 2.0 / (scale * weight_scale)
    if not np.any(w):
        # a zero layer's output is the bias encrypted fresh with the public key
        return public_round_trip_tolerance(params, plan.layout)
    return SIGMAS * sample_output_noise_std(params, w, x_norm, plan, weight_scale=weight_scale)


def sample_output_noise_std(
    params: CkksParams,
    weights: np.ndarray,
    x_norm: float,
    plan,
    *,
    weight_scale: float | None = None,
) -> float:
    """Std of the error of one output of a sample-layout ``plan`` (random parts: input noise
    through the weights, diagonal encoding rounding, key switches of the baby steps on the input
    and of the giant steps and folds on the product, rescaling), for input rows of L2 norm at
    most ``x_norm``. The noise bound of released sample-layout logits is built on it."""
    w = np.asarray(weights, dtype=np.float64)
    n = params.poly_modulus_degree
    scale = 2.0**params.scale_bits
    if weight_scale is None:
        # released-logit noise bounds (library use) trust the compiled plan's scale; the test
        # oracle linear_tolerance passes the independently derived one
        weight_scale = 2.0**plan.weight_scale_bits
    row_norm = float(np.max(np.linalg.norm(w, axis=1)))
    std = _fresh_std(params) * row_norm
    core = plan._core
    ks = _key_switch_std(params)
    # diagonal encoding rounding at the weight scale, through the rows of x
    encode = math.sqrt(n / 2 / 12.0) / weight_scale * x_norm
    # baby-step rotations act on the input: their noise passes through the weights
    baby = ks / scale * row_norm if core.baby_rotations else 0.0
    # giant steps and folds act on the product (scale * weight_scale); a fold doubles variance
    folds = core.fold_rotations
    post = (core.giant_rotations + folds) * ks * 2.0 ** (folds / 2) / (scale * weight_scale)
    structure = 3.0 if folds else 1.0
    rescale = structure * _rescale_std(params) / scale if core.rescales else 0.0
    total = math.sqrt(std**2 + encode**2 + baby**2 + post**2 + rescale**2)
    return total


def mlp(
    x: np.ndarray, w1: np.ndarray, b1: np.ndarray, w2: np.ndarray, b2: np.ndarray
) -> np.ndarray:
    """``(x @ w1.T + b1)**2 @ w2.T + b2`` in float64: what :class:`hevit.he.MlpPlan` computes."""
    h = np.asarray(x, dtype=np.float64) @ np.asarray(w1, dtype=np.float64).T + b1
    return (h * h) @ np.asarray(w2, dtype=np.float64).T + b2


def mlp_tolerance(
    params: CkksParams, w1: np.ndarray, b1: np.ndarray, w2: np.ndarray, x: np.ndarray, plan
) -> float:
    """Max abs error of ``MlpPlan.apply`` output (decrypted) against :func:`mlp`.

    Hidden errors (std ``s_h``, independent across units) collect the input noise through W1, the
    encoding or quantisation of W1, the rescale and the key switches that act at the hidden
    scale. Squaring turns them into std ``2 |h_u| s_h``; layer 2 sums them through W2 (L2 over
    the hidden units). Deterministic parts (quantisation of W1 in the batch layout, of W2 on the
    squares) are added as worst cases.
    """
    w1 = np.asarray(w1, dtype=np.float64)
    w2 = np.asarray(w2, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    h = np.abs(x @ w1.T + b1)
    core = plan._core
    scale = 2.0**params.scale_bits
    first_scale = 2.0**core.first_weight_scale_bits
    ks = _key_switch_std(params)
    rescale = _rescale_std(params)
    quant1 = 0.0
    if plan.layout == "batch":
        # W1 quantised at first_scale: a deterministic worst case over the rows of x
        quant1 = 0.5 / first_scale * float(np.max(np.sum(np.abs(x), axis=1)))
    std_h = _mlp_hidden_noise_std(params, w1, float(np.max(np.linalg.norm(x, axis=1))), plan)
    # worst-case deterministic hidden error (W1 quantisation) through the square
    dsq_det = 2.0 * h * quant1 + quant1**2
    std_sq = 2.0 * (h + quant1) * std_h
    std_y = float(np.max(np.sqrt((std_sq**2) @ (w2**2).T)))
    quant2 = 0.5 / 2.0**core.second_weight_scale_bits * float(np.max(np.sum(h * h, axis=1)))
    # relinearisation, rescale and layer 2's own key switches or rescale land near the input
    # scale, weighted by at most sum_u |w2_ku|
    output = (ks + 3.0 * rescale) / scale * float(np.max(np.sum(np.abs(w2), axis=1)))
    return float(np.max(dsq_det @ np.abs(w2).T)) + quant2 + SIGMAS * math.hypot(std_y, output)


def compact_tolerance(params: CkksParams) -> float:
    """Extra max abs error of a compact reply (``EncryptedBatch.compact``) on top of the
    ciphertext's own: the switch to 2^bits rounds c0 (1/2 unit) and every coefficient of c1, which
    meet about 2N/3 nonzero ternary key coefficients (std sqrt(N / 18) units, taken at SIGMAS);
    a unit is at most 2^-scale_bits in value units (the reply is rounded as finely as the input
    was encoded)."""
    n = params.poly_modulus_degree
    return (0.5 + SIGMAS * math.sqrt(n / 18.0)) * 2.0**-params.scale_bits


def _mlp_hidden_noise_std(params: CkksParams, w1: np.ndarray, x_norm: float, plan) -> float:
    """Std of the error of one hidden unit of an MlpPlan before the square: input noise through
    W1, the rescale, and the key switches (and, in the sample layout, the diagonal encoding)
    that act at the hidden scale, for input rows of L2 norm at most ``x_norm``."""
    core = plan._core
    scale = 2.0**params.scale_bits
    first_scale = 2.0**core.first_weight_scale_bits
    stacked_norm = float(np.max(np.linalg.norm(w1, axis=1)))
    ks = _key_switch_std(params)
    terms = [_fresh_std(params) * stacked_norm, _rescale_std(params) / scale]
    if plan.layout == "batch":
        # both conjugations act before the rescale (scale * first_scale)
        terms.append(math.sqrt(2.0) * ks / (scale * first_scale))
    else:
        n = params.poly_modulus_degree
        terms.append(math.sqrt(n / 2 / 12.0) / first_scale * x_norm)
        # baby steps on the input, the conjugation and the lining-up rotation at the hidden
        # scale; giant steps and folds act on the product, where they vanish next to these
        terms.append(math.sqrt(core.first_baby_rotations + 2.0) * ks / scale)
    return math.sqrt(sum(t * t for t in terms))


def mlp_output_noise_std(params: CkksParams, w1: np.ndarray, w2: np.ndarray, plan) -> float:
    """Std bound of the error of one output of an MlpPlan from public quantities only: rows of
    norm at most ``max_norm`` and hidden values within the plan's public ``hidden_bound`` (the
    square turns a hidden error e into 2 h e). The noise bound of released two-layer logits is
    built on it."""
    w1 = np.asarray(w1, dtype=np.float64)
    w2 = np.asarray(w2, dtype=np.float64)
    std_h = _mlp_hidden_noise_std(params, w1, params.max_norm, plan)
    squares = 2.0 * plan.hidden_bound * std_h * float(np.max(np.linalg.norm(w2, axis=1)))
    scale = 2.0**params.scale_bits
    output = (
        (_key_switch_std(params) + 3.0 * _rescale_std(params))
        / scale
        * float(np.max(np.sum(np.abs(w2), axis=1)))
    )
    return math.hypot(squares, output)

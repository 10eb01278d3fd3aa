"""Plain numpy oracle for every encrypted kernel, and the CKKS error bounds tests compare against.

Tolerances are derived from the parameters, never picked as loose constants: fresh encryption
noise has a known standard deviation (see ``CkksParams.fresh_noise_std``), and each kernel maps
it (plus its own quantisation and key-switching noise) to a bound on its output.
"""

from __future__ import annotations

import math

import numpy as np

from .params import CkksParams

__all__ = [
    "linear",
    "round_trip_tolerance",
    "linear_tolerance",
    "sum_tolerance",
]

#: Number of standard deviations a Gaussian-like error may reach in a test: with at most a few
#: million compared values, exceeding 7 sigma has probability below 1e-5 per test run.
SIGMAS = 7.0


def linear(x: np.ndarray, weights: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """The plaintext layer ``x @ W.T + b`` in float64."""
    y = np.asarray(x, dtype=np.float64) @ np.asarray(weights, dtype=np.float64).T
    if bias is not None:
        y = y + np.asarray(bias, dtype=np.float64)
    return y


def round_trip_tolerance(params: CkksParams) -> float:
    """Max abs error of encrypt -> decrypt for one value.

    Fresh noise (std ``fresh_noise_std``) plus encoding rounding (uniform, std 1/sqrt(12) per
    coefficient, same propagation as the noise), at SIGMAS standard deviations.
    """
    noise = params.fresh_noise_std()
    rounding = math.sqrt(params.poly_modulus_degree / 2 / 12.0) / 2.0**params.scale_bits
    return SIGMAS * math.hypot(noise, rounding)


def sum_tolerance(params: CkksParams, count: int) -> float:
    """Max abs error of the decrypted sum of ``count`` independently encrypted batches."""
    return round_trip_tolerance(params) * math.sqrt(count)


def linear_tolerance(
    params: CkksParams,
    weights: np.ndarray,
    x: np.ndarray,
    *,
    layout: str,
    weight_scale_bits: float,
    key_switches: int = 0,
) -> float:
    """Max abs error of a decrypted linear-plan output against :func:`linear`.

    Terms (all at SIGMAS standard deviations or worst case):
    - input noise through the layer: round-trip error std times the largest row norm of W;
    - weight quantisation (batch layout): each weight is rounded to 2^-weight_scale_bits, so the
      output error is at most 0.5 * 2^-bits * sum_j |x_j| (worst case, rows of x);
    - diagonal encoding (sample layout): encoding rounding of each plaintext diagonal at the
      weight scale, propagated like noise through the rows of x;
    - key switching (sample layout): each rotation adds noise of about N * 2^-scale_bits in value
      units (SEAL's special-prime key switching with a special prime at least as large as the
      data primes it switches), amplified at most sqrt(2) per later fold.
    """
    w = np.asarray(weights, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    n = params.poly_modulus_degree
    row_norm = float(np.max(np.linalg.norm(w, axis=1))) if w.size else 0.0
    input_term = round_trip_tolerance(params) * max(row_norm, 1e-300)
    weight_step = 2.0 ** (-weight_scale_bits)
    if layout == "batch":
        quant_term = 0.5 * weight_step * float(np.max(np.sum(np.abs(x), axis=1)))
        return input_term + quant_term
    encode_std = math.sqrt(n / 2 / 12.0) * weight_step
    encode_term = SIGMAS * encode_std * float(np.max(np.linalg.norm(x, axis=1)))
    key_switch_term = key_switches * n * 2.0 ** (-params.scale_bits) * math.sqrt(2.0) ** key_switches
    return input_term + encode_term + key_switch_term

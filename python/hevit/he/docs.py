"""Documentation generated from the code, so the README cannot drift from it.

``tests/test_readme.py`` compares the README's preset table with :func:`preset_table`.
"""

from __future__ import annotations

from .flooding import FloodingPolicy, coefficient_flooding_sigma, flooding_value_sigma
from .params import PRESET_PURPOSES, PRESETS, CkksParams
from .reference import round_trip_tolerance

__all__ = ["FLOODING_EXAMPLE", "preset_table"]

#: The released vector the flooding column describes: (values, summed encryptions).
FLOODING_EXAMPLE = (1000, 3)


def preset_table() -> str:
    """The README's preset table (markdown): every number is computed from ``PRESETS``.

    Columns: ring degree, primes (the last is the special prime when there are several), scale,
    the public row-norm bound, bytes per value of a fresh ciphertext on the wire (data-modulus
    bits / 8, c0 and the seed of c1), the round-trip error bound of one value
    (:func:`hevit.he.reference.round_trip_tolerance`), the std the integer-domain flooding of a
    released ``FLOODING_EXAMPLE`` sum under the default :class:`FloodingPolicy` gives each value
    (:func:`~hevit.he.flooding.coefficient_flooding_sigma` over the sum's ciphertexts, decoded),
    and the purpose.
    """
    values, summands = FLOODING_EXAMPLE
    policy = FloodingPolicy()
    lines = [
        "| preset | N | primes (bits) | scale | max_norm | bytes per value on the wire "
        "| round-trip error bound | flooding std (released "
        f"{values:,}-value sum of {summands}) | use |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name in PRESETS:
        p = CkksParams.preset(name)
        bits = p.coeff_modulus_bits
        primes = ", ".join(str(b) for b in bits)
        if len(bits) > 1:
            primes += " (special)"
        norm = p.max_norm
        norm_text = f"2^{int(norm).bit_length() - 1}" if norm >= 2**10 else f"{norm:g}"
        ciphertexts = -(-values // p.poly_modulus_degree)
        sigma = flooding_value_sigma(
            p,
            coefficient_flooding_sigma(
                p, ciphertexts=ciphertexts, summands=summands, policy=policy
            ),
        )
        lines.append(
            f"| `{name}` | {p.poly_modulus_degree} | {primes} | 2^{p.scale_bits} | {norm_text} "
            f"| {p.data_modulus_bits / 8:g} | {round_trip_tolerance(p):.1e} | {sigma:.1e} "
            f"| {PRESET_PURPOSES[name]} |"
        )
    return "\n".join(lines) + "\n"

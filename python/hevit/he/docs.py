"""Documentation generated from the code, so the README cannot drift from it.

``tests/test_readme.py`` compares the README's preset table with :func:`preset_table` and its
evaluation-key sizes with :func:`evaluation_key_sizes`.
"""

from __future__ import annotations

from .flooding import FloodingPolicy, coefficient_flooding_sigma, flooding_value_sigma
from .params import PRESET_PURPOSES, PRESETS, CkksParams
from .reference import round_trip_tolerance

__all__ = ["FLOODING_EXAMPLE", "KEY_SIZE_HEAD", "evaluation_key_sizes", "preset_table"]

#: The released vector the flooding column describes: (values, summed encryptions).
FLOODING_EXAMPLE = (1000, 3)
#: The head whose key sets the README sizes: (in_dim, out_dim) and, per preset, the layout.
KEY_SIZE_HEAD = (768, 3, {"latency": "sample", "single-row": "sample", "throughput": "batch"})


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


def _size(nbytes: int) -> str:
    if nbytes >= 10**6:
        return f"{nbytes / 10**6:.2f} MB"
    return f"{nbytes / 10**3:.1f} KB"


def evaluation_key_sizes() -> str:
    """The README's sentence on the evaluation keys a server holds: ``PublicContext.to_bytes()``
    of key sets generated for exactly the rotation steps a ``KEY_SIZE_HEAD`` plan needs (sizes
    follow from the parameters and the steps, not from the random keys)."""
    from .context import SecretContext
    from .plan import LinearPlan

    in_dim, out_dim, layouts = KEY_SIZE_HEAD
    parts = []
    for name, layout in layouts.items():
        params = CkksParams.preset(name)
        steps = LinearPlan.required_rotation_steps(
            params, in_dim=in_dim, out_dim=out_dim, layout=layout
        )
        size = _size(
            len(SecretContext.generate(params, rotation_steps=steps).public_context().to_bytes())
        )
        if steps:
            what = f"public key plus Galois keys for exactly the {layout}-layout plan's {len(steps)} rotation steps"
        else:
            what = f"public key only: the {layout} layout needs no evaluation key"
        parts.append(f"`{name}` {size} ({what})")
    return f"{in_dim} -> {out_dim} head, `PublicContext.to_bytes()`: " + ", ".join(parts) + "\n"

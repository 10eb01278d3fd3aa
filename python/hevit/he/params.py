"""CKKS parameters: a frozen dataclass checked by the C++ core on construction."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

from .. import _core
from ..errors import ParameterError

__all__ = [
    "DEPRECATED_PRESET_NAMES",
    "PRESETS",
    "PRESET_PURPOSES",
    "CkksParams",
    "max_secure_coeff_modulus_bits",
]


def max_secure_coeff_modulus_bits(poly_modulus_degree: int) -> int:
    """Largest total coefficient-modulus size (bits, special prime included) with 128-bit security.

    From the HomomorphicEncryption.org standard table (ternary secret); 0 for an unsupported ring.
    """
    return _core.max_secure_coeff_modulus_bits(int(poly_modulus_degree))


@dataclass(frozen=True)
class CkksParams:
    """CKKS encryption parameters.

    Parameters
    ----------
    poly_modulus_degree : int
        Ring dimension N (power of two, 1024 to 32768). One ciphertext carries N real values
        (real and imaginary part of N/2 complex slots).
    coeff_modulus_bits : tuple of int
        Bit sizes of the RNS primes. With more than one prime the last one is the special
        (key-switching) prime. The total must not exceed the 128-bit security table for N.
    scale_bits : int
        log2 of the encoding scale of fresh ciphertexts.
    max_norm : float
        Public bound on the L2 norm of every encrypted row (checked at encryption). Linear plans
        size their weight scale from it so results can never wrap around the modulus.

    Raises
    ------
    hevit.errors.ParameterError
        If the parameters are insecure or cannot hold values of norm ``max_norm`` at this scale.
    """

    poly_modulus_degree: int
    coeff_modulus_bits: tuple[int, ...]
    scale_bits: int
    max_norm: float = 64.0
    name: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "poly_modulus_degree", int(self.poly_modulus_degree))
        object.__setattr__(
            self, "coeff_modulus_bits", tuple(int(b) for b in self.coeff_modulus_bits)
        )
        object.__setattr__(self, "scale_bits", int(self.scale_bits))
        object.__setattr__(self, "max_norm", float(self.max_norm))
        _core.validate_params(
            self.poly_modulus_degree, list(self.coeff_modulus_bits), self.scale_bits, self.max_norm
        )

    @classmethod
    def preset(cls, name: str, *, max_norm: float | None = None) -> CkksParams:
        """Named parameter sets (see ``PRESETS`` and ``PRESET_PURPOSES``): ``throughput``,
        ``latency``, ``single-row``, ``precise``, ``update``, ``release``, ``mlp``.

        The names ``batch`` and ``sample`` (which collided with the layouts of the same names) are
        deprecated aliases of ``throughput`` and ``single-row`` for one release.

        Raises
        ------
        hevit.errors.ParameterError
            An unknown name (the message lists the known ones).
        """
        if name in DEPRECATED_PRESET_NAMES:
            new = DEPRECATED_PRESET_NAMES[name]
            warnings.warn(
                f"preset {name!r} is renamed {new!r} (the old name collides with the {name!r} "
                "layout); the alias will be removed in the next release",
                DeprecationWarning,
                stacklevel=2,
            )
            name = new
        try:
            spec = PRESETS[name]
        except KeyError:
            raise ParameterError(
                f"unknown preset {name!r}; choose one of {sorted(PRESETS)}"
            ) from None
        kwargs = dict(spec)
        if max_norm is not None:
            kwargs["max_norm"] = max_norm
        return cls(**kwargs, name=name)

    def matching_preset(self) -> str | None:
        """The preset these parameters are (ignoring ``max_norm``, which callers override), or
        None. Parameters read back from bytes do not carry their preset's name."""
        if self.name is not None:
            return self.name
        for name in PRESETS:
            if CkksParams.preset(name, max_norm=self.max_norm) == self:
                return name
        return None

    @property
    def slot_count(self) -> int:
        """Complex slots per ciphertext (N/2); each carries two real values."""
        return self.poly_modulus_degree // 2

    @property
    def data_modulus_bits(self) -> int:
        """Bits of the data modulus (all primes but the special one)."""
        bits = self.coeff_modulus_bits
        return sum(bits[:-1]) if len(bits) > 1 else bits[0]

    @property
    def supports_rotations(self) -> bool:
        """True when there is a special prime, so Galois keys (rotations) can exist."""
        return len(self.coeff_modulus_bits) > 1


#: Named parameter sets. Bytes per value on the wire = data-modulus bits / 8.
PRESETS: dict[str, dict] = {
    # Throughput: one 60-bit prime, no key switching; 7.5 bytes per value on the wire.
    "throughput": dict(poly_modulus_degree=4096, coeff_modulus_bits=(60,), scale_bits=26),
    # Lowest single-image latency: one data prime, so every rotation switches one digit; no
    # rescale: the weights get the scale the prime leaves, floor(54 - 2.5 - 22 - log2 max|y_k|)
    # bits in the sample layout (2 bits of headroom in the coefficient layout; max|y_k| =
    # ||w_k|| max_norm + |b_k|), so it depends on the head: 2^23 in both layouts for the
    # benchmarks' 768 -> 3 head (benchmarks/conftest.py make_head, rows of norm ~1), whose logits
    # on 256 make_features rows err by up to 1.6e-4 in the sample layout and 5e-6 on 16 rows in
    # the coefficient layout (measured with LinearPlan.compile / apply on that head).
    "latency": dict(poly_modulus_degree=4096, coeff_modulus_bits=(54, 55), scale_bits=22),
    # Precise single-image inference (coefficient layout, no key): one 60-bit prime and a 2^31
    # scale for L2-normalised rows (max_norm 1; he-cls tokens are). Input scale and weight scale
    # share the prime (s + weight bits <= 57 - log2 max|y|), so the error grows with the head's
    # row norms: about 1e-7 at ||w_k|| = 16 on real LC25000 tokens, 2^-31 rounding in the compact
    # reply (about 18 KB for 768 -> 3).
    "latency-precise": dict(
        poly_modulus_degree=4096, coeff_modulus_bits=(60,), scale_bits=31, max_norm=1.0
    ),
    # Sample layout with 1e-5 logit errors: N=4096 holds one 768-value row (replicated twice).
    # Diagonals are encoded at the 30-bit prime and rescaled away once, leaving the 39-bit prime
    # for the result. The special prime is the largest, since key-switching noise grows with q_i / P.
    "single-row": dict(poly_modulus_degree=4096, coeff_modulus_bits=(39, 30, 40), scale_bits=27),
    # Precision: N=8192, errors around 1e-8 in both layouts.
    "precise": dict(poly_modulus_degree=8192, coeff_modulus_bits=(60, 40, 60), scale_bits=40),
    # FedAvg model updates that are decrypted and released: N = 4096 with a 20-bit special prime
    # (never used: sums need no key switching) leaves an 89-bit data modulus, so a 2^56 scale puts
    # the key-dependent noise near 2^-49; flooding at the default policy then has a std of about
    # 2e-5 on a 1,000-value sum of three updates (the README's preset table is computed from
    # hevit.he.flooding), i.e. 2e-5 / rows on the averaged parameters. 46 KB per ciphertext.
    "update": dict(
        poly_modulus_degree=4096, coeff_modulus_bits=(44, 45, 20), scale_bits=56, max_norm=2.0**16
    ),
    # Values that are decrypted and then released (aggregates, logits sent on): a 2^80 scale over a
    # 120-bit data modulus puts the key-dependent noise near 2^-72, so noise flooding at the
    # default policy has a std of about 2e-12 on a 1,000-value sum of three. Batch layout only
    # (the third prime is the special prime; sums and batch plans need no rotation). Values up to
    # 2^39 fit, so the public row-norm bound is 2^24: sums of statistics need no down-scaling.
    "release": dict(
        poly_modulus_degree=8192, coeff_modulus_bits=(60, 60, 60), scale_bits=80, max_norm=2.0**24
    ),
    # The two-layer head y = W2 (W1 x + b1)^2 + b2 (MlpPlan): three data primes for two rescales
    # and the output level. Layer 1 is rescaled by a 40-bit prime back to about 2^40, the squares
    # (2^80) are rescaled by the next 40-bit prime, and layer 2 keeps its result unrescaled over
    # the remaining 89 bits. The 49-bit special prime is the largest that the 218-bit table for
    # N = 8192 leaves; key switching (conjugation, relinearisation) acts on values at 2^80.
    "mlp": dict(poly_modulus_degree=8192, coeff_modulus_bits=(49, 40, 40, 40, 49), scale_bits=40),
}

#: What each preset is for (the README's preset table is generated from this and ``PRESETS``).
PRESET_PURPOSES: dict[str, str] = {
    "throughput": "batch-layout inference on many rows; one prime, no evaluation keys",
    "latency": "single-image inference (coefficient layout) and he-cls default",
    "latency-precise": "coefficient-layout inference to about 1e-7 on rows of norm <= 1",
    "single-row": "sample-layout inference with rotations; 768-value rows fit",
    "precise": "either slot layout at a 2^40 scale",
    "update": "he-fedavg model updates (decrypted, flooded and released)",
    "release": "ridge statistics, feature moments and released logits",
    "mlp": "the encrypted two-layer head (MlpPlan)",
}

#: Old preset names kept as deprecated aliases for one release.
DEPRECATED_PRESET_NAMES: dict[str, str] = {"batch": "throughput", "sample": "single-row"}

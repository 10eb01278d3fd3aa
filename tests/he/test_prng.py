"""The ChaCha20 generator that expands seeds and draws encryption noise, against an independent
ChaCha20 (the `cryptography` package) and the distributions the noise analysis assumes."""

import numpy as np

from hevit import _core, he


def reference_block(key: bytes, nonce_words: tuple[int, int, int], counter: int) -> bytes:
    # cryptography is a core dependency (the protocol's signatures): the independent reference
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

    nonce = counter.to_bytes(4, "little") + b"".join(w.to_bytes(4, "little") for w in nonce_words)
    return Cipher(algorithms.ChaCha20(key, nonce), mode=None).encryptor().update(bytes(64))


def test_chacha20_blocks_equal_an_independent_implementation(rng):
    for _ in range(20):
        key = rng.bytes(32)
        nonce = tuple(int(v) for v in rng.integers(0, 2**32, 3, dtype=np.uint64))
        counter = int(rng.integers(0, 2**32 - 1))
        assert _core.inspection.chacha20_block(key, *nonce, counter) == reference_block(
            key, nonce, counter
        )


def test_rfc8439_block_vector():
    """RFC 8439, section 2.3.2: the block function's test vector (key 00..1f, counter 1)."""
    key = bytes(range(32))
    block = _core.inspection.chacha20_block(key, 0x09000000, 0x4A000000, 0, 1)
    assert block == reference_block(key, (0x09000000, 0x4A000000, 0), 1)
    assert block[:16].hex() == "10f1e7e4d13b5915500fdd1fa32071c4"


def test_seed_expansion_is_uniform_and_deterministic(rng):
    sk = he.SecretContext.generate(he.CkksParams.preset("single-row"))
    pub = sk.public_context()._core
    seed = rng.bytes(64)
    first = np.asarray(_core.inspection.seed_expansion(pub, seed), dtype=np.float64)
    assert np.array_equal(
        first, np.asarray(_core.inspection.seed_expansion(pub, seed), dtype=np.float64)
    )
    assert not np.array_equal(
        first, np.asarray(_core.inspection.seed_expansion(pub, rng.bytes(64)), dtype=np.float64)
    )
    primes = _core.inspection.first_prime(pub)
    n = sk.params.poly_modulus_degree
    limb = first[:n] / primes
    assert limb.max() < 1.0 and limb.min() >= 0.0
    # uniform on [0, 1): mean 1/2 and variance 1/12, within 6 standard errors
    assert abs(limb.mean() - 0.5) < 6 * np.sqrt(1 / 12 / n)
    assert abs(limb.var() - 1 / 12) < 6 * np.sqrt(1 / 180 / n)


def test_noise_is_centred_binomial_with_sigma_sqrt_10_5():
    sk = he.SecretContext.generate(he.CkksParams.preset("throughput"))
    noise = np.asarray(
        _core.inspection.noise_sample(sk.public_context()._core, 16), dtype=np.float64
    )
    assert np.abs(noise).max() <= 21
    n = noise.size
    assert abs(noise.mean()) < 6 * np.sqrt(10.5 / n)
    assert abs(noise.var() - 10.5) < 6 * 10.5 * np.sqrt(2 / n)

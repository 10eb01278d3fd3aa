"""Li-Micciancio key recovery: one exact CKKS decryption plus its ciphertext reveals the secret
key; noise flooding (hevit.he.flooding, the default on every hevit release path) defeats it."""

import pytest

from hevit import he
from hevit.attacks.key_recovery import decrypts_correctly, recover_secret_key
from hevit.he.flooding import FloodingPolicy, flood, sum_noise_norm_bound

# Scales at which float64 carries an exact decryption (coefficients below 2^53), so the attack
# applies verbatim; the second set is `precise`.
ATTACKABLE = [
    he.CkksParams(4096, (60,), 40),
    he.CkksParams.preset("precise"),
    he.CkksParams.preset("throughput"),
]


def full_batch(sk, rng):
    n = sk.params.poly_modulus_degree
    x = rng.uniform(-1, 1, (n, 1))  # fills every slot of one batch-layout ciphertext
    pub = he.PublicContext.from_bytes(sk.public_context().to_bytes())
    return x, he.EncryptedBatch.from_bytes(sk.encrypt(x, layout="batch").to_bytes(), pub)


def coefficient_noise_bound(params):
    """A fresh ciphertext's noise in coefficient units (encryption noise plus encoding
    rounding): the reference's value-unit std times the scale."""
    return he.reference.SIGMAS * he.reference.coefficient_noise_std(params) * 2.0**params.scale_bits


@pytest.mark.parametrize(
    "params", ATTACKABLE, ids=lambda p: f"N{p.poly_modulus_degree}-s{p.scale_bits}"
)
def test_exact_decryption_reveals_the_secret_key(params, rng):
    sk = he.SecretContext.generate(params)
    _x, batch = full_batch(sk, rng)
    result = recover_secret_key(batch, sk.decrypt(batch))
    assert result.ternary
    # the recovered key decrypts an unrelated ciphertext: it is the real secret key
    x2, other = full_batch(sk, rng)
    assert decrypts_correctly(result.key, other, x2, noise_bound=coefficient_noise_bound(params))
    # a random ternary key does not (the check has teeth)
    fake = rng.integers(-1, 2, params.poly_modulus_degree)
    assert not decrypts_correctly(fake, other, x2, noise_bound=coefficient_noise_bound(params))


@pytest.mark.parametrize(
    "params", ATTACKABLE[:2], ids=lambda p: f"N{p.poly_modulus_degree}-s{p.scale_bits}"
)
def test_flooded_decryption_does_not_reveal_the_key(params, rng):
    sk = he.SecretContext.generate(params)
    _x, batch = full_batch(sk, rng)
    exact = sk.decrypt(batch)
    bound = sum_noise_norm_bound(params, exact.size, 1)
    released = flood(exact, bound, FloodingPolicy())
    result = recover_secret_key(batch, released)
    assert not result.ternary
    x2, other = full_batch(sk, rng)
    assert not decrypts_correctly(
        result.key, other, x2, noise_bound=coefficient_noise_bound(params)
    )
    # the weakest policy hevit accepts already defeats the exact attack
    weak = flood(exact, bound, FloodingPolicy(statistical_security_bits=16, max_decryptions=1))
    assert not recover_secret_key(batch, weak).ternary

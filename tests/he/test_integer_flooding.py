"""Integer-domain noise flooding: the exact discrete Gaussian sampler (against its pmf computed in
numpy) and SecretContext.decrypt_flooded (determinism across sites and threads, the stated std
in every preset and layout, noise on 1e6-magnitude aggregates, the key-recovery attack).

Every tolerance comes from sigma and the sample count: a sample variance of M values of a
zero-mean Gaussian of std sigma is sigma^2 chi^2_M / M, a sample mean sigma / sqrt(M) N(0, 1);
bounds are Z_BOUND standard deviations (Wilson-Hilferty for chi-square quantiles).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from hevit import _core, he
from hevit.attacks.key_recovery import decrypts_correctly, recover_secret_key
from hevit.errors import ContextMismatchError, ParameterError
from hevit.he.flooding import FloodingPolicy, coefficient_flooding_sigma, representable_sigma
from hevit.he.reference import SIGMAS, batch_in_coefficients

#: Standard normal quantile of every two-sided check: a false failure has probability about 1e-7.
Z_BOUND = 5.3


def chi2_interval(df: int, z: float = Z_BOUND) -> tuple[float, float]:
    """Wilson-Hilferty quantiles of chi^2_df at -z and +z standard deviations (accurate to well
    under 1% of the quantile for df >= 30)."""
    c = 2.0 / (9.0 * df)
    return tuple(df * (1.0 - c + s * z * math.sqrt(c)) ** 3 for s in (-1.0, 1.0))


def assert_std(diff: np.ndarray, sigma: float) -> None:
    """diff holds independent zero-mean values of std sigma: the mean and the sum of squares are
    checked against their sampling distributions."""
    diff = np.asarray(diff, dtype=np.float64).ravel()
    m = diff.size
    assert abs(diff.mean()) < Z_BOUND * sigma / math.sqrt(m)
    low, high = chi2_interval(m)
    statistic = float(np.sum((diff / sigma) ** 2))
    assert low < statistic < high, (statistic / m, low / m, high / m)


def exact_pmf(sigma: float, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """D_{Z,sigma} on [-radius, radius] (the mass beyond 12 sigma is below exp(-72))."""
    x = np.arange(-radius, radius + 1)
    weights = np.exp(-(x.astype(np.float64) ** 2) / (2.0 * sigma**2))
    return x, weights / weights.sum()


# --------------------------------------------------------------------------------------------
# the sampler


def test_representable_sigma_rounds_up_to_an_8_bit_mantissa(rng):
    requested = np.concatenate([2.0 ** rng.uniform(0, 56, 2000), [1.0, 255.5, 2.0**56]])
    for s in requested:
        exact = representable_sigma(s)
        assert s <= exact <= s * (1 + 1 / 128)
        mantissa, _exponent = math.frexp(exact)  # exact = mantissa 2^exponent, mantissa in [0.5, 1)
        assert (mantissa * 256).is_integer()  # an 8-bit mantissa m in [128, 256)
        assert exact <= 2.0**56
    for s in (1.0, 200.0, 3.3125, 2.0**40, 2.0**56):
        assert representable_sigma(s) == s


@pytest.mark.parametrize(
    "bad", [float("nan"), float("inf"), 0.0, 0.5, -3.0, 2.0**56 * 1.01, 2.0**60]
)
def test_representable_sigma_refuses_what_the_sampler_cannot_draw(bad):
    with pytest.raises(ParameterError, match="sigma"):
        representable_sigma(bad)
    with pytest.raises(ParameterError, match="sigma"):
        _core.inspection.discrete_gaussian_samples(bad, bytes(32), 0, 10)


# 1 and 3.3: sigma = m / 2^k (Algorithm 3 with t = floor(sigma) + 1); 200: t = sigma = m;
# 1000: t = sigma = m 2^2 (the three-term acceptance)
@pytest.mark.parametrize("sigma", [1.0, 3.3, 200.0, 1000.0])
def test_sampler_matches_the_exact_pmf(sigma, rng):
    count = 400_000
    exact = representable_sigma(sigma)
    samples = _core.inspection.discrete_gaussian_samples(sigma, rng.bytes(32), 7, count)
    x, pmf = exact_pmf(exact, int(12 * exact) + 2)
    assert np.all(np.abs(samples) <= x[-1])
    observed = np.bincount(samples - x[0], minlength=x.size).astype(np.float64)
    expected = pmf * count
    # integers with at least 20 expected draws are bins of their own; each tail is one bin
    inner = expected >= 20
    first, last = np.flatnonzero(inner)[[0, -1]]
    obs = np.concatenate(
        [[observed[:first].sum()], observed[first : last + 1], [observed[last + 1 :].sum()]]
    )
    exp = np.concatenate(
        [[expected[:first].sum()], expected[first : last + 1], [expected[last + 1 :].sum()]]
    )
    keep = exp > 0
    statistic = float(np.sum((obs[keep] - exp[keep]) ** 2 / exp[keep]))
    df = int(keep.sum()) - 1
    assert statistic < chi2_interval(max(df, 30))[1], (statistic, df)
    # the chi-square test has little power against a slightly wrong sigma: the second moment
    # against the pmf's, within Z_BOUND of its sampling std (from the pmf's fourth moment)
    second = float(np.sum(pmf * x**2))
    fourth = float(np.sum(pmf * x.astype(np.float64) ** 4))
    measured = float(np.mean(samples.astype(np.float64) ** 2))
    assert abs(measured - second) < Z_BOUND * math.sqrt((fourth - second**2) / count)


@pytest.mark.parametrize("sigma", [2.0**20 + 12345.0, 2.0**40 * 1.37, 2.0**56])
def test_sampler_mean_and_variance_at_large_sigma(sigma, rng):
    count = 200_000
    exact = representable_sigma(sigma)
    samples = _core.inspection.discrete_gaussian_samples(sigma, rng.bytes(32), 0, count)
    # D_{Z,sigma} has mean 0 and variance sigma^2 (to within exp(-2 pi^2 sigma^2)) at these sigmas
    assert_std(samples.astype(np.float64), exact)
    # every integer is reachable, not only a coarse grid: at these sigmas each parity has
    # probability 1/2 up to exp(-pi^2 sigma^2 / 2)
    odd = int(np.count_nonzero(samples & 1))
    assert abs(odd - count / 2) < Z_BOUND * math.sqrt(count / 4)


def test_sampler_is_a_deterministic_function_of_key_and_nonce(rng):
    key = rng.bytes(32)
    a = _core.inspection.discrete_gaussian_samples(2.0**30, key, 5, 5000)
    assert np.array_equal(a, _core.inspection.discrete_gaussian_samples(2.0**30, key, 5, 5000))
    other_key = bytes([key[0] ^ 1]) + key[1:]
    assert not np.array_equal(
        a, _core.inspection.discrete_gaussian_samples(2.0**30, other_key, 5, 5000)
    )
    assert not np.array_equal(a, _core.inspection.discrete_gaussian_samples(2.0**30, key, 6, 5000))
    # a prefix of a longer draw (the stream is consumed sample after sample)
    assert np.array_equal(a[:100], _core.inspection.discrete_gaussian_samples(2.0**30, key, 5, 100))


# --------------------------------------------------------------------------------------------
# decrypt_flooded


def policy_sigma(params: he.CkksParams, ciphertexts: int, summands: int = 1) -> float:
    return coefficient_flooding_sigma(
        params, ciphertexts=ciphertexts, summands=summands, policy=FloodingPolicy()
    )


def rows_within_norm(rng, rows: int, cols: int, max_norm: float) -> np.ndarray:
    """Values in (-1, 1), scaled down where rows would exceed half of max_norm (at magnitude 1
    float64 resolves every preset's flooding noise in value units)."""
    x = rng.uniform(-1, 1, (rows, cols))
    return x * min(1.0, 0.5 * max_norm / np.max(np.linalg.norm(x, axis=1)))


def test_two_sites_and_any_thread_count_release_identical_bits(keys, rng):
    sk = keys.get("update")
    params = sk.params
    n = params.poly_modulus_degree
    x = rows_within_norm(rng, n, 5, params.max_norm)
    wire = sk.encrypt(x, layout="batch").to_bytes()
    sites = [he.SecretContext.from_bytes(sk.to_bytes()) for _ in range(2)]
    batches = [he.EncryptedBatch.from_bytes(wire, site.public_context()) for site in sites]
    key = rng.bytes(32)
    sigma = policy_sigma(params, batches[0].ciphertext_count)
    first = sites[0].decrypt_flooded(batches[0], sigma=sigma, noise_key=key, threads=1)
    second = sites[1].decrypt_flooded(batches[1], sigma=sigma, noise_key=key, threads=2)
    assert first.shape == x.shape
    assert first.tobytes() == second.tobytes()
    # the noise is there, and another key draws other noise
    exact = sk.decrypt(batches[0])
    assert np.all(first != exact)
    other = sites[0].decrypt_flooded(batches[0], sigma=sigma, noise_key=rng.bytes(32))
    assert np.all(other != first)


def preset_layouts():
    for name in he.PRESETS:
        params = he.CkksParams.preset(name)
        layouts = ["batch", "sample"]
        if batch_in_coefficients(params):
            layouts.append("coefficient")
        for layout in layouts:
            yield pytest.param(name, layout, id=f"{name}-{layout}")


def layout_shape(params: he.CkksParams, layout: str) -> tuple[int, int]:
    """About 4N values spread over several ciphertexts."""
    n = params.poly_modulus_degree
    if layout == "batch":
        return n, 4
    if layout == "sample":
        return 8, n // 2  # two rows per ciphertext, each filling the N/2 slots
    return 4, n  # coefficient: one row per ciphertext, N values


@pytest.mark.parametrize(("preset", "layout"), list(preset_layouts()))
def test_flooding_has_the_stated_std_in_value_units(preset, layout, keys, rng):
    sk = keys.get(preset)
    params = sk.params
    rows, cols = layout_shape(params, layout)
    x = rows_within_norm(rng, rows, cols, params.max_norm)
    batch = sk.encrypt(x, layout=layout)
    sigma = representable_sigma(policy_sigma(params, batch.ciphertext_count))
    flooded = sk.decrypt_flooded(batch, sigma=sigma, noise_key=rng.bytes(32))
    exact = sk.decrypt(batch)
    in_coefficients = layout == "coefficient" or (
        layout == "batch" and batch_in_coefficients(params)
    )
    n = params.poly_modulus_degree
    value_sigma = sigma / 2.0**params.scale_bits
    if not in_coefficients:
        value_sigma *= math.sqrt(
            n / 2
        )  # a slot's real or imaginary part sums N/2 coefficient pairs
    assert_std(flooded - exact, value_sigma)


def centred_integers(residues: np.ndarray, primes: list[int], n: int) -> list[int]:
    """CRT composition of residue polynomials (prime after prime) into centred Python ints."""
    modulus = math.prod(primes)
    out = [0] * n
    for q, limb in zip(primes, residues.reshape(len(primes), n), strict=True):
        cofactor = modulus // q
        weight = cofactor * pow(cofactor, -1, q) % modulus
        for j, r in enumerate(limb.tolist()):
            out[j] += r * weight
    return [v % modulus - modulus if v % modulus > modulus // 2 else v % modulus for v in out]


@pytest.mark.parametrize(("preset", "summands"), [("update", 16), ("release", 3)])
def test_aggregates_of_magnitude_1e6_carry_the_flooding_noise(preset, summands, keys, rng):
    sk = keys.get(preset)
    params = sk.params
    n = params.poly_modulus_degree
    # one column of N rows per contribution, each value near 1e6 / summands (within max_norm)
    parts = [np.full((n, 1), 1e6 / summands) + rng.uniform(-1, 1, (n, 1)) for _ in range(summands)]
    total = he.EncryptedBatch.sum([sk.encrypt(p, layout="batch") for p in parts])
    sigma = representable_sigma(policy_sigma(params, total.ciphertext_count, summands))
    key = rng.bytes(32)
    primes = sk.public_context()._core.primes[: total._core.prime_count]
    flooded = centred_integers(
        _core.inspection.decrypted_residues(sk._core, total._core, 0, sigma, key), primes, n
    )
    exact = centred_integers(
        _core.inspection.decrypted_residues(sk._core, total._core, 0, 0.0, key), primes, n
    )
    # the exact plaintext carries the aggregate: coefficients far beyond float64's 2^53
    assert max(abs(v) for v in exact) > 2.0**60
    diff = np.array([f - e for f, e in zip(flooded, exact, strict=True)], dtype=np.float64)
    assert_std(diff, sigma)
    # the released values are the decoding of exactly these flooded integers
    released = sk.decrypt_flooded(total, sigma=sigma, noise_key=key)
    assert np.allclose(
        released,
        sum(parts),
        rtol=0,
        atol=SIGMAS * sigma * math.sqrt(n / 2) / 2.0**params.scale_bits + 1e-6,
    )


def full_batch(sk, rng):
    n = sk.params.poly_modulus_degree
    x = rng.uniform(-1, 1, (n, 1))  # fills every coefficient of one batch-layout ciphertext
    return x, sk.encrypt(x, layout="batch")


def test_key_recovery_attack_positive_control(rng):
    """The Li-Micciancio attack recovers the key from an exact decryption and from a flooded one
    whose noise key it knows (it regenerates and subtracts the noise: the noise is exactly the
    keyed sampler's, coefficient by coefficient), and fails from the same release under a noise
    key it does not know, at sigma = 1 already and at the policy sigma. The exact attack cannot
    absorb any noise: sigma = 1 defeats it, which says nothing about lattice attacks that
    tolerate small noise; only the policy sigma comes with the KL bound."""
    # batch values in coefficients at a 2^40 scale: the released values at the policy sigma (about
    # 2 units) stay within max_norm, so the attack can re-encode them, and float64 holds them exactly
    params = he.CkksParams(4096, (60,), 40)
    sk = he.SecretContext.generate(params)
    n = params.poly_modulus_degree
    _x, batch = full_batch(sk, rng)
    x2, other = full_batch(sk, rng)
    bound = SIGMAS * math.hypot(math.sqrt(10.5), math.sqrt(1 / 12))

    exact = recover_secret_key(batch, sk.decrypt(batch))
    assert exact.ternary and decrypts_correctly(exact.key, other, x2, noise_bound=bound)

    sigma = representable_sigma(policy_sigma(params, 1))
    key = rng.bytes(32)
    released = sk.decrypt_flooded(batch, sigma=sigma, noise_key=key)
    known_noise = _core.inspection.discrete_gaussian_samples(sigma, key, 0, n)
    # float64 holds (m + e + z) / 2^40 exactly here (|m + e + z| < 2^53), so the subtraction is exact
    stripped = released - known_noise.reshape(n, 1) / 2.0**params.scale_bits
    weakened = recover_secret_key(batch, stripped)
    assert weakened.ternary and decrypts_correctly(weakened.key, other, x2, noise_bound=bound)

    for s in (1.0, sigma):
        attempt = recover_secret_key(
            batch, sk.decrypt_flooded(batch, sigma=s, noise_key=rng.bytes(32))
        )
        assert not attempt.ternary
        assert not decrypts_correctly(attempt.key, other, x2, noise_bound=bound)


def test_coefficient_flooding_sigma_bounds_the_measured_noise(keys, rng):
    """B of coefficient_flooding_sigma bounds the measured key-dependent noise of a sum (exact
    decrypted coefficients minus the sum of the encodings), and sigma = policy.sigma(B)."""
    summands = 3
    for preset in ("throughput", "update"):
        sk = keys.get(preset)
        params = sk.params
        n = params.poly_modulus_degree
        xs = [rows_within_norm(rng, n, 2, params.max_norm / summands) for _ in range(summands)]
        total = he.EncryptedBatch.sum([sk.encrypt(x, layout="batch") for x in xs])
        q = int(_core.inspection.first_prime(sk.public_context()._core))
        norm2 = 0
        for index in range(total.ciphertext_count):
            plain = sum(
                np.array(
                    _core.inspection.plaintext_coefficients(
                        sk.public_context()._core, x, "batch", index
                    ),
                    dtype=object,
                )
                for x in xs
            )
            decrypted = _core.inspection.decrypted_residues(
                sk._core, total._core, index, 0.0, bytes(32)
            )
            for d, p in zip(decrypted[:n].tolist(), plain.tolist(), strict=True):
                e = (d - p) % q
                e = e - q if e > q // 2 else e
                norm2 += e * e
        policy = FloodingPolicy()
        sigma = coefficient_flooding_sigma(
            params, ciphertexts=total.ciphertext_count, summands=summands, policy=policy
        )
        bound = sigma / (
            math.sqrt(policy.max_decryptions / 2) * 2.0 ** (policy.statistical_security_bits / 2)
        )
        assert math.sqrt(norm2) <= bound
        # and the bound is not loose by orders of magnitude (the noise is what the model says)
        assert math.sqrt(norm2) > bound / 2


def test_decrypt_flooded_refuses_bad_input(keys, rng):
    sk = keys.get("throughput")
    x = rng.uniform(-1, 1, (16, 3))
    batch = sk.encrypt(x, layout="batch")
    key = rng.bytes(32)
    for bad in (float("nan"), 0.0, 2.0**60):
        with pytest.raises(ParameterError, match="sigma"):
            sk.decrypt_flooded(batch, sigma=bad, noise_key=key)
    # 64 sigma must stay below a quarter of the 60-bit modulus
    with pytest.raises(ParameterError, match="quarter"):
        sk.decrypt_flooded(batch, sigma=2.0**53, noise_key=key)
    with pytest.raises(ParameterError, match="32 bytes"):
        sk.decrypt_flooded(batch, sigma=2.0**20, noise_key=key[:31])
    with pytest.raises(ParameterError, match="32 bytes"):
        sk._core.decrypt_flooded(batch._core, 2.0**20, key[:31], 1)
    stranger = he.SecretContext.generate(sk.params)
    with pytest.raises(ContextMismatchError):
        stranger.decrypt_flooded(batch, sigma=2.0**20, noise_key=key)


def test_derive_key_is_shared_by_holders_of_the_key_and_separates_labels(keys):
    sk = keys.get("throughput")
    twin = he.SecretContext.from_bytes(sk.to_bytes())
    label = b"digest of an aggregate"
    derived = sk.derive_key(label)
    assert len(derived) == 32
    assert twin.derive_key(label) == derived
    assert sk.derive_key(label + b"!") != derived
    assert sk.derive_key(b"") != derived
    # another key set derives another key for the same label
    assert he.SecretContext.generate(sk.params).derive_key(label) != derived

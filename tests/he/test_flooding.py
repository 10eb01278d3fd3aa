import math

import numpy as np
import pytest

from hevit import he
from hevit.errors import ParameterError
from hevit.he.flooding import (
    FloodingPolicy,
    flood,
    linear_noise_norm_bound,
    noise_norm_bound,
    sum_noise_norm_bound,
)


def test_sigma_follows_the_kl_bound():
    policy = FloodingPolicy(statistical_security_bits=40, max_decryptions=2**10)
    bound = 1e-12
    sigma = policy.sigma(bound)
    # q releases of a shift of norm B under Gaussian noise sigma: KL = q B^2 / (2 sigma^2) = 2^-s
    assert math.isclose(policy.max_decryptions * bound**2 / (2 * sigma**2), 2.0**-40, rel_tol=1e-12)


def test_flood_adds_noise_of_the_stated_std_and_rounds_to_the_grid(rng):
    policy = FloodingPolicy(statistical_security_bits=32, max_decryptions=16)
    values = rng.standard_normal(200_000)
    bound = 1e-9
    out = flood(values, bound, policy, rng=rng)
    sigma = policy.sigma(bound)
    step = policy.grid(sigma)
    assert np.all(np.abs(out / step - np.round(out / step)) < 1e-6)
    # sample std of 200k Gaussian draws is within 1% of sigma with overwhelming probability;
    # rounding to a grid at or below sigma adds at most step^2 / 12 of variance
    measured = float(np.std(out - values))
    assert sigma * 0.99 < measured < math.sqrt(sigma**2 + step**2 / 12) * 1.01


def test_explicit_precision_grid(rng):
    out = flood(np.zeros(10), 1e-12, FloodingPolicy(precision_bits=10), rng=rng)
    assert np.all(out * 2**10 == np.round(out * 2**10))


def test_flood_refuses_noise_the_task_cannot_absorb():
    params = he.CkksParams.preset("throughput")
    bound = sum_noise_norm_bound(params, 4096, 3)
    with pytest.raises(ParameterError, match="release"):
        flood(np.zeros(4096), bound, FloodingPolicy(), max_sigma=1e-3)


def test_release_preset_leaves_precision_after_default_flooding():
    params = he.CkksParams.preset("release")
    bound = sum_noise_norm_bound(params, 300_000, 50)
    assert FloodingPolicy().sigma(bound) < 1e-9


@pytest.mark.parametrize("bad", [dict(statistical_security_bits=8), dict(max_decryptions=0)])
def test_policy_validation(bad):
    with pytest.raises(ParameterError):
        FloodingPolicy(**bad)


def test_noise_bounds_scale_as_derived():
    assert noise_norm_bound(2.0, 100) == 2.0 * (10 + he.reference.SIGMAS)
    params = he.CkksParams.preset("release")
    one = sum_noise_norm_bound(params, 100, 1)
    assert math.isclose(sum_noise_norm_bound(params, 100, 4), 2 * one)
    w = np.ones((3, 16)) * 2.0  # row norm 8
    assert math.isclose(
        linear_noise_norm_bound(params, w, 10),
        8 * noise_norm_bound(he.reference.ckks_noise_std(params), 30),
    )


def test_decryption_budget_counts_per_key_set():
    from hevit.errors import DecryptionBudgetError
    from hevit.he.flooding import DecryptionBudget

    budget, policy = DecryptionBudget(), FloodingPolicy(max_decryptions=3)
    assert [budget.spend(b"a", policy) for _ in range(3)] == [2, 1, 0]
    with pytest.raises(DecryptionBudgetError, match="covers 3"):
        budget.spend(b"a", policy)
    assert budget.released(b"a") == 3 and budget.spend(b"b", policy) == 2

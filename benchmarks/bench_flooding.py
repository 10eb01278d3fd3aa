"""Releasing a decrypted aggregate: exact decryption vs integer-domain flooded decryption
(SecretContext.decrypt_flooded: a discrete Gaussian per plaintext coefficient, from ChaCha20),
for a 3.49M-value vector (a CIFAR-sized CNN update) in the ``update`` preset (852 batch-layout
ciphertexts of N = 4096) and the ``release`` preset (426 ciphertexts of N = 8192). The flooding
sigma is the policy's for a sum of three contributions; parameters go to extra_info."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hevit import he
from hevit.he.flooding import FloodingPolicy, coefficient_flooding_sigma, representable_sigma

from .conftest import Row

VALUES = 3_489_792  # 852 x 4096
SUMMANDS = 3


@pytest.fixture(scope="module", params=["update", "release"])
def aggregate(request):
    preset = request.param
    params = he.CkksParams.preset(preset)
    sk = he.SecretContext.generate(params)
    n = params.poly_modulus_degree
    cols = math.ceil(VALUES / n)
    rng = np.random.default_rng(3)
    parts = [sk.encrypt(rng.uniform(-1, 1, (n, cols)), layout="batch") for _ in range(SUMMANDS)]
    total = he.EncryptedBatch.sum(parts)
    sigma = coefficient_flooding_sigma(
        params, ciphertexts=total.ciphertext_count, summands=SUMMANDS, policy=FloodingPolicy()
    )
    info = dict(
        preset=preset,
        values=n * cols,
        ciphertexts=total.ciphertext_count,
        summands=SUMMANDS,
        sigma=representable_sigma(sigma),
        policy=FloodingPolicy().describe(),
        threads=None,
    )
    return sk, total, sigma, info


def test_decrypt(benchmark, aggregate, registry):
    sk, total, _sigma, info = aggregate
    out = benchmark.pedantic(lambda: sk.decrypt(total), rounds=3)
    assert out.shape == total.shape
    benchmark.extra_info.update(info, kernel="decrypt")
    registry.add(Row(f"decrypt {info['preset']} aggregate", "core", info["values"], benchmark))


def test_decrypt_flooded(benchmark, aggregate, registry):
    sk, total, sigma, info = aggregate
    key = bytes(range(32))
    out = benchmark.pedantic(
        lambda: sk.decrypt_flooded(total, sigma=sigma, noise_key=key), rounds=3
    )
    assert out.shape == total.shape
    benchmark.extra_info.update(info, kernel="decrypt_flooded")
    registry.add(
        Row(f"decrypt_flooded {info['preset']} aggregate", "core", info["values"], benchmark)
    )

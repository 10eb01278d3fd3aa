"""One aggregation round of K = 3 clients, end to end: every client encrypts (+ serializes) its
vector, the server deserializes and sums, every client deserializes and decrypts. Vector sizes:
a 768 -> 3 head update (2,308 values) and the he-ridge statistics of 768-dim features (298,380
values). hevit (the presets hevit.federated uses: ``update`` for FedAvg updates, ``release`` for
statistics; noise flooding included) against TenSEAL CKKS vectors (N = 8192,
scale 2^40, no flooding) and plain numpy, in the same run. Every implementation's result is
checked against the numpy sum."""

from __future__ import annotations

import numpy as np
import pytest

from hevit import he
from hevit.federated.models import ridge_statistics_length
from hevit.federated.vectors import decrypt_vector, encrypt_vector
from hevit.he.flooding import FloodingPolicy, flood, sum_noise_norm_bound

from .conftest import Row

CLIENTS = 3
SIZES = {"head update": 3 * 768 + 3 + 1, "ridge statistics": ridge_statistics_length(768, 3)}
PRESET = {"head update": "update", "ridge statistics": "release"}


def client_vectors(length: int) -> list[np.ndarray]:
    rng = np.random.default_rng(length)
    return [rng.standard_normal(length) for _ in range(CLIENTS)]


@pytest.fixture(scope="module")
def key_sets():
    out = {}
    for name in set(PRESET.values()):
        sk = he.SecretContext.generate(he.CkksParams.preset(name))
        out[name] = (sk, he.PublicContext.from_bytes(sk.public_context().to_bytes()))
    return out


def _add(registry, benchmark, impl, what, up, down, note=""):
    registry.add(Row(impl, "aggregation", 1, benchmark, up, down, note, {"vector": what}))


@pytest.mark.parametrize("what", list(SIZES))
def test_hevit_round(benchmark, registry, key_sets, what):
    sk, server = key_sets[PRESET[what]]
    vectors = client_vectors(SIZES[what])
    policy = FloodingPolicy()
    sizes = {}

    def round_trip():
        uploads = [encrypt_vector(sk, v).to_bytes() for v in vectors]
        total = he.EncryptedBatch.sum(
            [he.EncryptedBatch.from_bytes(u, server) for u in uploads]
        ).to_bytes()
        released = []
        for _ in range(CLIENTS):
            exact = decrypt_vector(
                sk, he.EncryptedBatch.from_bytes(total, sk.public_context()), len(vectors[0])
            )
            released.append(
                flood(exact, sum_noise_norm_bound(sk.params, len(exact), CLIENTS), policy)
            )
        sizes.update(up=len(uploads[0]), down=len(total))
        return released

    released = benchmark.pedantic(
        round_trip, rounds=3 if what == "head update" else 1, iterations=1
    )
    expected = sum(vectors)
    sigma = policy.sigma(sum_noise_norm_bound(sk.params, len(expected), CLIENTS))
    assert np.abs(released[0] - expected).max() <= he.reference.sum_tolerance(
        sk.params, CLIENTS
    ) + he.reference.SIGMAS * sigma + policy.grid(sigma)
    _add(registry, benchmark, f"hevit {PRESET[what]} (flooded)", what, sizes["up"], sizes["down"])


@pytest.mark.parametrize("what", list(SIZES))
def test_tenseal_round(benchmark, registry, what):
    ts = pytest.importorskip("tenseal", reason="install the 'bench' extra to compare with TenSEAL")
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[60, 40, 40, 60])
    ctx.global_scale = 2**40
    server = ts.context_from(ctx.serialize(save_secret_key=False))
    vectors = client_vectors(SIZES[what])
    slots = 4096
    sizes = {}

    def round_trip():
        uploads = [
            [ts.ckks_vector(ctx, v[i : i + slots]).serialize() for i in range(0, len(v), slots)]
            for v in vectors
        ]
        totals = []
        for chunk in range(len(uploads[0])):
            acc = ts.ckks_vector_from(server, uploads[0][chunk])
            for c in range(1, CLIENTS):
                acc = acc + ts.ckks_vector_from(server, uploads[c][chunk])
            totals.append(acc.serialize())
        out = []
        for _ in range(CLIENTS):
            out.append(np.concatenate([ts.ckks_vector_from(ctx, t).decrypt() for t in totals]))
        sizes.update(up=sum(map(len, uploads[0])), down=sum(map(len, totals)))
        return out

    out = benchmark.pedantic(round_trip, rounds=3 if what == "head update" else 1, iterations=1)
    assert np.abs(out[0] - sum(vectors)).max() < 1e-3  # TenSEAL's own precision at scale 2^40
    _add(
        registry, benchmark, "tenseal ckks_vector", what, sizes["up"], sizes["down"], "no flooding"
    )


@pytest.mark.parametrize("what", list(SIZES))
def test_numpy_round(benchmark, registry, what):
    vectors = client_vectors(SIZES[what])

    def round_trip():
        uploads = [v.tobytes() for v in vectors]
        total = sum(np.frombuffer(u) for u in uploads).tobytes()
        return [np.frombuffer(total) for _ in range(CLIENTS)]

    out = benchmark.pedantic(round_trip, rounds=5, iterations=1)
    np.testing.assert_array_equal(out[0], vectors[0] + vectors[1] + vectors[2])
    _add(
        registry,
        benchmark,
        "numpy plaintext",
        what,
        8 * SIZES[what],
        8 * SIZES[what],
        "unprotected",
    )

"""Encrypted two-layer head y = W2 (W1 x + b1)^2 + b2 (768 -> 64 -> 3): hevit's MlpPlan in both
layouts against TenSEAL (ckks_vector: mm, square, mm) and numpy, in the same run.

End to end per batch: client encrypt + serialize, server deserialize + apply + serialize, client
deserialize + decrypt; every run checks the logits against numpy (same argmax, error within the
derived tolerance).
"""

from __future__ import annotations

import numpy as np
import pytest

from hevit import he

from .conftest import IN_DIM, OUT_DIM, Row, make_features

HIDDEN = 64
CASES = [("sample", 1), ("batch", 4096)]


def make_mlp(seed: int = 3):
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((HIDDEN, IN_DIM))
    w1 *= 2.0 / np.linalg.norm(w1, axis=1, keepdims=True)
    return (
        w1,
        0.1 * rng.standard_normal(HIDDEN),
        0.1 * rng.standard_normal((OUT_DIM, HIDDEN)),
        np.zeros(OUT_DIM),
    )


def unit_rows(batch: int) -> np.ndarray:
    x = make_features(batch)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def mlp_setups():
    head = make_mlp()
    out = {}
    for layout in ("batch", "sample"):
        params = he.CkksParams.preset("mlp", max_norm=1.0)
        evk = he.MlpPlan.evaluation_keys(
            params, in_dim=IN_DIM, hidden=HIDDEN, out_dim=OUT_DIM, layout=layout
        )
        sk = he.SecretContext.generate(params, **evk.as_kwargs())
        pub = he.PublicContext.from_bytes(sk.public_context().to_bytes())
        out[layout] = (sk, pub, he.MlpPlan.compile(pub, *head, layout=layout))
    return head, out


@pytest.mark.parametrize("layout, batch", CASES)
def test_hevit_mlp_end_to_end(benchmark, mlp_setups, registry, layout, batch):
    head, setups = mlp_setups
    sk, pub, plan = setups[layout]
    x = unit_rows(batch)
    sizes = {}

    def run():
        wire = sk.encrypt(x, layout=layout).to_bytes()
        reply = plan.apply(he.EncryptedBatch.from_bytes(wire, pub)).to_bytes()
        sizes.update(up=len(wire), down=len(reply))
        return sk.decrypt(he.EncryptedBatch.from_bytes(reply, pub))

    y = benchmark.pedantic(run, rounds=3 if batch == 1 else 1, iterations=1)
    ref = he.reference.mlp(x, *head)
    assert np.array_equal(y.argmax(axis=1), ref.argmax(axis=1))
    assert np.abs(y - ref).max() <= he.reference.mlp_tolerance(
        sk.params, head[0], head[1], head[2], x, plan
    )
    benchmark.extra_info.update(
        layout=layout,
        preset="mlp",
        batch=batch,
        hidden=HIDDEN,
        key_switches=plan.key_switches,
        up_bytes_per_image=sizes["up"] / batch,
        down_bytes_per_image=sizes["down"] / batch,
        max_abs_error=float(np.abs(y - ref).max()),
    )
    registry.add(
        Row(f"hevit mlp {layout}", "mlp", batch, benchmark, extra=dict(benchmark.extra_info))
    )


def test_tenseal_mlp_single_image(benchmark, registry):
    ts = pytest.importorskip(
        "tenseal", reason="TenSEAL is the peer of this benchmark (pip install 'hevit[bench]')"
    )
    w1, b1, w2, b2 = make_mlp()
    x = unit_rows(1)
    # mm, square, mm take three levels: TenSEAL needs N = 16384 for [60, 40, 40, 40, 60] (240 bits)
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, 16384, coeff_mod_bit_sizes=[60, 40, 40, 40, 60])
    ctx.global_scale = 2**40
    ctx.generate_galois_keys()
    server = ts.context_from(ctx.serialize(save_secret_key=False))

    def run():
        wire = ts.ckks_vector(ctx, x[0].tolist()).serialize()
        enc = ts.ckks_vector_from(server, wire)
        out = enc.mm(w1.T.tolist()).add(b1.tolist()).square().mm(w2.T.tolist()).add(b2.tolist())
        return np.array(ts.ckks_vector_from(ctx, out.serialize()).decrypt())

    y = benchmark.pedantic(run, rounds=1, iterations=1)
    ref = he.reference.mlp(x, w1, b1, w2, b2)[0]
    assert np.array_equal(y.argmax(), ref.argmax())
    benchmark.extra_info.update(
        peer="tenseal ckks_vector mm/square/mm", batch=1, max_abs_error=float(np.abs(y - ref).max())
    )
    registry.add(
        Row("tenseal mlp ckks_vector", "mlp", 1, benchmark, extra=dict(benchmark.extra_info))
    )


@pytest.mark.parametrize("batch", [1, 4096])
def test_numpy_mlp(benchmark, registry, batch):
    head = make_mlp()
    x = unit_rows(batch)
    benchmark(lambda: he.reference.mlp(x, *head))
    registry.add(Row("numpy mlp (plaintext)", "mlp", batch, benchmark))

"""The encrypted two-layer head against the numpy reference, its keys and its error paths."""

import numpy as np
import pytest

from hevit import he
from hevit.errors import (
    LayoutError,
    MissingKeyError,
    ParameterError,
    SecretKeyRefusedError,
    ValueRangeError,
)
from tests.helpers import rows_with_norm


@pytest.fixture(scope="module")
def mlp_keys():
    """One key set per (layout, shape) on the 'mlp' preset (unit-norm rows), cached."""
    cache = {}

    def get(layout, in_dim=None, hidden=None, out_dim=None):
        key = (layout, in_dim, hidden, out_dim) if layout == "sample" else (layout,)
        if key not in cache:
            params = he.CkksParams.preset("mlp", max_norm=1.0)
            evk = he.MlpPlan.evaluation_keys(
                params, in_dim=in_dim, hidden=hidden, out_dim=out_dim, layout=layout
            )
            cache[key] = he.SecretContext.generate(params, **evk.as_kwargs())
        return cache[key]

    return get


def random_head(rng, in_dim, hidden, out_dim):
    """A head like the trained ones: unit-norm W1 rows scaled by 2, small W2, nonzero biases."""
    w1 = rng.standard_normal((hidden, in_dim))
    w1 *= 2.0 / np.linalg.norm(w1, axis=1, keepdims=True)
    return (
        w1,
        0.3 * rng.standard_normal(hidden),
        rng.standard_normal((out_dim, hidden)),
        rng.standard_normal(out_dim),
    )


def check(sk, layout, head, x):
    pub = he.PublicContext.from_bytes(sk.public_context().to_bytes())
    plan = he.MlpPlan.compile(pub, *head, layout=layout)
    enc = he.EncryptedBatch.from_bytes(sk.encrypt(x, layout=layout).to_bytes(), pub)
    out = he.EncryptedBatch.from_bytes(plan.apply(enc).to_bytes(), pub)
    assert out.shape == (x.shape[0], head[2].shape[0]) and out.layout == layout
    y = sk.decrypt(out)
    ref = he.reference.mlp(x, *head)
    tol = he.reference.mlp_tolerance(sk.params, head[0], head[1], head[2], x, plan)
    err = float(np.abs(y - ref).max())
    assert err <= tol, f"max error {err:.3g} above derived tolerance {tol:.3g}"
    # the derived bound must be tight enough to mean something for logits of order one
    assert tol < 1e-4 * max(1.0, float(np.abs(ref).max()))
    return plan, err


@pytest.mark.parametrize(
    "in_dim, hidden, out_dim", [(768, 64, 3), (192, 32, 5), (5, 3, 2), (1000, 16, 10)]
)
@pytest.mark.parametrize("layout", ["batch", "sample"])
def test_mlp_plan_matches_numpy(rng, mlp_keys, layout, in_dim, hidden, out_dim):
    head = random_head(rng, in_dim, hidden, out_dim)
    x = rows_with_norm(rng, 5, in_dim, 1.0)
    plan, _ = check(mlp_keys(layout, in_dim, hidden, out_dim), layout, head, x)
    assert plan.shape == (out_dim, hidden, in_dim)
    if layout == "batch":
        assert plan.rotation_steps == ()


def test_batch_layout_uses_both_halves_of_every_slot(rng, mlp_keys):
    """Rows past N/2 = 4096 sit in the imaginary parts: the square stage must keep the halves
    apart (a narrow head keeps the 4,100-row batch cheap)."""
    head = random_head(rng, 8, 4, 3)
    x = rows_with_norm(rng, 4100, 8, 1.0)
    check(mlp_keys("batch"), "batch", head, x)


def test_sample_layout_with_an_odd_row_count(rng, mlp_keys):
    head = random_head(rng, 192, 32, 5)
    check(mlp_keys("sample", 192, 32, 5), "sample", head, rows_with_norm(rng, 3, 192, 1.0))


def test_zero_weights(rng, mlp_keys):
    w1, b1, w2, b2 = random_head(rng, 192, 32, 5)
    w1[:16] = 0.0
    w2[:, 8:] = 0.0
    check(mlp_keys("batch"), "batch", (w1, b1, w2, b2), rows_with_norm(rng, 4, 192, 1.0))


def test_evaluation_keys_and_refusals(rng, mlp_keys):
    params = he.CkksParams.preset("mlp", max_norm=1.0)
    evk = he.MlpPlan.evaluation_keys(params, in_dim=768, hidden=64, out_dim=3, layout="sample")
    assert evk.conjugation and evk.relinearization and 64 in evk.rotation_steps
    head = random_head(rng, 768, 64, 3)
    # a key set without relinearisation or conjugation keys
    plain = he.SecretContext.generate(params)
    with pytest.raises(MissingKeyError, match="relinearisation"):
        he.MlpPlan.compile(plain.public_context(), *head, layout="batch")
    no_conj = he.SecretContext.generate(params, relinearization=True)
    with pytest.raises(MissingKeyError, match="conjugation"):
        he.MlpPlan.compile(no_conj.public_context(), *head, layout="batch")
    batch_keys = mlp_keys("batch")
    with pytest.raises(MissingKeyError, match="rotation step"):
        he.MlpPlan.compile(batch_keys.public_context(), *head, layout="sample")
    with pytest.raises(SecretKeyRefusedError):
        he.MlpPlan.compile(batch_keys, *head, layout="batch")
    # two data primes leave no level for the square stage
    shallow = he.CkksParams.preset("precise", max_norm=1.0)
    shallow_keys = he.SecretContext.generate(shallow, conjugation=True, relinearization=True)
    with pytest.raises(ParameterError, match="three data primes"):
        he.MlpPlan.compile(shallow_keys.public_context(), *head, layout="batch")
    with pytest.raises(LayoutError, match="w2 must have shape"):
        he.MlpPlan.compile(
            batch_keys.public_context(), head[0], head[1], head[2][:, :5], head[3], layout="batch"
        )
    bad = head[0].copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueRangeError):
        he.MlpPlan.compile(
            batch_keys.public_context(), bad, head[1], head[2], head[3], layout="batch"
        )


def test_hidden_units_that_cannot_fit_are_refused(rng, mlp_keys):
    w1, b1, w2, b2 = random_head(rng, 16, 4, 2)
    for layout in ("batch", "sample"):
        keys = mlp_keys(layout, 16, 4, 2)
        with pytest.raises(ParameterError, match=r"does not fit|do not fit"):
            he.MlpPlan.compile(keys.public_context(), w1 * 2.0**24, b1, w2, b2, layout=layout)


def test_evaluation_keys_survive_serialization():
    params = he.CkksParams.preset("mlp", max_norm=1.0)
    sk = he.SecretContext.generate(
        params, rotation_steps=(1, 4), conjugation=True, relinearization=True
    )
    pub = he.PublicContext.from_bytes(sk.public_context().to_bytes())
    assert pub.conjugation and pub.relinearization and pub.rotation_steps == (1, 4)
    again = he.SecretContext.from_bytes(sk.to_bytes())
    assert again.public_context().conjugation and again.public_context().relinearization
    plain = he.PublicContext.from_bytes(
        he.SecretContext.generate(params).public_context().to_bytes()
    )
    assert not plain.conjugation and not plain.relinearization


@pytest.mark.parametrize("layout", ["batch", "sample"])
def test_mlp_plan_on_a_deeper_parameter_set(rng, layout):
    """Beyond the 'mlp' preset: N = 16384 with 50-bit primes and a 2^50 scale (the tolerance is
    derived from these parameters, not from the preset's)."""
    params = he.CkksParams(16384, (60, 50, 50, 50, 60), 50, max_norm=1.0)
    evk = he.MlpPlan.evaluation_keys(params, in_dim=40, hidden=8, out_dim=4, layout=layout)
    sk = he.SecretContext.generate(params, **evk.as_kwargs())
    check(sk, layout, random_head(rng, 40, 8, 4), rows_with_norm(rng, 3, 40, 1.0))

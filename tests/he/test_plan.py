import threading

import numpy as np
import pytest

from hevit import he
from hevit.errors import (
    ContextMismatchError,
    LayoutError,
    MissingKeyError,
    ParameterError,
    SecretKeyRefusedError,
    ValueRangeError,
)
from tests.helpers import rows_with_norm

SHAPES = [(c, d) for c in (1, 2, 3, 10) for d in (1, 5, 768, 1000)]
LAYOUT_PRESET = {"batch": "throughput", "sample": "single-row"}


def random_layer(rng, out_dim, in_dim, *, zeros=True):
    """Weights of a typical head (rows of norm ~1) with zero rows, columns and entries mixed in."""
    w = rng.standard_normal((out_dim, in_dim)) / np.sqrt(in_dim)
    b = rng.standard_normal(out_dim)
    if zeros:
        w[rng.random(w.shape) < 0.1] = 0.0
        if in_dim > 1:
            w[:, rng.integers(in_dim)] = 0.0
        if out_dim > 1:
            w[rng.integers(out_dim)] = 0.0
    return w, b


def context_for(keys, preset, layout, in_dim, out_dim):
    params = he.CkksParams.preset(preset)
    steps = he.LinearPlan.required_rotation_steps(
        params, in_dim=in_dim, out_dim=out_dim, layout=layout
    )
    return keys.get(preset, steps)


def check_plan(sk, layout, w, b, x, *, threads=None):
    pub = he.PublicContext.from_bytes(sk.public_context().to_bytes())
    plan = he.LinearPlan.compile(pub, w, b, layout=layout)
    enc = he.EncryptedBatch.from_bytes(sk.encrypt(x, layout=layout).to_bytes(), pub)
    out = plan.apply(enc, threads=threads)
    assert out.shape == (x.shape[0], w.shape[0]) and out.layout == layout
    out = he.EncryptedBatch.from_bytes(out.to_bytes(), pub)
    y = sk.decrypt(out)
    ref = he.reference.linear(x, w, b)
    tol = he.reference.linear_tolerance(sk.params, w, x, plan, bias=b)
    err = float(np.abs(y - ref).max())
    assert err <= tol, f"max error {err:.3g} above derived tolerance {tol:.3g}"
    return plan, err


@pytest.mark.parametrize("out_dim, in_dim", SHAPES)
@pytest.mark.parametrize("layout", ["batch", "sample"])
def test_plan_matches_numpy_small_batches(keys, rng, layout, out_dim, in_dim):
    if layout == "sample" and in_dim == 1000 and out_dim == 10:
        pass  # D'=1024 <= 2048 slots: still fits
    sk = context_for(keys, LAYOUT_PRESET[layout], layout, in_dim, out_dim)
    w, b = random_layer(rng, out_dim, in_dim)
    for rows in (1, 7):
        x = rows_with_norm(rng, rows, in_dim, sk.params.max_norm)
        check_plan(sk, layout, w, b, x)


@pytest.mark.parametrize("out_dim, in_dim", [(1, 5), (3, 768), (10, 1000)])
@pytest.mark.parametrize("layout", ["batch", "sample"])
def test_plan_matches_numpy_full_batch(keys, rng, layout, out_dim, in_dim):
    sk = context_for(keys, LAYOUT_PRESET[layout], layout, in_dim, out_dim)
    rows = sk.params.poly_modulus_degree if layout == "batch" else 64
    w, b = random_layer(rng, out_dim, in_dim)
    x = rows_with_norm(rng, rows, in_dim, sk.params.max_norm)
    check_plan(sk, layout, w, b, x)


@pytest.mark.parametrize("layout", ["batch", "sample"])
def test_precise_preset_reaches_1e_minus_6(keys, rng, layout):
    sk = context_for(keys, "precise", layout, 768, 3)
    w, b = random_layer(rng, 3, 768)
    x = rows_with_norm(rng, 16, 768, 40.0)
    _, err = check_plan(sk, layout, w, b, x)
    assert err <= 1e-6


@pytest.mark.parametrize("layout", ["batch", "sample"])
def test_all_zero_weights_give_the_bias(keys, rng, layout):
    sk = context_for(keys, LAYOUT_PRESET[layout], layout, 768, 3)
    w = np.zeros((3, 768))
    b = rng.standard_normal(3)
    x = rows_with_norm(rng, 5, 768, 30.0)
    plan = he.LinearPlan.compile(sk.public_context(), w, b, layout=layout)
    y = sk.decrypt(plan.apply(sk.encrypt(x, layout=layout)))
    np.testing.assert_allclose(
        y,
        np.tile(b, (5, 1)),
        atol=he.reference.linear_tolerance(sk.params, w, x, plan, bias=b),
        rtol=0,
    )


def test_sample_plan_key_switch_budget():
    params = he.CkksParams.preset("single-row")
    for out_dim in (1, 2, 3, 10):
        sk_steps = he.LinearPlan.required_rotation_steps(
            params, in_dim=768, out_dim=out_dim, layout="sample"
        )
        sk = he.SecretContext.generate(params, rotation_steps=sk_steps)
        plan = he.LinearPlan.compile(
            sk.public_context(), np.ones((out_dim, 768)) * 1e-3, layout="sample"
        )
        assert plan.key_switches <= 10 + out_dim - 1  # ceil(log2 768) + C - 1
        assert set(plan.rotation_steps) == set(sk_steps)
    assert (
        he.LinearPlan.required_rotation_steps(params, in_dim=768, out_dim=3, layout="batch") == ()
    )


def test_batch_plan_needs_no_evaluation_keys(keys, rng):
    sk = keys.get("throughput")
    assert sk.public_context().rotation_steps == ()
    w, b = random_layer(rng, 3, 768)
    plan = he.LinearPlan.compile(sk.public_context(), w, b, layout="batch")
    assert plan.rotation_steps == () and plan.key_switches == 0


def test_missing_galois_key_is_named(keys):
    params = he.CkksParams.preset("single-row")
    steps = he.LinearPlan.required_rotation_steps(params, in_dim=768, out_dim=3, layout="sample")
    sk = he.SecretContext.generate(params, rotation_steps=steps[:-1])
    with pytest.raises(MissingKeyError, match=f"rotation step {steps[-1]} has no Galois key"):
        he.LinearPlan.compile(sk.public_context(), np.ones((3, 768)), layout="sample")


def test_apply_refuses_wrong_inputs(keys, rng):
    sk = context_for(keys, "single-row", "sample", 768, 3)
    pub = sk.public_context()
    w, b = random_layer(rng, 3, 768)
    plan = he.LinearPlan.compile(pub, w, b, layout="sample")
    x = rows_with_norm(rng, 2, 768, 10.0)
    with pytest.raises(
        LayoutError, match="compiled for the 'sample' layout but the batch is in the 'batch'"
    ):
        plan.apply(sk.encrypt(x, layout="batch"))
    with pytest.raises(LayoutError, match="plan expects rows of 768 values, the batch has 767"):
        plan.apply(sk.encrypt(x[:, :767], layout="sample"))
    out = plan.apply(sk.encrypt(x, layout="sample"))
    with pytest.raises(LayoutError, match="plan expects rows of 768"):
        plan.apply(out)
    other = he.SecretContext.generate(sk.params, rotation_steps=pub.rotation_steps)
    with pytest.raises(ContextMismatchError, match="another key set"):
        plan.apply(other.encrypt(x, layout="sample"))


def test_sum_of_clients_needs_a_larger_input_bound(keys, rng):
    sk = keys.get("throughput")
    w, b = random_layer(rng, 3, 64)
    xs = [rows_with_norm(rng, 8, 64, 30.0) for _ in range(3)]
    total = he.EncryptedBatch.sum([sk.encrypt(x, layout="batch") for x in xs])
    plan = he.LinearPlan.compile(sk.public_context(), w, b, layout="batch")
    with pytest.raises(ValueRangeError, match="compile the plan with input_norm_bound >= 192"):
        plan.apply(total)
    plan3 = he.LinearPlan.compile(
        sk.public_context(), w, b, layout="batch", input_norm_bound=3 * 64.0
    )
    y = sk.decrypt(plan3.apply(total))
    x = sum(xs)
    tol = he.reference.linear_tolerance(sk.params, w, x, plan3, bias=b) * np.sqrt(3)
    assert np.abs(y - he.reference.linear(x, w, b)).max() <= tol


def test_compile_refuses_bad_layers(keys):
    pub = keys.get("throughput").public_context()
    with pytest.raises(ValueRangeError, match="non-finite value at \\(0, 1\\)"):
        he.LinearPlan.compile(pub, np.array([[0.0, np.nan]]), layout="batch")
    with pytest.raises(LayoutError, match=r"bias must have shape \(2,\)"):
        he.LinearPlan.compile(pub, np.ones((2, 3)), np.ones(3), layout="batch")
    with pytest.raises(LayoutError, match="must be a 2-D array"):
        he.LinearPlan.compile(pub, np.ones(3), layout="batch")
    with pytest.raises(ParameterError, match="does not fit the modulus"):
        he.LinearPlan.compile(pub, np.full((2, 768), 1e6), layout="batch")
    with pytest.raises(LayoutError, match="needs 4096 slots in the sample layout"):
        he.LinearPlan.required_rotation_steps(
            he.CkksParams.preset("single-row"), in_dim=3000, out_dim=2, layout="sample"
        )


@pytest.mark.parametrize("layout", ["batch", "sample"])
def test_plan_is_reusable_across_threads(keys, rng, layout):
    sk = context_for(keys, LAYOUT_PRESET[layout], layout, 768, 3)
    w, b = random_layer(rng, 3, 768)
    plan = he.LinearPlan.compile(sk.public_context(), w, b, layout=layout)
    xs = [rows_with_norm(rng, 4, 768, 30.0) for _ in range(4)]
    encs = [sk.encrypt(x, layout=layout) for x in xs]
    results = [None] * 4

    def work(i):
        results[i] = sk.decrypt(plan.apply(encs[i], threads=1))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for x, y in zip(xs, results, strict=True):
        tol = he.reference.linear_tolerance(sk.params, w, x, plan, bias=b)
        assert np.abs(y - he.reference.linear(x, w, b)).max() <= tol


def test_compile_refuses_a_secret_context(keys):
    sk = keys.get("throughput")
    with pytest.raises(
        SecretKeyRefusedError, match=r"LinearPlan\.compile takes the server's PublicContext"
    ):
        he.LinearPlan.compile(sk, np.ones((1, 3)), layout="batch")


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_input_norm_bounds_raise_value_range_errors(keys, bad):
    pub = keys.get("throughput").public_context()
    with pytest.raises(ValueRangeError, match="input_norm_bound must be a positive finite number"):
        he.LinearPlan.compile(pub, np.ones((2, 3)), layout="batch", input_norm_bound=bad)
    mlp = he.SecretContext.generate(
        he.CkksParams.preset("mlp", max_norm=1.0), conjugation=True, relinearization=True
    )
    with pytest.raises(ValueRangeError, match="input_norm_bound must be a positive finite number"):
        he.MlpPlan.compile(
            mlp.public_context(),
            np.ones((4, 8)),
            np.zeros(4),
            np.ones((2, 4)),
            np.zeros(2),
            layout="batch",
            input_norm_bound=bad,
        )


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_the_core_refuses_bad_input_norm_bounds_instead_of_falling_back(keys, bad):
    """The C++ core took any bound <= 0 (and NaN) as 'use max_norm': only 0 means that now."""
    from hevit import _core

    pub = keys.get("throughput").public_context()
    with pytest.raises(ValueRangeError, match="input_norm_bound must be a positive finite number"):
        _core.LinearPlan.compile(pub._core, np.ones((2, 3)), None, "batch", bad)
    default = _core.LinearPlan.compile(pub._core, np.ones((2, 3)), None, "batch", 0.0)
    assert default.input_norm_bound == pub.params.max_norm


def test_reference_primes_are_the_contexts():
    """reference.coeff_modulus_primes re-derives SEAL's primes from the parameters alone (the
    weight-scale formula below builds on it); the context holds the same ones."""
    for name in he.PRESETS:
        params = he.CkksParams.preset(name)
        pub = he.SecretContext.generate(params).public_context()
        assert he.reference.coeff_modulus_primes(params) == tuple(pub._core.primes), name


@pytest.mark.parametrize(
    "layout, norm",
    [(lay, n) for lay in ("batch", "coefficient") for n in (1e-3, 0.3, 1.0, 3.0, 30.0, 1e3)]
    + [("sample", n) for n in (1e-3, 0.3, 1.0, 3.0)],
)
def test_plan_weight_scale_is_the_one_derived_from_public_parameters(keys, rng, layout, norm):
    """The weight scale linear_tolerance uses is re-derived from the parameters, the weights and
    the norm bound (reference.expected_weight_scale_bits); here the plan's own value is checked
    against it, separately, over heads whose outputs span many bit sizes."""
    preset = {"batch": "throughput", "sample": "single-row", "coefficient": "latency"}[layout]
    in_dim, out_dim = 64, 3
    sk = context_for(keys, preset, layout, in_dim, out_dim)
    w, b = random_layer(rng, out_dim, in_dim)
    w *= norm
    compared = 0
    for bound in (None, 3 * sk.params.max_norm):
        try:
            plan = he.LinearPlan.compile(
                sk.public_context(), w, b, layout=layout, input_norm_bound=bound
            )
        except ParameterError:
            continue  # the largest heads do not fit some presets: nothing to compare
        expected = he.reference.expected_weight_scale_bits(
            sk.params, w, layout, bias=b, input_norm_bound=bound
        )
        assert plan.weight_scale_bits == expected, (layout, norm, bound)
        compared += 1
    assert compared, "no head of this size compiled: the comparison would be empty"

"""The coefficient layout: rows in polynomial coefficients, a linear layer as one plaintext
product with no rotation and no key; against numpy, with clear errors where it cannot apply."""

import struct

import numpy as np
import pytest

from hevit import he
from hevit.errors import (
    HevitError,
    LayoutError,
    ParameterError,
    SerializationError,
    ValueRangeError,
)
from tests.helpers import rows_with_norm

from .test_plan import random_layer

PRESETS = ["throughput", "latency", "latency-precise"]  # one data prime each


@pytest.fixture(scope="module")
def coefficient_keys():
    return {p: he.SecretContext.generate(he.CkksParams.preset(p, max_norm=1.0)) for p in PRESETS}


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("in_dim", [1, 5, 192, 768, 1000])
@pytest.mark.parametrize("out_dim", [1, 2, 3, 5, 10])
def test_coefficient_plan_matches_numpy(coefficient_keys, rng, preset, out_dim, in_dim):
    sk = coefficient_keys[preset]
    pub = he.PublicContext.from_bytes(sk.public_context().to_bytes())
    w, b = random_layer(rng, out_dim, in_dim)
    n = sk.params.poly_modulus_degree
    if out_dim * in_dim > n:
        with pytest.raises(LayoutError, match=r"out_dim \* in_dim = \d+ <= N = 4096"):
            he.LinearPlan.compile(pub, w, b, layout="coefficient")
        return
    plan = he.LinearPlan.compile(pub, w, b, layout="coefficient")
    assert plan.rotation_steps == () and plan.key_switches == 0
    x = rows_with_norm(rng, 3, in_dim, 1.0)
    enc = he.EncryptedBatch.from_bytes(sk.encrypt(x, layout="coefficient").to_bytes(), pub)
    out = he.EncryptedBatch.from_bytes(plan.apply(enc).to_bytes(), pub)
    assert out.shape == (3, out_dim) and out.layout == "coefficient"
    y = sk.decrypt(out)
    err = float(np.abs(y - he.reference.linear(x, w, b)).max())
    tol = he.reference.linear_tolerance(sk.params, w, x, plan, bias=b)
    assert err <= tol, f"max error {err:.3g} above derived tolerance {tol:.3g}"
    assert tol < 1e-4


@pytest.mark.parametrize("preset", PRESETS)
def test_coefficient_round_trips_secret_and_public_key(coefficient_keys, rng, preset):
    sk = coefficient_keys[preset]
    tol_secret = he.reference.round_trip_tolerance(sk.params, "coefficient")
    x = rows_with_norm(rng, 5, 768, 1.0)
    enc = sk.encrypt(x, layout="coefficient")
    assert enc.seeded and enc.shape == (5, 768)
    assert np.abs(sk.decrypt(enc) - x).max() <= tol_secret
    # public-key encryption adds e0 + e1 s + u e: std sigma sqrt(1 + 4N/3) per coefficient
    n = sk.params.poly_modulus_degree
    tol_public = tol_secret * np.sqrt(1 + 4 * n / 3)
    assert (
        np.abs(sk.decrypt(sk.public_context().encrypt(x, layout="coefficient")) - x).max()
        <= tol_public
    )
    # sums of client batches stay in the layout
    total = he.EncryptedBatch.sum([enc, enc, enc])
    assert np.abs(sk.decrypt(total) - 3 * x).max() <= 3 * tol_secret


def test_zero_weights_give_the_bias(coefficient_keys, rng):
    sk = coefficient_keys["throughput"]
    b = rng.standard_normal(3)
    plan = he.LinearPlan.compile(sk.public_context(), np.zeros((3, 768)), b, layout="coefficient")
    x = rows_with_norm(rng, 2, 768, 1.0)
    y = sk.decrypt(plan.apply(sk.encrypt(x, layout="coefficient")))
    tol = he.reference.linear_tolerance(sk.params, np.zeros((3, 768)), x, plan, bias=b)
    np.testing.assert_allclose(y, np.tile(b, (2, 1)), atol=tol, rtol=0)


def test_coefficient_layout_refusals(coefficient_keys, rng):
    multi = he.SecretContext.generate(he.CkksParams.preset("single-row"))
    x = rows_with_norm(rng, 1, 768, 1.0)
    with pytest.raises(LayoutError, match="one data prime"):
        multi.encrypt(x, layout="coefficient")
    with pytest.raises(LayoutError, match="one data prime"):
        he.LinearPlan.compile(multi.public_context(), np.ones((3, 768)), layout="coefficient")
    sk = coefficient_keys["throughput"]
    w, b = random_layer(rng, 3, 768)
    plan = he.LinearPlan.compile(sk.public_context(), w, b, layout="coefficient")
    out = plan.apply(sk.encrypt(x, layout="coefficient"))
    with pytest.raises(LayoutError):  # plan outputs (period 768, 3 columns) are not plan inputs
        plan.apply(out)
    with pytest.raises(LayoutError, match="plan was compiled for the 'coefficient' layout"):
        plan.apply(sk.encrypt(x, layout="batch"))
    mlp_params = he.CkksParams.preset("mlp", max_norm=1.0)
    mlp_keys = he.SecretContext.generate(mlp_params, conjugation=True, relinearization=True)
    with pytest.raises(LayoutError, match="serves linear heads"):
        he.MlpPlan.compile(
            mlp_keys.public_context(),
            np.ones((4, 8)),
            np.zeros(4),
            np.ones((2, 4)),
            np.zeros(2),
            layout="coefficient",
        )


def _with_checksum(blob: bytes) -> bytes:
    from .test_wire_fuzz import with_checksum

    return with_checksum(blob)


def test_hostile_response_bytes_are_refused(coefficient_keys, rng):
    """Truncated replies, a wrong layout code, a period that would read past N, and a reply
    under another key set: clear errors, never a wrong answer."""
    sk = coefficient_keys["throughput"]
    pub = he.PublicContext.from_bytes(sk.public_context().to_bytes())
    w, b = random_layer(rng, 3, 768)
    reply = (
        he.LinearPlan.compile(pub, w, b, layout="coefficient")
        .apply(sk.encrypt(rows_with_norm(rng, 1, 768, 1.0), layout="coefficient"))
        .to_bytes()
    )
    for cut in (1, 63, 64, 100, len(reply) - 1):
        with pytest.raises(SerializationError):
            he.EncryptedBatch.from_bytes(reply[:cut], pub)
    header = 64
    # payload: layout, seeded, 2 reserved (u8 each), prime count (u32), rows, cols, period (u64 each)
    layout_at, period_at = header, header + 4 + 4 + 8 + 8
    for offset, value in ((layout_at, 9), (period_at, 4096), (period_at, 0)):
        tampered = bytearray(reply)
        tampered[offset : offset + (1 if offset == layout_at else 8)] = (
            bytes([value]) if offset == layout_at else int(value).to_bytes(8, "little")
        )
        with pytest.raises(SerializationError):
            he.EncryptedBatch.from_bytes(_with_checksum(bytes(tampered)), pub)
    other = he.SecretContext.generate(he.CkksParams.preset("throughput", max_norm=1.0))
    with pytest.raises(HevitError):
        other.decrypt(he.EncryptedBatch.from_bytes(reply, other.public_context()))


def test_hostile_compact_reply_bytes_are_refused(coefficient_keys, rng):
    """The compact reply's own loader: truncation, a wrong kind, impossible bits or shapes,
    another key set, and an EncryptedBatch where a CompactBatch is expected."""
    sk = coefficient_keys["latency"]
    pub = he.PublicContext.from_bytes(sk.public_context().to_bytes())
    w, b = random_layer(rng, 3, 768)
    full = he.LinearPlan.compile(pub, w, b, layout="coefficient").apply(
        sk.encrypt(rows_with_norm(rng, 2, 768, 1.0), layout="coefficient")
    )
    compact = full.compact().to_bytes()
    np.testing.assert_allclose(
        sk.decrypt(he.CompactBatch.from_bytes(compact, pub)),
        sk.decrypt(full),
        atol=he.reference.compact_tolerance(sk.params),
        rtol=0,
    )
    for cut in (10, 64, 100, len(compact) - 1):
        with pytest.raises(SerializationError):
            he.CompactBatch.from_bytes(compact[:cut], pub)
    with pytest.raises(SerializationError, match="wrong object kind"):
        he.CompactBatch.from_bytes(full.to_bytes(), pub)
    with pytest.raises(SerializationError, match="wrong object kind"):
        he.EncryptedBatch.from_bytes(compact, pub)
    header = 64
    # payload: rows, cols, period (u64 each), bits (u32), unit, norm bound (f64 each)
    for offset, size, value in (
        (header, 8, 0),
        (header, 8, 2**40),
        (header + 8, 8, 10**6),
        (header + 16, 8, 0),
        (header + 24, 4, 3),
        (header + 24, 4, 63),
    ):
        tampered = bytearray(compact)
        tampered[offset : offset + size] = int(value).to_bytes(size, "little")
        with pytest.raises(SerializationError):
            he.CompactBatch.from_bytes(_with_checksum(bytes(tampered)), pub)
    other = he.SecretContext.generate(he.CkksParams.preset("latency", max_norm=1.0))
    with pytest.raises(HevitError):
        he.CompactBatch.from_bytes(compact, other.public_context())
    with pytest.raises(LayoutError, match="only coefficient-layout"):
        sk.encrypt(rows_with_norm(rng, 2, 8, 1.0), layout="batch").compact()


def test_compact_reply_rounds_every_coefficient_exactly(coefficient_keys, rng):
    """The switch to 2^bits is round(c 2^bits / q) mod 2^bits for every sent coefficient, checked
    with Python integers against the reply's ciphertext in coefficient form."""
    from hevit._core import inspection

    sk = coefficient_keys["latency"]
    pub = sk.public_context()
    w, b = random_layer(rng, 3, 768)
    plan = he.LinearPlan.compile(pub, w, b, layout="coefficient")
    out = plan.apply(sk.encrypt(rows_with_norm(rng, 2, 768, 1.0), layout="coefficient"))
    blob = out.compact().to_bytes()
    rows, cols, period, bits = (int(v) for v in struct.unpack_from("<QQQI", blob, 64))
    n, q = sk.params.poly_modulus_degree, inspection.first_prime(pub._core)
    packed = int.from_bytes(
        blob[64 + 44 :], "little"
    )  # after rows, cols, period, bits, unit, bound
    c0_count = int(rows * cols)
    c0_bytes = (c0_count * bits + 7) // 8
    mask = (1 << bits) - 1

    def unpacked(stream: int, count: int) -> list[int]:
        return [(stream >> (bits * i)) & mask for i in range(count)]

    c0 = unpacked(packed & ((1 << (8 * c0_bytes)) - 1), c0_count)
    c1 = unpacked(packed >> (8 * c0_bytes), rows * n)

    def switched(c: int) -> int:
        return ((c << bits) + q // 2) // q & mask

    for m in range(rows):
        coeffs = [int(v) for v in inspection.ciphertext_coefficients(out._core, m)]
        at = [c * period + period - 1 for c in range(cols)]
        assert c0[m * cols : (m + 1) * cols] == [switched(coeffs[t]) for t in at]
        assert c1[m * n : (m + 1) * n] == [switched(c) for c in coeffs[n:]]


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize(
    ("out_dim", "in_dim"), [(1, 1), (1, 768), (3, 768), (5, 192), (10, 5), (16, 256), (17, 5)]
)
def test_apply_compact_is_apply_then_compact_bit_for_bit(
    coefficient_keys, rng, preset, out_dim, in_dim
):
    """The direct read of each output from the NTT-domain product (rows precomputed at compile,
    up to 16 outputs; more take apply + compact) gives the same reply bytes."""
    sk = coefficient_keys[preset]
    pub = sk.public_context()
    w, b = random_layer(rng, out_dim, in_dim)
    plans = [he.LinearPlan.compile(pub, w, b, layout="coefficient")]
    plans.append(he.LinearPlan.compile(pub, np.zeros_like(w), None, layout="coefficient"))
    enc = sk.encrypt(rows_with_norm(rng, 3, in_dim, 1.0), layout="coefficient")
    for plan in plans:
        direct = plan.apply_compact(enc)
        assert direct.to_bytes() == plan.apply(enc).compact().to_bytes()


def test_apply_compact_refuses_other_layouts(rng):
    sk = he.SecretContext.generate(he.CkksParams.preset("throughput", max_norm=1.0))
    w, b = random_layer(rng, 3, 16)
    plan = he.LinearPlan.compile(sk.public_context(), w, b, layout="batch")
    with pytest.raises(LayoutError, match="coefficient layout only"):
        plan.apply_compact(sk.encrypt(rows_with_norm(rng, 2, 16, 1.0), layout="batch"))


def _one_large_row_head(rng, in_dim=768, large=1e5, small=0.1):
    """Row 0 of norm ``large``, the others of norm ``small`` (the head of issue 26)."""
    w = rng.standard_normal((3, in_dim))
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    w[0] *= large
    w[1:] *= small
    return w


def test_one_large_row_buries_the_other_outputs_and_compile_refuses(rng):
    """Regression: every coefficient-layout output carries noise that scales with ||W||_F of the
    whole head, so ||w_0|| = 1e5 buried the logits of rows of norm 0.1 (predictions of 64 rows
    flipped in the coefficient layout, not in the batch layout). Compile now refuses such a head;
    with an explicit tolerance above the error it compiles, and the errors it then shows reach
    what public parameters predict for the small rows, which batch keeps far lower."""
    params = he.CkksParams.preset("throughput", max_norm=1.0)
    sk = he.SecretContext.generate(params)
    pub = sk.public_context()
    w = _one_large_row_head(rng)
    with pytest.raises(ParameterError, match=r"output 1 would carry errors up to .* \|\|W\|\|_F"):
        he.LinearPlan.compile(pub, w, layout="coefficient")
    # the tolerance from public parameters alone: SIGMAS noise stds of one coefficient times ||W||_F
    predicted = he.reference.coefficient_output_errors(params, w)
    noise_only = he.reference.SIGMAS * he.reference.coefficient_noise_std(params) * 1e5
    assert predicted.min() >= noise_only
    # the rule: each output keeps 10 bits of its data-dependent bound ||w_k|| * max_norm
    assert predicted[1] > 2.0**-10 * 0.1 * params.max_norm
    x = rows_with_norm(rng, 64, 768, 1.0)
    y = he.reference.linear(x, w)
    plan = he.LinearPlan.compile(pub, w, layout="coefficient", max_abs_error=2 * predicted.max())
    coefficient_y = sk.decrypt(plan.apply(sk.encrypt(x, layout="coefficient")))
    assert np.abs(coefficient_y - y).max() <= predicted.max()
    batch = he.LinearPlan.compile(pub, w, layout="batch")
    batch_y = sk.decrypt(batch.apply(sk.encrypt(x, layout="batch")))

    # the small rows' logits (std 0.1 / sqrt(768)) are buried in coefficient noise, not in batch:
    # which of classes 1 and 2 wins flips for about a third of the rows
    def flips(out):
        return int(np.sum(np.sign(out[:, 1] - out[:, 2]) != np.sign(y[:, 1] - y[:, 2])))

    assert flips(coefficient_y) > 10 and flips(batch_y) <= 2, (flips(coefficient_y), flips(batch_y))
    with pytest.raises(ParameterError, match="max_abs_error is"):
        he.LinearPlan.compile(pub, w, layout="coefficient", max_abs_error=0.5 * predicted.max())


@pytest.mark.parametrize("preset", PRESETS)
def test_compile_checks_the_caller_tolerance_against_public_errors(coefficient_keys, rng, preset):
    """An ordinary head compiles by default; with max_abs_error the decision follows the error
    derived from public parameters (reference.coefficient_output_errors), on either side."""
    sk = coefficient_keys[preset]
    pub = sk.public_context()
    w, b = random_layer(rng, 3, 768)
    he.LinearPlan.compile(pub, w, b, layout="coefficient")
    predicted = he.reference.coefficient_output_errors(sk.params, w, bias=b).max()
    he.LinearPlan.compile(pub, w, b, layout="coefficient", max_abs_error=1.01 * predicted)
    with pytest.raises(ParameterError, match="max_abs_error is"):
        he.LinearPlan.compile(pub, w, b, layout="coefficient", max_abs_error=0.99 * predicted)
    with pytest.raises(ValueRangeError, match="max_abs_error must be a positive finite number"):
        he.LinearPlan.compile(pub, w, b, layout="coefficient", max_abs_error=float("nan"))

import numpy as np
import pytest

from hevit import he
from hevit.errors import ContextMismatchError, LayoutError, SerializationError, ValueRangeError
from tests.helpers import rows_with_norm

PRESETS = sorted(he.PRESETS)


def full_rows(params, layout):
    return params.poly_modulus_degree if layout == "batch" else 64


@pytest.mark.parametrize("layout", ["batch", "sample", "coefficient"])
@pytest.mark.parametrize("preset", PRESETS)
def test_round_trip_within_scale_derived_tolerance(keys, rng, preset, layout):
    sk = keys.get(preset)
    params = sk.params
    if layout == "coefficient" and len(params.coeff_modulus_bits) - params.supports_rotations > 1:
        with pytest.raises(LayoutError, match="one data prime"):
            sk.encrypt(np.ones((1, 4)), layout=layout)
        return
    tol = he.reference.round_trip_tolerance(params, layout)
    for rows, cols in [(1, 768), (7, 5), (full_rows(params, layout), 768)]:
        x = rows_with_norm(rng, rows, cols, params.max_norm)
        enc = sk.encrypt(x, layout=layout)
        assert enc.shape == (rows, cols) and enc.layout == layout and enc.seeded
        y = sk.decrypt(enc)
        assert y.shape == x.shape and y.dtype == np.float64
        err = np.abs(y - x).max()
        assert err <= tol, (rows, cols, err, tol)


@pytest.mark.parametrize("layout", ["batch", "sample"])
def test_serialization_round_trip_is_exact(keys, rng, layout):
    sk = keys.get("single-row")
    pub = he.PublicContext.from_bytes(sk.public_context().to_bytes())
    x = rows_with_norm(rng, 33, 768, 20.0)
    enc = sk.encrypt(x, layout=layout)
    blob = enc.to_bytes()
    assert len(blob) == enc.nbytes
    loaded = he.EncryptedBatch.from_bytes(blob, pub)
    assert loaded.seeded and loaded.shape == enc.shape and loaded.layout == layout
    assert loaded.to_bytes() == blob
    np.testing.assert_array_equal(sk.decrypt(loaded), sk.decrypt(enc))


def test_wire_size_is_bit_packed_seeded_and_half_of_public_key_encryption(keys, rng):
    sk = keys.get("throughput")
    params = sk.params
    n = params.poly_modulus_degree
    x = rows_with_norm(rng, n, 768, 30.0)
    seeded = sk.encrypt(x, layout="batch")
    # 768 ciphertexts, each c0 packed at 60 bits per coefficient plus a 64-byte seed
    per_ct = n * 60 // 8 + 64
    assert seeded.nbytes - 768 * per_ct < 200
    assert seeded.nbytes / n < 6000  # bytes per 768-dim sample
    public = sk.public_context().encrypt(x, layout="batch")
    assert 1.9 < public.nbytes / seeded.nbytes < 2.0


@pytest.mark.parametrize("layout", ["batch", "sample"])
def test_sum_aggregates_clients(keys, rng, layout):
    sk = keys.get("throughput")
    xs = [rows_with_norm(rng, 10, 20, 30.0) for _ in range(3)]
    fresh = [sk.encrypt(x, layout=layout) for x in xs]
    total = he.EncryptedBatch.sum(fresh)
    assert total.norm_bound == pytest.approx(3 * sk.params.max_norm)
    # the sum of fresh batches keeps their seeds: c0 plus 3 seeds per ciphertext on the wire
    assert total.seeded and total.seed_count == 3
    assert total.nbytes == fresh[0].nbytes + 2 * 64 * total.ciphertext_count
    blob = total.to_bytes()
    assert len(blob) == total.nbytes
    total = he.EncryptedBatch.from_bytes(blob, sk.public_context())
    assert total.seed_count == 3 and total.to_bytes() == blob
    assert total.to_bytes(threads=1) == blob
    err = np.abs(sk.decrypt(total) - sum(xs)).max()
    assert err <= he.reference.sum_tolerance(sk.params, 3, layout)
    # `+` and the built-in sum() are EncryptedBatch.sum: the same ciphertexts, byte for byte
    assert sum(fresh).to_bytes() == (fresh[0] + fresh[1] + fresh[2]).to_bytes() == blob
    # a sum with a public-key (unseeded) batch stores c1 in full
    mixed = he.EncryptedBatch.sum([total, sk.public_context().encrypt(xs[0], layout=layout)])
    assert not mixed.seeded and mixed.seed_count == 0
    assert np.abs(
        sk.decrypt(mixed) - sum(xs) - xs[0]
    ).max() <= he.reference.public_round_trip_tolerance(
        sk.params, layout
    ) + he.reference.sum_tolerance(sk.params, 3, layout)


def test_sum_of_many_fresh_batches_stores_c1_beyond_the_seed_limit(keys, rng):
    sk = keys.get("throughput")
    x = rows_with_norm(rng, 4, 3, 0.1)
    one = sk.encrypt(x, layout="batch")
    big = he.EncryptedBatch.sum([one] * 255)
    assert big.seed_count == 255
    over = he.EncryptedBatch.sum([big, one])
    assert not over.seeded and over.nbytes > big.nbytes
    back = he.EncryptedBatch.from_bytes(big.to_bytes(), sk.public_context())
    assert (
        np.abs(sk.decrypt(back) - 255 * x).max()
        <= he.reference.sum_tolerance(sk.params, 255) * 255**0.5
    )


def test_sum_refuses_mismatches(keys, rng):
    sk = keys.get("throughput")
    a = sk.encrypt(rng.standard_normal((4, 5)), layout="batch")
    with pytest.raises(LayoutError, match="sum adds batches of one layout and shape"):
        he.EncryptedBatch.sum([a, sk.encrypt(rng.standard_normal((4, 5)), layout="sample")])
    with pytest.raises(LayoutError, match="sum adds batches of one layout and shape"):
        he.EncryptedBatch.sum([a, sk.encrypt(rng.standard_normal((5, 5)), layout="batch")])
    other = he.SecretContext.generate(sk.params)
    with pytest.raises(ContextMismatchError, match="another key set"):
        he.EncryptedBatch.sum([a, other.encrypt(rng.standard_normal((4, 5)), layout="batch")])
    with pytest.raises(LayoutError, match="at least one"):
        he.EncryptedBatch.sum([])


@pytest.mark.parametrize(
    "x, error, match",
    [
        (np.full((2, 3), np.nan), ValueRangeError, "non-finite value"),
        (np.array([[1.0, np.inf]]), ValueRangeError, "non-finite value"),
        (np.full((2, 3), 100.0), ValueRangeError, "L2 norm .* above max_norm=64"),
        (np.zeros((2, 3), dtype=complex), LayoutError, "must hold real numbers"),
        (np.array([["a", "b"]]), LayoutError, "must hold real numbers"),
        (np.zeros(5), LayoutError, "must be a 2-D array"),
        (np.zeros((2, 3, 4)), LayoutError, "must be a 2-D array"),
        (np.zeros((0, 3)), LayoutError, "empty matrix"),
        (np.zeros((4097, 2)), LayoutError, "batch layout holds at most N=4096 rows"),
    ],
)
def test_bad_inputs_raise_clear_errors(keys, x, error, match):
    with pytest.raises(error, match=match):
        keys.get("throughput").encrypt(x, layout="batch")


def test_sample_layout_limits(keys):
    sk = keys.get("throughput")
    with pytest.raises(LayoutError, match="sample layout needs next_pow2"):
        sk.encrypt(np.zeros((1, 2049)), layout="sample")
    with pytest.raises(LayoutError, match="unknown layout 'rows'"):
        sk.encrypt(np.zeros((1, 2)), layout="rows")


def test_integer_input_is_accepted(keys):
    sk = keys.get("throughput")
    x = np.arange(12).reshape(3, 4)
    np.testing.assert_allclose(sk.decrypt(sk.encrypt(x, layout="batch")), x, atol=1e-4, rtol=0)


def test_truncated_and_corrupted_bytes_are_refused(keys, rng):
    sk = keys.get("throughput")
    blob = sk.encrypt(rng.standard_normal((3, 4)), layout="batch").to_bytes()
    pub = sk.public_context()
    with pytest.raises(SerializationError, match="truncated bytes"):
        he.EncryptedBatch.from_bytes(blob[:10], pub)
    with pytest.raises(SerializationError, match="truncated or padded"):
        he.EncryptedBatch.from_bytes(blob[:-1], pub)
    flipped = bytearray(blob)
    flipped[len(blob) // 2] ^= 0x10
    with pytest.raises(SerializationError, match="checksum mismatch"):
        he.EncryptedBatch.from_bytes(bytes(flipped), pub)
    with pytest.raises(SerializationError, match="bad magic"):
        he.EncryptedBatch.from_bytes(b"X" + blob[1:], pub)
    with pytest.raises(SerializationError, match="hold a PublicContext, expected a EncryptedBatch"):
        he.EncryptedBatch.from_bytes(pub.to_bytes(), pub)
    future = bytearray(blob)
    future[4] = 9
    with pytest.raises(SerializationError, match="unsupported hevit format version 9"):
        he.EncryptedBatch.from_bytes(bytes(future), pub)
    # files of the previous format (SEAL-serialised keys) are named as such, not misparsed
    old = bytearray(pub.to_bytes())
    old[4] = 2
    with pytest.raises(SerializationError, match="unsupported hevit format version 2"):
        he.PublicContext.from_bytes(bytes(old))


def test_threads_give_identical_results(keys, rng):
    sk = keys.get("throughput")
    x = rows_with_norm(rng, 100, 64, 30.0)
    enc = sk.encrypt(x, layout="batch", threads=2)
    np.testing.assert_array_equal(sk.decrypt(enc, threads=1), sk.decrypt(enc, threads=2))
    for bad in (0, -1):
        with pytest.raises(ValueRangeError, match=f"threads must be >= 1 .*got {bad}"):
            sk.decrypt(enc, threads=bad)
        with pytest.raises(ValueRangeError, match="threads must be >= 1"):
            sk.encrypt(x, layout="batch", threads=bad)


def test_thread_counts_past_the_limit_are_refused_not_started(keys, rng):
    """threads=10**6 would start thousands of OS threads: the facade and the C++ core refuse it."""
    from hevit.errors import ResourceError
    from hevit.he._arrays import MAX_THREADS

    sk = keys.get("throughput")
    batch = sk.encrypt(rows_with_norm(rng, 4, 8, 1.0), layout="batch")
    with pytest.raises(ResourceError, match="above the limit"):
        sk.encrypt(rows_with_norm(rng, 4, 8, 1.0), layout="batch", threads=10**6)
    with pytest.raises(ResourceError, match=f"limit of {MAX_THREADS}"):
        batch._core.to_bytes(MAX_THREADS + 1)  # the core's own check, below the facade
    assert batch.to_bytes(threads=MAX_THREADS) == batch.to_bytes(threads=1)


def test_a_transparent_ciphertext_is_refused_by_sum_and_plans(keys, rng):
    """c1 = 0 (a plaintext dressed as a ciphertext) used to reach sum or a plan and raise a bare
    RuntimeError from SEAL; both refuse it with SerializationError now."""
    import struct

    from hevit.errors import SerializationError
    from tests.he.test_wire_fuzz import with_checksum

    sk = keys.get("throughput")
    public = sk.public_context().encrypt(rows_with_norm(rng, 4, 8, 1.0), layout="batch")
    blob = bytearray(public.to_bytes())
    assert public.seed_count == 0
    header, meta = 64, struct.calcsize("<BBBBIQQQddQ")
    poly = (len(blob) - header - meta) // (2 * public.ciphertext_count)
    for i in range(public.ciphertext_count):
        start = header + meta + (2 * i + 1) * poly
        blob[start : start + poly] = bytes(poly)
    transparent = he.EncryptedBatch.from_bytes(with_checksum(bytes(blob)), sk.public_context())
    with pytest.raises(SerializationError, match="transparent"):
        he.EncryptedBatch.sum([transparent, public])
    plan = he.LinearPlan.compile(sk.public_context(), np.ones((2, 8)), layout="batch")
    with pytest.raises(SerializationError, match="transparent"):
        plan.apply(transparent)


@pytest.mark.parametrize("preset", ["throughput", "update"])
@pytest.mark.parametrize(("rows", "cols"), [(4093, 37), (5, 33), (1, 1)])
def test_batch_layout_encodings_round_trip_and_evaluate(keys, rng, preset, rows, cols):
    """One data prime puts batch rows in coefficients (row s of column j at coefficient s of
    ciphertext j), more primes in slots; partial column blocks and partial row groups round-trip
    under both keys and a batch plan matches numpy, within the tolerance of the encoding."""
    from hevit._core import inspection

    sk = keys.get(preset)
    params, pub = sk.params, sk.public_context()
    x = rows_with_norm(rng, rows, cols, params.max_norm)
    in_coefficients = he.reference.batch_in_coefficients(params)
    assert in_coefficients == (preset == "throughput")
    if in_coefficients:
        q = inspection.first_prime(pub._core)
        j = cols - 1
        coeffs = inspection.plaintext_coefficients(pub._core, x, "batch", j)
        expected = np.zeros(params.poly_modulus_degree, dtype=np.int64)
        expected[:rows] = np.round(x[:, j] * 2.0**params.scale_bits)
        assert np.array_equal(
            coeffs.astype(np.int64), np.where(expected < 0, expected + q, expected)
        )
    tol = he.reference.round_trip_tolerance(params, "batch")
    assert np.abs(sk.decrypt(sk.encrypt(x, layout="batch")) - x).max() <= tol
    public = pub.encrypt(x, layout="batch")
    assert np.abs(sk.decrypt(public) - x).max() <= he.reference.public_round_trip_tolerance(params)
    w = rng.standard_normal((3, cols)) / np.sqrt(cols)
    b = rng.standard_normal(3)
    plan = he.LinearPlan.compile(pub, w, b, layout="batch")
    y = sk.decrypt(plan.apply(sk.encrypt(x, layout="batch")))
    assert np.abs(y - he.reference.linear(x, w, b)).max() <= he.reference.linear_tolerance(
        params, w, x, plan, bias=b
    )


def test_peek_reads_the_metadata_without_the_checksum_pass(keys, rng):
    sk = keys.get("throughput")
    batch = sk.encrypt(rows_with_norm(rng, 5, 7, 1.0), layout="batch")
    blob = bytearray(batch.to_bytes())
    header = he.EncryptedBatch.peek(bytes(blob))
    assert header == (
        "batch",
        batch.seed_count,
        batch._core.prime_count,
        5,
        7,
        0,
        batch._core.scale,
        batch.norm_bound,
        batch.ciphertext_count,
    )
    blob[-1] ^= 1  # damage past the metadata: peek still reads it, loading refuses it
    assert he.EncryptedBatch.peek(bytes(blob)) == header
    with pytest.raises(SerializationError, match="checksum mismatch"):
        he.EncryptedBatch.from_bytes(bytes(blob), sk.public_context())
    with pytest.raises(SerializationError, match="PublicContext, expected a EncryptedBatch"):
        he.EncryptedBatch.peek(sk.public_context().to_bytes())
    with pytest.raises(SerializationError, match="truncated"):
        he.EncryptedBatch.peek(bytes(blob[:80]))

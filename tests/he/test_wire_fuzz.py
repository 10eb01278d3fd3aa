"""Hostile bytes: random truncations, bit flips and rewritten payloads never crash the process.

Two campaigns per serialized kind:
- raw mutations (the checksum catches them: always a SerializationError or, for a changed
  fingerprint or key-set id in the header, a ContextMismatchError);
- payload mutations with the checksum recomputed, which exercise the structural validators
  behind it: every outcome is either a hevit error or a well-formed object.
"""

import hashlib
import os
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hevit import he
from hevit.errors import HevitError

HEADER = 64


@pytest.fixture(scope="module")
def samples():
    params = he.CkksParams.preset("single-row")
    sk = he.SecretContext.generate(params, rotation_steps=(1, 4))
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 20))
    pub = sk.public_context()
    seeded = sk.encrypt(x, layout="batch")
    # the coefficient layout needs one data prime
    one_prime = he.SecretContext.generate(he.CkksParams.preset("throughput"))
    one_prime_pub = one_prime.public_context()

    def load_one_prime(b):
        return he.EncryptedBatch.from_bytes(b, one_prime_pub)

    return {
        "public_context": (pub.to_bytes(), lambda b: he.PublicContext.from_bytes(b)),
        "secret_context": (sk.to_bytes(), lambda b: he.SecretContext.from_bytes(b)),
        "batch_seeded": (seeded.to_bytes(), lambda b: he.EncryptedBatch.from_bytes(b, pub)),
        "batch_full": (
            pub.encrypt(x, layout="batch").to_bytes(),
            lambda b: he.EncryptedBatch.from_bytes(b, pub),
        ),
        "batch_summed": (
            he.EncryptedBatch.sum([seeded, seeded, seeded]).to_bytes(),
            lambda b: he.EncryptedBatch.from_bytes(b, pub),
        ),
        "batch_sample": (
            sk.encrypt(x, layout="sample").to_bytes(),
            lambda b: he.EncryptedBatch.from_bytes(b, pub),
        ),
        "coefficient_fresh": (
            one_prime.encrypt(x, layout="coefficient").to_bytes(),
            load_one_prime,
        ),
        "coefficient_reply": (
            he.LinearPlan.compile(one_prime_pub, rng.standard_normal((2, 20)), layout="coefficient")
            .apply(one_prime.encrypt(x, layout="coefficient"))
            .to_bytes(),
            load_one_prime,
        ),
    }


KINDS = [
    "public_context",
    "secret_context",
    "batch_seeded",
    "batch_full",
    "batch_summed",
    "batch_sample",
    "coefficient_fresh",
    "coefficient_reply",
]
# CI runs a bounded, derandomised campaign; HEVIT_FUZZ_EXAMPLES=5000 runs a long random one.
_EXAMPLES = int(os.environ.get("HEVIT_FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=_EXAMPLES,
    deadline=None,
    derandomize="HEVIT_FUZZ_EXAMPLES" not in os.environ,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def with_checksum(blob: bytes) -> bytes:
    """Rewrites payload size and checksum so the mutation reaches the structural validators."""
    payload = blob[HEADER:]
    digest = hashlib.blake2b(payload, digest_size=16).digest()
    return blob[:40] + struct.pack("<Q", len(payload)) + digest + payload


def test_checksum_is_blake2b_128(samples):
    blob, load = samples["batch_seeded"]
    assert with_checksum(blob) == blob
    load(blob)


@pytest.mark.parametrize("kind", KINDS)
@FUZZ
@given(data=st.data())
def test_truncation_is_refused(samples, kind, data):
    blob, load = samples[kind]
    cut = data.draw(st.integers(0, len(blob) - 1))
    with pytest.raises(HevitError):
        load(blob[:cut])


@pytest.mark.parametrize("kind", KINDS)
@FUZZ
@given(data=st.data())
def test_bit_flips_are_refused(samples, kind, data):
    blob, load = samples[kind]
    mutated = bytearray(blob)
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(blob) - 1))
        mutated[pos] ^= 1 << data.draw(st.integers(0, 7))
    if bytes(mutated) == blob:
        return
    with pytest.raises(HevitError):
        load(bytes(mutated))


@pytest.mark.parametrize("kind", KINDS)
@FUZZ
@given(data=st.data())
def test_rewritten_payloads_never_crash(samples, kind, data):
    blob, load = samples[kind]
    mutated = bytearray(blob)
    # mutate mostly the first payload bytes, where sizes, counts and shapes live
    limit = data.draw(st.sampled_from([HEADER + 64, HEADER + 512, len(blob)]))
    for _ in range(data.draw(st.integers(1, 6))):
        pos = data.draw(st.integers(HEADER, min(limit, len(blob)) - 1))
        mutated[pos] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        cut = data.draw(st.integers(HEADER, len(mutated)))
        mutated = mutated[:cut]
    try:
        load(with_checksum(bytes(mutated)))
    except HevitError:
        pass


@pytest.mark.parametrize("kind", ["batch_seeded", "batch_full", "batch_summed"])
@pytest.mark.parametrize("shift", [1, 2, 128, 255])
def test_announced_seed_count_must_match_the_bytes(samples, kind, shift):
    blob, load = samples[kind]
    payload = bytearray(blob[HEADER:])
    payload[1] = (payload[1] + shift) % 256  # seeds per ciphertext, now wrong
    with pytest.raises(HevitError, match="ciphertext bytes"):
        load(with_checksum(blob[:HEADER] + bytes(payload)))


@pytest.mark.parametrize("kind", ["batch_seeded", "batch_full", "batch_summed"])
def test_huge_announced_sizes_fail_before_allocating(samples, kind):
    blob, load = samples[kind]
    payload = bytearray(blob[HEADER:])
    payload[16:24] = struct.pack("<Q", 1 << 40)  # rows
    with pytest.raises(HevitError, match="impossible shape"):
        load(with_checksum(blob[:HEADER] + bytes(payload)))
    payload = bytearray(blob[HEADER:])
    payload[48:56] = struct.pack("<Q", 1 << 62)  # ciphertext count
    with pytest.raises(HevitError, match="ciphertext count"):
        load(with_checksum(blob[:HEADER] + bytes(payload)))


def test_out_of_range_rotation_step_in_a_context_is_refused(samples):
    """Regression (found by the fuzz campaign): SEAL itself raised a plain ValueError here."""
    blob, load = samples["public_context"]
    payload = bytearray(blob[HEADER:])
    params_len = struct.unpack_from("<Q", payload, 0)[0]
    first_step = 8 + params_len + 4
    payload[first_step : first_step + 4] = struct.pack("<i", 1 << 20)
    with pytest.raises(HevitError, match="rotation step 1048576 out of range"):
        load(with_checksum(blob[:HEADER] + bytes(payload)))


def test_huge_declared_column_count_is_refused_at_once(samples):
    """Regression (found by this fuzz): a sample-layout batch declaring ~2^63 columns made the
    period check loop forever computing the next power of two."""
    blob, load = samples["batch_sample"]
    mutated = bytearray(blob)
    cols_at = HEADER + 4 + 4 + 8  # layout, seeded, 2 reserved (u8), prime count (u32), rows (u64)
    mutated[cols_at : cols_at + 8] = (0xAC00000000000014).to_bytes(8, "little")
    with pytest.raises(HevitError, match="impossible shape"):
        load(with_checksum(bytes(mutated)))

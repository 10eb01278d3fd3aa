"""Hostile bytes: random truncations, bit flips and rewritten payloads never crash the process.

Two campaigns per serialized kind:
- raw mutations (the checksum catches them: always a SerializationError or, for a changed
  fingerprint or key-set id in the header, a ContextMismatchError);
- payload mutations with the checksum recomputed, which exercise the structural validators
  behind it: every outcome is either a hevit error or a well-formed object.
"""

import os
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hevit import _core, he
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

    mlp_params = he.CkksParams.preset("mlp", max_norm=1.0)
    mlp_keys = he.MlpPlan.evaluation_keys(mlp_params, in_dim=8, hidden=4, out_dim=2, layout="batch")
    mlp = he.SecretContext.generate(mlp_params, **mlp_keys.as_kwargs())
    return {
        "public_context": (pub.to_bytes(), lambda b: he.PublicContext.from_bytes(b)),
        # conjugation and relinearisation keys too
        "mlp_context": (
            mlp.public_context().to_bytes(),
            lambda b: he.PublicContext.from_bytes(b),
        ),
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
    "mlp_context",
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
    digest = _core.payload_checksum(payload)
    return blob[:40] + struct.pack("<Q", len(payload)) + digest + payload


def test_checksum_is_the_documented_crc32c_lanes(samples):
    from .test_checksum import lane_checksum

    assert samples["batch_seeded"][0][48:64] == lane_checksum(samples["batch_seeded"][0][HEADER:])
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


_RSS_PROBE = r"""
import resource, sys
from pathlib import Path
from hevit import he
from hevit.errors import HevitError

def rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

loaders = {"public": he.PublicContext.from_bytes, "secret": he.SecretContext.from_bytes}
folder = Path(sys.argv[1])
for kind, load in loaders.items():
    load((folder / f"{kind}.honest").read_bytes())  # the honest object once: the baseline
before = rss()
rejected = tried = 0
for path in sorted(folder.glob("*.hostile")):
    tried += 1
    data = path.read_bytes()
    try:
        loaders[path.name.split("-")[0]](data)
    except HevitError:
        rejected += 1
    del data
print(rejected, tried, before, rss())
"""


def _length_fields(payload: bytes, at: int = 0) -> tuple[list[int], int]:
    """Offsets of the u64 length fields of a PublicContext payload starting at ``at``."""
    fields = []

    def blob():
        nonlocal at
        fields.append(at)
        at += 8 + struct.unpack_from("<Q", payload, at)[0]

    blob()  # parameters
    at += 4 + 4 * struct.unpack_from("<I", payload, at)[0]  # rotation steps
    blob()  # public key
    blob()  # Galois keys
    at += 4  # conjugation flag
    blob()  # relinearisation keys
    return fields, at


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["single-row", "mlp"])
def test_hostile_key_files_stay_within_a_small_multiple_of_the_honest_size(preset, tmp_path):
    """Every length field of a public and a secret context rewritten to 0, 1, 2^31, 2^40, 2^63
    and 2^64 - 1 (checksum forged): each file is refused, and the loading child's peak RSS grows
    by less than twice the honest object's size (SEAL 4.1.2's own loader zero-filled 1 GiB
    from such a file and kept it)."""
    import subprocess
    import sys

    params = he.CkksParams.preset(preset, max_norm=1.0)
    if preset == "mlp":
        keys = he.MlpPlan.evaluation_keys(params, in_dim=192, hidden=32, out_dim=3, layout="sample")
        sk = he.SecretContext.generate(params, **keys.as_kwargs())
    else:
        steps = he.LinearPlan.required_rotation_steps(
            params, in_dim=768, out_dim=3, layout="sample"
        )
        sk = he.SecretContext.generate(params, rotation_steps=steps)
    blobs = {"public": sk.public_context().to_bytes(), "secret": sk.to_bytes()}
    honest = max(len(b) for b in blobs.values())
    for kind, blob in blobs.items():
        (tmp_path / f"{kind}.honest").write_bytes(blob)
        payload = blob[HEADER:]
        if kind == "public":
            fields, _ = _length_fields(payload)
        else:  # blob(public context bytes, wire header included), then blob(secret key)
            inner, _ = _length_fields(payload, 8 + HEADER)
            fields = [0, *inner, 8 + struct.unpack_from("<Q", payload, 0)[0]]
        for offset in fields:
            for value in (0, 1, 2**31, 2**40, 2**63, 2**64 - 1):
                if value == struct.unpack_from("<Q", payload, offset)[0]:
                    continue  # unchanged (an empty relinearisation blob is already 0)
                hostile = payload[:offset] + struct.pack("<Q", value) + payload[offset + 8 :]
                name = f"{kind}-{offset}-{value}.hostile"
                (tmp_path / name).write_bytes(with_checksum(blob[:HEADER] + hostile))
    out = subprocess.run(
        [sys.executable, "-c", _RSS_PROBE, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    rejected, tried, before, after = map(int, out.stdout.split())
    print(
        f"\n{preset}: {rejected}/{tried} hostile files refused; honest {honest / 1e6:.1f} MB, "
        f"peak RSS {before / 1e6:.0f} -> {after / 1e6:.0f} MB"
    )
    assert rejected == tried >= 50
    assert after - before < 2 * honest


def _secret_key_blob_span(params) -> tuple[list[int], int]:
    """Byte sizes of the secret key's limbs (special prime last) and their total: the key is the
    last blob of a SecretContext's payload."""
    n = params.poly_modulus_degree
    limbs = [n * bits // 8 for bits in params.coeff_modulus_bits]
    return limbs, sum(limbs)


SECRET_KEY_MUTATIONS = int(os.environ.get("HEVIT_KEY_MUTATIONS", "300"))


@pytest.mark.parametrize("preset", ["single-row", "throughput", "mlp"])
def test_secret_key_byte_flips_never_load(preset):
    """Regression: byte flips inside the secret-key blob with the checksum recomputed (so only
    the key checks stand) loaded 7 times in 2,400 mutations: all in the special prime's limb,
    which the old check (a public-key encryption of zeros must decrypt to about 0) never read,
    since fresh ciphertexts live at the data level. Every limb is now checked to be the same
    ternary polynomial and p0 + p1 s small at the key level. The campaign flips one random bit
    of one random key byte per mutation; first it shows where flips land (every limb is hit) and
    that the unmutated bytes load."""
    params = he.CkksParams.preset(preset)
    sk = he.SecretContext.generate(params)
    blob = sk.to_bytes()
    assert he.SecretContext.from_bytes(with_checksum(blob)).to_bytes() == blob
    limbs, size = _secret_key_blob_span(params)
    start = len(blob) - size
    rng = np.random.default_rng(zlib.crc32(preset.encode()))
    hits = [0] * len(limbs)
    accepted = []
    for _ in range(SECRET_KEY_MUTATIONS):
        pos = int(rng.integers(start, len(blob)))
        mutated = bytearray(blob)
        mutated[pos] ^= 1 << int(rng.integers(0, 8))
        offset, limb = pos - start, 0
        while offset >= limbs[limb]:
            offset -= limbs[limb]
            limb += 1
        hits[limb] += 1
        try:
            he.SecretContext.from_bytes(with_checksum(bytes(mutated)))
        except HevitError:
            continue
        accepted.append((limb, offset))
    assert all(hits), hits  # the campaign reached every limb, the special prime's included
    assert accepted == [], f"{len(accepted)} of {SECRET_KEY_MUTATIONS} mutated keys loaded"


def test_a_consistent_but_foreign_key_never_loads():
    """A secret key that is a valid ternary key in every limb, but not the one that made the
    public key (another key set's), is refused by the key-level check p0 + p1 s small."""
    params = he.CkksParams.preset("single-row")
    mine, other = he.SecretContext.generate(params), he.SecretContext.generate(params)
    _, size = _secret_key_blob_span(params)
    ours, theirs = mine.to_bytes(), other.to_bytes()
    forged = ours[: len(ours) - size] + theirs[len(theirs) - size :]
    with pytest.raises(HevitError, match="does not belong to its public key"):
        he.SecretContext.from_bytes(with_checksum(forged))


def test_a_special_prime_limb_of_another_key_never_loads():
    """Only the special prime's limb swapped for another key's: every limb is ternary, the data
    limbs still decrypt, and the limbs disagree: refused before the pair check."""
    params = he.CkksParams.preset("single-row")
    mine, other = he.SecretContext.generate(params), he.SecretContext.generate(params)
    limbs, _ = _secret_key_blob_span(params)
    ours, theirs = mine.to_bytes(), other.to_bytes()
    forged = ours[: len(ours) - limbs[-1]] + theirs[len(theirs) - limbs[-1] :]
    with pytest.raises(HevitError, match="not one ternary polynomial"):
        he.SecretContext.from_bytes(with_checksum(forged))

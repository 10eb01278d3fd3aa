import numpy as np
import pytest

from hevit import he
from hevit.errors import ContextMismatchError, SecretKeyRequiredError, SerializationError
from tests.helpers import rows_with_norm


def test_public_context_round_trips_and_keeps_its_identity(keys):
    sk = keys.get("single-row", rotation_steps=(1, 2, 512))
    pub = sk.public_context()
    loaded = he.PublicContext.from_bytes(pub.to_bytes())
    assert loaded.rotation_steps == (1, 2, 512)
    assert loaded.params == pub.params
    assert loaded.keyset_id == pub.keyset_id and loaded.params_fingerprint == pub.params_fingerprint
    assert loaded.to_bytes() == pub.to_bytes()


def test_public_context_encrypts_for_the_key_holder(keys, rng):
    sk = keys.get("throughput")
    pub = he.PublicContext.from_bytes(sk.public_context().to_bytes())
    x = rows_with_norm(rng, 9, 12, 64.0)
    enc = pub.encrypt(x, layout="batch")
    assert not enc.seeded
    tol = he.reference.public_round_trip_tolerance(sk.params)
    np.testing.assert_allclose(sk.decrypt(enc), x, atol=tol, rtol=0)


def test_public_context_cannot_decrypt(keys, rng):
    pub = keys.get("throughput").public_context()
    enc = pub.encrypt(rng.standard_normal((2, 3)), layout="batch")
    with pytest.raises(SecretKeyRequiredError, match="holds no secret key and cannot decrypt"):
        pub.decrypt(enc)


def test_public_context_has_no_secret_key_attribute(keys):
    pub = keys.get("throughput").public_context()
    assert not any("secret" in name for name in dir(pub._core))
    assert not hasattr(pub, "secret_key")


def test_secret_context_round_trip_decrypts_old_ciphertexts(keys, rng):
    sk = keys.get("throughput")
    x = rows_with_norm(rng, 5, 7, 10.0)
    blob = sk.encrypt(x, layout="sample").to_bytes()
    restored = he.SecretContext.from_bytes(sk.to_bytes())
    assert restored.public_context().keyset_id == sk.public_context().keyset_id
    enc = he.EncryptedBatch.from_bytes(blob, restored.public_context())
    np.testing.assert_allclose(
        restored.decrypt(enc),
        x,
        atol=he.reference.round_trip_tolerance(sk.params, "sample"),
        rtol=0,
    )


def test_secret_context_bytes_are_refused_as_a_public_context(keys):
    sk_bytes = keys.get("throughput").to_bytes()
    with pytest.raises(SerializationError, match="hold a SecretContext, expected a PublicContext"):
        he.PublicContext.from_bytes(sk_bytes)


def test_public_bytes_are_refused_as_a_secret_context(keys):
    with pytest.raises(SerializationError, match="hold a PublicContext, expected a SecretContext"):
        he.SecretContext.from_bytes(keys.get("throughput").public_context().to_bytes())


def test_secret_key_bytes_never_appear_in_public_bytes(keys):
    sk = keys.get("single-row", rotation_steps=(1,))
    secret_blob = sk.to_bytes()
    public_blob = sk.public_context().to_bytes()
    # The secret context is the public context plus the secret key: whatever follows the
    # embedded public context is key material, and no 64-byte window of it is in the public bytes.
    start = secret_blob.index(public_blob) + len(public_blob)
    key_part = secret_blob[start + 8 :]
    assert len(key_part) > 4096 * 8
    windows = {key_part[i : i + 64] for i in range(200, len(key_part) - 64, 997)}
    assert not any(w in public_blob for w in windows)


def test_decrypting_under_another_key_set_is_refused(rng):
    params = he.CkksParams.preset("throughput")
    a = he.SecretContext.generate(params)
    b = he.SecretContext.generate(params)
    enc = a.encrypt(rng.standard_normal((3, 4)), layout="batch")
    with pytest.raises(ContextMismatchError, match="another key set"):
        b.decrypt(enc)
    with pytest.raises(ContextMismatchError, match="another key set"):
        he.EncryptedBatch.from_bytes(enc.to_bytes(), b.public_context())


def test_other_parameters_are_refused(keys, rng):
    enc = keys.get("throughput").encrypt(rng.standard_normal((3, 4)), layout="batch")
    with pytest.raises(ContextMismatchError, match="other CKKS parameters"):
        he.EncryptedBatch.from_bytes(enc.to_bytes(), keys.get("single-row").public_context())


def test_facade_types_are_checked(keys):
    with pytest.raises(TypeError, match="params must be a CkksParams"):
        he.SecretContext.generate({"poly_modulus_degree": 4096})
    with pytest.raises(TypeError, match="must be bytes"):
        he.PublicContext.from_bytes("not bytes")
    with pytest.raises(TypeError, match="batch must be an EncryptedBatch"):
        keys.get("throughput").decrypt(np.zeros((2, 2)))


def test_introspection_bindings(keys, rng):
    sk = keys.get("single-row", rotation_steps=(1,))
    core = sk.public_context()._core
    assert core.slot_count == 2048
    assert len(core.primes) == 3 and all(
        p.bit_length() == b for p, b in zip(core.primes, (39, 30, 40), strict=True)
    )
    enc = sk.encrypt(rng.standard_normal((3, 20)), layout="sample")
    assert enc._core.period == 32 and enc._core.prime_count == 2
    assert enc.context.keyset_id == sk.public_context().keyset_id
    assert "EncryptedBatch(shape=(3, 20), layout='sample'" in repr(enc)
    assert "<secret key hidden>" in repr(sk) and "PublicContext(N=4096" in repr(sk.public_context())
    plan = he.LinearPlan.compile(sk.public_context(), np.ones((1, 20)) * 0.1, layout="batch")
    assert plan._core.input_norm_bound == sk.params.max_norm
    assert plan.output_norm_bound == pytest.approx(np.sqrt(20) * 0.1 * sk.params.max_norm)
    assert plan.shape == (1, 20) and "LinearPlan(shape=(1, 20), layout='batch'" in repr(plan)
    total = enc + enc
    assert total.norm_bound == 2 * sk.params.max_norm


def test_secret_context_with_a_foreign_secret_key_is_refused(keys):
    import struct

    from hevit import _core

    a = keys.get("throughput")
    b = he.SecretContext.generate(a.params)
    blob_a, blob_b = a.to_bytes(), b.to_bytes()
    pub_len = struct.unpack_from("<Q", blob_a, 64)[0]
    # a's public context with b's secret key, checksum recomputed: a consistent-looking forgery
    payload = (
        blob_a[64 : 64 + 8 + pub_len] + blob_b[64 + 8 + struct.unpack_from("<Q", blob_b, 64)[0] :]
    )
    forged = (
        blob_a[:40] + struct.pack("<Q", len(payload)) + _core.payload_checksum(payload) + payload
    )
    with pytest.raises(SerializationError, match="does not belong to its public key"):
        he.SecretContext.from_bytes(forged)


def test_secret_context_file_is_private_and_never_overwritten(tmp_path, keys, rng):
    import os
    import stat

    sk = keys.get("throughput")
    path = sk.save(tmp_path / "key.hevit")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with pytest.raises(FileExistsError):
        sk.save(path)
    x = rng.standard_normal((2, 3))
    restored = he.SecretContext.load(path)
    assert np.abs(restored.decrypt(sk.encrypt(x, layout="batch")) - x).max() < 1e-4
    os.chmod(path, 0o644)
    with pytest.raises(PermissionError, match="accessible to other users"):
        he.SecretContext.load(path)


def _blobs(payload: bytes):
    """Splits a PublicContext payload into (params, steps, public key, galois, conj, relin)."""
    import struct

    pos = 0

    def blob():
        nonlocal pos
        (size,) = struct.unpack_from("<Q", payload, pos)
        pos += 8 + size
        return payload[pos - size : pos]

    params = blob()
    (count,) = struct.unpack_from("<I", payload, pos)
    steps = payload[pos : pos + 4 + 4 * count]
    pos += 4 + 4 * count
    public_key, galois = blob(), blob()
    conj = payload[pos : pos + 4]
    pos += 4
    return params, steps, public_key, galois, conj, blob()


def test_evaluation_keys_are_bound_to_their_key_set(rng):
    """A public key spliced with another key set's Galois keys (checksum and header forged) is a
    different key set: batches of the real one are refused, never evaluated into wrong logits."""
    import struct

    from hevit.errors import ContextMismatchError
    from tests.he.test_wire_fuzz import with_checksum

    params = he.CkksParams.preset("single-row")
    steps = he.LinearPlan.required_rotation_steps(params, in_dim=64, out_dim=3, layout="sample")
    a = he.SecretContext.generate(params, rotation_steps=steps)
    b = he.SecretContext.generate(params, rotation_steps=steps)
    pa, pb = a.public_context().to_bytes(), b.public_context().to_bytes()
    ours, theirs = _blobs(pa[64:]), _blobs(pb[64:])

    def pack(parts):
        params_, steps_, pk, gk, conj, rk = parts
        out = b""
        for chunk in (params_,):
            out += struct.pack("<Q", len(chunk)) + chunk
        out += steps_
        for chunk in (pk, gk):
            out += struct.pack("<Q", len(chunk)) + chunk
        return out + conj + struct.pack("<Q", len(rk)) + rk

    assert pack(ours) == pa[64:]  # the splitter reads the real layout
    spliced_payload = pack((*ours[:3], theirs[3], *ours[4:]))
    # the forger keeps a's key-set id in the header: the id computed from the keys disagrees
    forged = with_checksum(pa[:64] + spliced_payload)
    with pytest.raises(SerializationError, match="does not match its contents"):
        he.PublicContext.from_bytes(forged)
    # so no context that holds b's Galois keys can carry a's key-set id, and a's batches are
    # refused by any such context (shown with b's own)
    assert a.public_context().keyset_id != b.public_context().keyset_id
    x = rng.standard_normal((2, 64))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    batch = a.encrypt(x, layout="sample").to_bytes()
    with pytest.raises(ContextMismatchError):
        he.EncryptedBatch.from_bytes(batch, b.public_context())

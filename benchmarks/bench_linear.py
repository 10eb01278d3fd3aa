"""Encrypted linear head y = W x + b (768 -> 3): hevit's two layouts against TenSEAL and numpy.

Timed per batch of B images, reported per image. End to end = client encrypt + serialize, server
deserialize + apply + serialize, client deserialize + decrypt. Every run also checks the decrypted
logits against numpy (same argmax, error within the derived tolerance).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from hevit import he

from .conftest import IN_DIM, OUT_DIM, SETUPS, Row, make_features, make_head

BATCHES = [1, 16, 256, 4096]
#: the coefficient layout holds one image per ciphertext: it serves small batches
COEFFICIENT_BATCHES = [1, 4, 16]


def rounds_for(batch: int) -> int:
    return 5 if batch <= 16 else 2


def check_logits(y, x, w, b, params, plan):
    ref = he.reference.linear(x, w, b)
    assert np.array_equal(y.argmax(axis=1), ref.argmax(axis=1))
    compact = he.reference.compact_tolerance(params) if plan.layout == "coefficient" else 0.0
    assert (
        np.abs(y - ref).max() <= he.reference.linear_tolerance(params, w, x, plan, bias=b) + compact
    )


SETUP_IDS = [f"{layout}/{preset}" for layout, preset in SETUPS]
CASES = [
    (setup, batch)
    for setup in SETUP_IDS
    for batch in (COEFFICIENT_BATCHES if setup.startswith("coefficient") else BATCHES)
]


@pytest.mark.parametrize("setup, batch", CASES)
def test_hevit_end_to_end(benchmark, hevit_setups, registry, setup, batch):
    s = hevit_setups[setup]
    layout = s.layout
    x = make_features(batch)
    client_view = s.key_holder.public_context()
    sizes = {}

    def round_trip():
        upload = s.key_holder.encrypt(x, layout=layout).to_bytes()
        enc = he.EncryptedBatch.from_bytes(upload, s.server)
        # the coefficient layout replies compactly (what he-cls sends)
        reply_type = he.CompactBatch if layout == "coefficient" else he.EncryptedBatch
        reply = s.plan.apply_compact(enc) if layout == "coefficient" else s.plan.apply(enc)
        download = reply.to_bytes()
        logits = s.key_holder.decrypt(reply_type.from_bytes(download, client_view))
        sizes.update(up=len(upload), down=len(download))
        return logits

    y = benchmark.pedantic(round_trip, rounds=rounds_for(batch), iterations=1)
    check_logits(y, x, s.weights, s.bias, s.params, s.plan)
    benchmark.extra_info.update(
        layout=layout,
        preset=s.params.name,
        batch=batch,
        up_bytes_per_image=sizes["up"] / batch,
        down_bytes_per_image=sizes["down"] / batch,
        key_switches=s.plan.key_switches,
        server_key_bytes=len(s.server.to_bytes()),
    )
    registry.add(
        Row(
            f"hevit {setup}",
            "end-to-end",
            batch,
            benchmark,
            sizes["up"] / batch,
            sizes["down"] / batch,
        )
    )


@pytest.mark.parametrize("setup, batch", CASES)
def test_hevit_server_only(benchmark, hevit_setups, registry, setup, batch):
    s = hevit_setups[setup]
    layout = s.layout
    upload = s.key_holder.encrypt(make_features(batch), layout=layout).to_bytes()

    def serve():
        enc = he.EncryptedBatch.from_bytes(upload, s.server)
        return (
            s.plan.apply_compact(enc) if layout == "coefficient" else s.plan.apply(enc)
        ).to_bytes()

    benchmark.pedantic(serve, rounds=rounds_for(batch), iterations=1)
    benchmark.extra_info.update(layout=layout, batch=batch)
    registry.add(Row(f"hevit {setup}", "server", batch, benchmark))


@pytest.mark.parametrize("batch", sorted(set(BATCHES + COEFFICIENT_BATCHES)))
def test_numpy_floor(benchmark, registry, batch):
    w, b = make_head()
    x = make_features(batch)
    benchmark(lambda: x @ w.T + b)
    registry.add(Row("numpy (plaintext)", "end-to-end", batch, benchmark))


# ---- TenSEAL, the closest existing library (optional `bench` extra) --------------------------


@pytest.fixture(scope="module")
def tenseal_contexts():
    ts = pytest.importorskip("tenseal", reason="install the 'bench' extra to compare with TenSEAL")
    # TenSEAL's documented CKKS setting for a matmul: N=8192, [60, 40, 60], scale 2^40
    rotating = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[60, 40, 60])
    rotating.global_scale = 2**40
    rotating.generate_galois_keys()
    batched = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[60, 40, 60])
    batched.global_scale = 2**40
    server_rotating = ts.context_from(rotating.serialize(save_secret_key=False))
    server_batched = ts.context_from(batched.serialize(save_secret_key=False))
    return ts, rotating, server_rotating, batched, server_batched


def _tenseal_row(benchmark, registry, name, batch, up, down, w, x, b, y, server_ctx):
    ref = he.reference.linear(x, w, b)
    assert np.array_equal(np.asarray(y).argmax(axis=1), ref.argmax(axis=1))
    key_bytes = len(
        server_ctx.serialize(
            save_public_key=True, save_secret_key=False, save_galois_keys=True, save_relin_keys=True
        )
    )
    benchmark.extra_info.update(
        impl=name,
        batch=batch,
        up_bytes_per_image=up / batch,
        down_bytes_per_image=down / batch,
        server_key_bytes=key_bytes,
    )
    registry.add(
        Row(
            name,
            "end-to-end",
            batch,
            benchmark,
            up / batch,
            down / batch,
            extra={"server_key_bytes": key_bytes},
        )
    )


@pytest.mark.parametrize("batch", [1])
def test_tenseal_vector_matmul(benchmark, registry, tenseal_contexts, batch):
    """ckks_vector(x).matmul(W.T), one image per ciphertext (seconds per image: B=1 only)."""
    ts, ctx, server_ctx, _, _ = tenseal_contexts
    w, b = make_head()
    x = make_features(batch)
    sizes = {}

    def round_trip():
        out = []
        for row in x:
            up = ts.ckks_vector(ctx, row).serialize()
            enc = ts.ckks_vector_from(server_ctx, up)
            down = (enc.matmul(w.T) + b).serialize()
            out.append(ts.ckks_vector_from(ctx, down).decrypt())
            sizes.update(up=len(up) * batch, down=len(down) * batch)
        return out

    y = benchmark.pedantic(round_trip, rounds=1, iterations=1)
    _tenseal_row(
        benchmark,
        registry,
        "tenseal ckks_vector.matmul",
        batch,
        sizes["up"],
        sizes["down"],
        w,
        x,
        b,
        y,
        server_ctx,
    )


@pytest.mark.parametrize("batch", [1, 16])
def test_tenseal_enc_matmul(benchmark, registry, tenseal_contexts, batch):
    """enc_matmul_encoding(X) + enc_matmul_plain(w_k) per class, up to 4 images per encoding."""
    ts, ctx, server_ctx, _, _ = tenseal_contexts
    w, b = make_head()
    x = make_features(batch)
    chunk = 4
    sizes = {"up": 0, "down": 0}

    def round_trip():
        sizes.update(up=0, down=0)
        logits = []
        for start in range(0, batch, chunk):
            xs = x[start : start + chunk]
            up = ts.enc_matmul_encoding(ctx, xs).serialize()
            enc = ts.ckks_vector_from(server_ctx, up)
            cols = []
            for k in range(OUT_DIM):
                down = enc.enc_matmul_plain(w[k], len(xs)).serialize()
                sizes["down"] += len(down)
                cols.append(np.asarray(ts.ckks_vector_from(ctx, down).decrypt())[: len(xs)] + b[k])
            sizes["up"] += len(up)
            logits.append(np.stack(cols, axis=1))
        return np.vstack(logits)

    y = benchmark.pedantic(round_trip, rounds=2 if batch > 1 else 3, iterations=1)
    _tenseal_row(
        benchmark,
        registry,
        "tenseal enc_matmul",
        batch,
        sizes["up"],
        sizes["down"],
        w,
        x,
        b,
        y,
        server_ctx,
    )


@pytest.mark.parametrize("batch", [16, 256, 4096])
def test_tenseal_ckks_tensor_batched(benchmark, registry, tenseal_contexts, batch):
    """ckks_tensor(X, batch=True).reshape([1, 768]).mm(W.T): TenSEAL's fastest path at large B."""
    ts, _, _, ctx, server_ctx = tenseal_contexts
    w, b = make_head()
    x = make_features(batch)
    sizes = {}

    def round_trip():
        up = ts.ckks_tensor(ctx, x, batch=True).serialize()
        enc = ts.ckks_tensor_from(server_ctx, up)
        down = (enc.reshape([1, IN_DIM]).mm(w.T) + b.reshape(1, OUT_DIM).tolist()).serialize()
        y = np.asarray(ts.ckks_tensor_from(ctx, down).decrypt().tolist())
        sizes.update(up=len(up), down=len(down))
        return y.reshape(batch, OUT_DIM) if y.ndim != 2 or y.shape != (batch, OUT_DIM) else y

    y = benchmark.pedantic(round_trip, rounds=1, iterations=1)
    _tenseal_row(
        benchmark,
        registry,
        "tenseal ckks_tensor(batch)",
        batch,
        sizes["up"],
        sizes["down"],
        w,
        x,
        b,
        y,
        server_ctx,
    )


@pytest.fixture(scope="module")
def openfhe_peer(tmp_path_factory):
    """A process running benchmarks/peers/openfhe_linear.py under ``HEVIT_OPENFHE_PYTHON``.

    No ``openfhe`` wheel imports on hevit's CPython 3.11 (the index has CPython 3.10 builds and
    CPython >= 3.12 builds that need a newer libstdc++), so the peer runs in an interpreter that
    has it, e.g. ``python3.10 -m venv ofhe && ofhe/bin/pip install openfhe==1.6.1.0.22.4 numpy``.
    Without one the peer is reported as missing (skipped with this reason), never dropped.
    """
    python = os.environ.get("HEVIT_OPENFHE_PYTHON")
    if not python:
        pytest.skip(
            "OpenFHE peer missing: no openfhe wheel imports on this Python; set "
            "HEVIT_OPENFHE_PYTHON to an interpreter with openfhe (CPython 3.10 wheels exist)"
        )
    w, b = make_head()
    x = make_features(1)
    inputs = tmp_path_factory.mktemp("openfhe") / "inputs.npz"
    np.savez(inputs, w=w, b=b, x=x)
    process = subprocess.Popen(
        [python, str(Path(__file__).parent / "peers" / "openfhe_linear.py"), str(inputs)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    ready = json.loads(process.stdout.readline() or "{}")
    if not ready.get("ready"):
        process.kill()
        pytest.fail(f"the OpenFHE peer did not start under {python} (see its stderr above)")
    yield process, ready, w, b, x
    process.stdin.close()
    process.wait(timeout=60)


def test_openfhe_inner_product(benchmark, registry, openfhe_peer):
    """OpenFHE's EvalInnerProduct path at B = 1 (see benchmarks/peers/openfhe_linear.py), timed
    through the pipe to its process."""
    process, ready, w, b, x = openfhe_peer
    reply = {}

    def round_trip():
        process.stdin.write("run\n")
        process.stdin.flush()
        reply.update(json.loads(process.stdout.readline()))
        return np.asarray(reply["logits"])

    y = benchmark.pedantic(round_trip, rounds=5, iterations=1)
    ref = he.reference.linear(x, w, b)
    assert np.array_equal(y.argmax(axis=1), ref.argmax(axis=1))
    benchmark.extra_info.update(
        impl="openfhe EvalInnerProduct",
        ring_dim=ready["ring_dim"],
        max_abs_error=float(np.abs(y - ref).max()),
        server_key_bytes=ready["server_key_bytes"],
    )
    registry.add(
        Row(
            "openfhe EvalInnerProduct",
            "end-to-end",
            1,
            benchmark,
            reply["up"],
            reply["down"],
            extra={"server_key_bytes": ready["server_key_bytes"], "ring_dim": ready["ring_dim"]},
        )
    )

"""Core costs per 768-dim sample: encrypt (+ serialize) and decrypt (+ deserialize), every preset,
B = 1 and B = 4096 (batch layout) / B = 1 and 64 (sample layout). Bytes per sample go to
extra_info and the comparison table."""

from __future__ import annotations

import pytest

from hevit import he

from .conftest import IN_DIM, Row, make_features

CASES = [
    (preset, "batch", b) for preset in ("throughput", "single-row", "precise") for b in (1, 4096)
] + [(preset, "sample", b) for preset in ("latency", "single-row", "precise") for b in (1, 64)]


@pytest.fixture(scope="module")
def key_holders():
    return {name: he.SecretContext.generate(he.CkksParams.preset(name)) for name in he.PRESETS}


def _rows(params, layout, batch):
    return min(batch, params.poly_modulus_degree) if layout == "batch" else batch


@pytest.mark.parametrize("preset, layout, batch", CASES)
def test_encrypt_serialize(benchmark, key_holders, registry, preset, layout, batch):
    sk = key_holders[preset]
    rows = _rows(sk.params, layout, batch)
    x = make_features(rows)
    blob = benchmark.pedantic(
        lambda: sk.encrypt(x, layout=layout).to_bytes(), rounds=5 if rows < 100 else 2
    )
    benchmark.extra_info.update(
        preset=preset, layout=layout, batch=rows, bytes_per_sample=len(blob) / rows, dim=IN_DIM
    )
    registry.add(Row(f"encrypt {preset}/{layout}", "core", rows, benchmark, len(blob) / rows))


@pytest.mark.parametrize("preset, layout, batch", CASES)
def test_deserialize_decrypt(benchmark, key_holders, registry, preset, layout, batch):
    sk = key_holders[preset]
    rows = _rows(sk.params, layout, batch)
    blob = sk.encrypt(make_features(rows), layout=layout).to_bytes()
    pub = sk.public_context()
    benchmark.pedantic(
        lambda: sk.decrypt(he.EncryptedBatch.from_bytes(blob, pub)), rounds=5 if rows < 100 else 2
    )
    benchmark.extra_info.update(preset=preset, layout=layout, batch=rows)
    registry.add(Row(f"decrypt {preset}/{layout}", "core", rows, benchmark))

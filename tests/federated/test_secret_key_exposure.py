"""Every byte the server receives in a full run (all strategies, he-cls, public contexts,
checkpoints) is searched for the hospitals' secret keys."""

from __future__ import annotations

import base64
import json

import numpy as np

from hevit.features import FeatureSet
from hevit.federated import AggregationServer, FederatedConfig, FederationKeys, InferenceServer
from hevit.jobs import experiment as experiment_job

from .conftest import clustered_features


def secret_key_chunks(sk, count: int = 64, width: int = 16) -> list[bytes]:
    """Chunks of the secret-key polynomial as SecretContext bytes carry it (the blob after the
    public context: hevit's bit-packed key format)."""
    full, public = sk.to_bytes(), sk.public_context().to_bytes()
    start = full.find(public) + len(public) + 8  # skip the length prefix of the key blob
    key_data = full[start:]
    n = sk.params.poly_modulus_degree
    assert len(key_data) == sum(n * bits // 8 for bits in sk.params.coeff_modulus_bits)
    offsets = np.linspace(0, len(key_data) - width, count).astype(int)
    return [key_data[o : o + width] for o in offsets]


def test_server_never_receives_secret_key_bytes(tmp_path, monkeypatch):
    received: list[bytes] = []
    generated: list[FederationKeys] = []
    receive, handle, generate = (
        AggregationServer.receive,
        InferenceServer.handle,
        FederationKeys.generate,
    )

    def spy_receive(self, data):
        received.append(bytes(data))
        return receive(self, data)

    def spy_handle(self, data, **kw):
        received.append(bytes(data))
        return handle(self, data, **kw)

    def spy_generate(*args, **kw):
        keys = generate(*args, **kw)
        generated.append(keys)
        server_keys = keys.server_keys()
        received.extend(
            getattr(server_keys, name).to_bytes()
            for name in ("updates", "aggregation", "inference")
        )
        return keys

    monkeypatch.setattr(AggregationServer, "receive", spy_receive)
    monkeypatch.setattr(InferenceServer, "handle", spy_handle)
    monkeypatch.setattr(FederationKeys, "generate", staticmethod(spy_generate))
    x, y = clustered_features(3, rows=240, dim=48)
    features = FeatureSet(
        x.astype(np.float32), y, [str(i) for i in range(len(y))], ("a", "b", "c"), {}
    )
    report = experiment_job.run_experiment(
        features,
        config=FederatedConfig(rounds=2, local_epochs=1),
        checkpoint_dir=tmp_path,
        progress=False,
    )
    assert len(report.strategies) == 3 and len(generated) == 1
    for path in (tmp_path / "server").iterdir():  # checkpoints hold the aggregates in base64
        received.append(path.read_bytes())
        received.extend(
            base64.b64decode(s["aggregate"]) for s in json.loads(path.read_text())["completed"]
        )
    kinds = {bytes(m[:4]) for m in received}
    assert b"HVFM" in kinds and b"HEVT" in kinds  # messages and public contexts were both captured
    keys = generated[0]
    for sk in (keys.updates, keys.aggregation, keys.inference):
        chunks = secret_key_chunks(sk)
        # sanity: the search finds the key where it is (the hospitals' own key files)
        assert all(c in sk.to_bytes() for c in chunks)
        for blob in received:
            assert not any(c in blob for c in chunks)

"""The two-layer head trained under plain-fedavg and he-fedavg, evaluated by the server on
encrypted rows: encrypted predictions equal plaintext ones."""

from __future__ import annotations

import numpy as np
import pytest

from hevit import he
from hevit.federated import (
    FederatedConfig,
    FederationKeys,
    MlpHead,
    make_clients,
    normalize_rows,
    run_inference,
    run_strategy,
)

from .conftest import CLASSES, DIM


@pytest.fixture(scope="module")
def mlp_federation(federation):
    keys = FederationKeys.generate(
        inference_preset="single-row",
        inference_layout="batch",
        dim=DIM,
        classes=CLASSES,
        mlp_hidden=16,
    )
    return federation, keys, keys.server_keys()


def test_mlp_head_gradients_match_finite_differences(rng):
    head = MlpHead.initial(3, 6, 4, seed=1)
    x = normalize_rows(rng.standard_normal((5, 6)))
    y = rng.integers(0, 3, 5)

    def loss(h):
        z = h.logits(x)
        z = z - z.max(axis=1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(5), y]))

    # one full-batch SGD step without momentum history equals -lr * gradient
    lr = 1e-3
    stepped = head.fit(
        x,
        y,
        epochs=1,
        learning_rate=lr,
        batch_size=5,
        weight_decay=0.0,
        rng=np.random.default_rng(0),
    )
    grad = (head.to_vector() - stepped.to_vector()) / lr
    v = head.to_vector()
    for i in rng.choice(len(v), 12, replace=False):
        e = np.zeros_like(v)
        e[i] = 1e-6
        numeric = (loss(head.with_vector(v + e)) - loss(head.with_vector(v - e))) / 2e-6
        assert abs(numeric - grad[i]) <= 1e-5 * max(1.0, abs(numeric))


@pytest.mark.parametrize("strategy", ["plain-fedavg", "he-fedavg"])
def test_federated_mlp_encrypted_predictions_equal_plaintext(mlp_federation, strategy):
    federation, keys, server_keys = mlp_federation
    config = FederatedConfig(
        rounds=3, local_epochs=4, learning_rate=0.3, head="mlp", hidden=16, inference_layout="batch"
    )
    clients = make_clients(
        federation.x[federation.train],
        federation.y[federation.train],
        federation.parts,
        classes=CLASSES,
        keys=keys,
        config=config,
    )
    xt, yt = federation.x[federation.test], federation.y[federation.test]
    result = run_strategy(strategy, clients, server_keys, xt, yt, config, progress=False)
    head = result.head
    assert isinstance(head, MlpHead) and head.hidden == 16
    # the square activation learns the clustered classes
    assert result.final_accuracy > 1.0 / CLASSES + 0.3
    test_parts = [np.arange(k, len(xt), 3) for k in range(3)]
    record = run_inference(head, clients, server_keys, test_parts, xt, yt, config)
    assert record.head == "mlp" and record.preset == "mlp"
    assert record.agreement == 1.0
    assert (
        record.accuracy_encrypted
        == record.accuracy_plaintext
        == pytest.approx(result.final_accuracy)
    )
    rows = clients[0].preprocess(xt)
    plan = head.compile_plan(server_keys.mlp_inference, layout="batch")
    tol = he.reference.mlp_tolerance(
        keys.mlp_inference.params, head.w1, head.b1, head.w2, rows, plan
    )
    assert record.max_abs_logit_error <= tol


def test_mlp_keys_are_saved_and_served(tmp_path, mlp_federation):
    _, keys, server_keys = mlp_federation
    keys.save(tmp_path / "hospitals")
    server_keys.to_files(tmp_path / "server")
    again = FederationKeys.load(tmp_path / "hospitals")
    assert again.mlp_inference is not None and again.mlp_inference.public_context().relinearization
    served = type(server_keys).from_files(tmp_path / "server")
    assert served.mlp_inference.keyset_id == keys.mlp_inference.public_context().keyset_id
    assert served.for_head(MlpHead.initial(CLASSES, DIM, 16, seed=0)) is served.mlp_inference
    with pytest.raises(ValueError, match="no aggregation key set"):
        served.for_strategy("he-cls")

"""Strategy results against centralised plaintext computations, with tolerances derived from the
flooding policy and the CKKS noise of the release parameters."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hevit import he
from hevit.errors import QuorumError
from hevit.federated import (
    AggregationServer,
    DPConfig,
    FederatedConfig,
    LinearHead,
    centralized_ridge,
    make_clients,
    normalize_rows,
    run_inference,
    run_strategy,
)
from hevit.he.flooding import coefficient_flooding_sigma, flooding_value_sigma

from .conftest import CLASSES, DIM

FAST = dict(rounds=3, local_epochs=2)


def released_value_error(config: FederatedConfig, params, length: int, contributors: int) -> float:
    """Max abs error of one released (decrypted, flooded) aggregate value, in the units of the
    unscaled sum (times count_scale): the integer-domain flooding of every coefficient of the
    ``ceil(length / N)`` ciphertexts, decoded, plus the CKKS error of the sum."""
    ciphertexts = -(-length // params.poly_modulus_degree)
    sigma = coefficient_flooding_sigma(
        params, ciphertexts=ciphertexts, summands=contributors, policy=config.flooding
    )
    ckks = he.reference.sum_tolerance(params, contributors)
    return config.count_scale * (he.reference.SIGMAS * flooding_value_sigma(params, sigma) + ckks)


def direct_fedavg(clients, rounds: int, dropouts=None) -> list[LinearHead]:
    """FedAvg written out in numpy: count-weighted mean of the clients' local heads."""
    head = LinearHead.zeros(CLASSES, DIM)
    heads = []
    for r in range(1, rounds + 1):
        present = [c for c in clients if c.client_id not in (dropouts or {}).get(r, ())]
        locals_ = [c.local_train(head, r).to_vector() for c in present]
        counts = np.array([len(c.x) for c in present], dtype=float)
        head = LinearHead.from_vector(np.average(locals_, axis=0, weights=counts), CLASSES, DIM)
        heads.append(head)
    return heads


def test_plain_fedavg_is_fedavg(federation):
    config = FederatedConfig(**FAST)
    clients = federation.clients(config)
    result = run_strategy(
        "plain-fedavg",
        clients,
        None,
        federation.x[federation.test],
        federation.y[federation.test],
        config,
        progress=False,
    )
    expected = direct_fedavg(clients, config.rounds)[-1]
    # the only difference is float rounding of the 1 / count_scale scaling
    np.testing.assert_allclose(
        result.head.to_vector(), expected.to_vector(), rtol=1e-12, atol=1e-12
    )
    assert [r.round for r in result.rounds] == [1, 2, 3]
    assert result.final_accuracy == expected.accuracy(
        normalize_rows(federation.x[federation.test]), federation.y[federation.test]
    )


def test_he_fedavg_matches_plain_fedavg(federation):
    config = FederatedConfig(**FAST)
    xt, yt = federation.x[federation.test], federation.y[federation.test]
    plain = run_strategy(
        "plain-fedavg", federation.clients(config), None, xt, yt, config, progress=False
    )
    clients = federation.clients(config)
    encrypted = run_strategy(
        "he-fedavg", clients, federation.server_keys, xt, yt, config, progress=False
    )
    # round 1 starts from the same head, so the released model differs only by the released error
    params = federation.keys.updates.params
    length = CLASSES * DIM + CLASSES + 1
    n_total = sum(len(c.x) for c in clients)
    tol = (
        released_value_error(config, params, length, 3)
        / n_total
        * (1 + np.abs(plain.head.to_vector()).max())
    )
    first_plain = direct_fedavg(federation.clients(config), 1)[0]
    first_he = run_strategy(
        "he-fedavg",
        federation.clients(FederatedConfig(**{**FAST, "rounds": 1})),
        federation.server_keys,
        xt,
        yt,
        FederatedConfig(**{**FAST, "rounds": 1}),
        progress=False,
    ).head
    assert np.abs(first_he.to_vector() - first_plain.to_vector()).max() <= tol
    assert [r.accuracy for r in encrypted.rounds] == [r.accuracy for r in plain.rounds]
    assert encrypted.inference is None and encrypted.epsilon is None


def test_he_ridge_matches_centralized_ridge(federation):
    config = FederatedConfig()
    clients = federation.clients(config)
    xt, yt = federation.x[federation.test], federation.y[federation.test]
    result = run_strategy(
        "he-ridge", clients, federation.server_keys, xt, yt, config, progress=False
    )
    assert len(result.rounds) == 1
    x = normalize_rows(federation.x[federation.train])
    reference = centralized_ridge(
        x, federation.y[federation.train], CLASSES, alpha=config.ridge_alpha
    )
    # perturbation bound of (A + alpha I) W = B with every released entry off by at most delta
    d = DIM + 1
    length = d * (d + 1) // 2 + d * CLASSES
    delta = released_value_error(config, federation.keys.aggregation.params, length, 3)
    xa = np.hstack([x, np.ones((len(x), 1))])
    lam_min = np.linalg.eigvalsh(xa.T @ xa + config.ridge_alpha * np.eye(d))[0]
    w_norm = np.linalg.norm(np.hstack([reference.weights, reference.bias[:, None]]))
    bound = (delta * math.sqrt(d * CLASSES) + delta * d * w_norm) / lam_min
    diff = np.abs(result.head.to_vector() - reference.to_vector()).max()
    assert diff <= bound, (diff, bound)
    assert result.final_accuracy == reference.accuracy(normalize_rows(xt), yt)


def test_he_cls_predictions_equal_plaintext_predictions(federation):
    config = FederatedConfig(inference_preset="single-row", inference_layout="sample")
    clients = federation.clients(config)
    xt, yt = federation.x[federation.test], federation.y[federation.test]
    head = run_strategy(
        "he-ridge", clients, federation.server_keys, xt, yt, config, progress=False
    ).head
    test_parts = [np.arange(k, len(xt), 3) for k in range(3)]
    record = run_inference(head, clients, federation.server_keys, test_parts, xt, yt, config)
    assert record.agreement == 1.0
    assert record.accuracy_encrypted == record.accuracy_plaintext
    plan = he.LinearPlan.compile(
        federation.server_keys.inference, head.weights, head.bias, layout="sample"
    )
    tol = he.reference.linear_tolerance(
        federation.keys.inference.params, head.weights, normalize_rows(xt), plan
    )
    assert record.max_abs_logit_error <= tol
    assert record.rows == len(xt) and record.bytes_up_per_image > 0
    assert record.rows_per_layout == {"sample": len(xt)}


def test_he_cls_auto_layout_serves_small_requests_in_the_coefficient_layout(federation):
    """auto: few rows per request go out in the coefficient layout and come back compact; the
    predictions still equal the plaintext ones."""
    from hevit.federated import FederationKeys

    keys = FederationKeys.generate(
        inference_preset="latency", inference_layout="auto", dim=DIM, classes=CLASSES
    )
    config = FederatedConfig()
    assert config.inference_layout == "auto" and config.inference_preset == "latency"
    clients = make_clients(
        federation.x[federation.train],
        federation.y[federation.train],
        federation.parts,
        classes=CLASSES,
        keys=keys,
        config=config,
    )
    xt, yt = federation.x[federation.test], federation.y[federation.test]
    head = run_strategy("plain-fedavg", clients, None, xt, yt, config, progress=False).head
    test_parts = [np.arange(k, len(xt), 3) for k in range(3)]
    record = run_inference(head, clients, keys.server_keys(), test_parts, xt, yt, config)
    assert record.rows_per_layout == {"coefficient": len(xt)}
    assert record.agreement == 1.0 and record.key_switches == 0
    plan = he.LinearPlan.compile(
        keys.server_keys().inference, head.weights, head.bias, layout="coefficient"
    )
    tol = he.reference.linear_tolerance(
        keys.inference.params, head.weights, normalize_rows(xt), plan
    )
    assert record.max_abs_logit_error <= tol + he.reference.compact_tolerance(keys.inference.params)
    assert record.bytes_down_per_image < 16_384


def test_bytes_accounted_are_the_lengths_sent(federation, monkeypatch):
    sent_up: dict[tuple[int, str], int] = {}
    sent_down: dict[int, int] = {}
    receive, close = AggregationServer.receive, AggregationServer.close_round

    def spy_receive(self, data):
        from hevit.federated import Message

        msg = Message.from_bytes(data)
        sent_up[(msg.round, msg.sender)] = len(data)
        return receive(self, data)

    def spy_close(self):
        out = close(self)
        sent_down[self.round] = len(out)
        return out

    monkeypatch.setattr(AggregationServer, "receive", spy_receive)
    monkeypatch.setattr(AggregationServer, "close_round", spy_close)
    config = FederatedConfig(**FAST)
    result = run_strategy(
        "he-fedavg",
        federation.clients(config),
        federation.server_keys,
        federation.x[federation.test],
        federation.y[federation.test],
        config,
        progress=False,
    )
    for record in result.rounds:
        for client, size in record.bytes_up.items():
            assert size == sent_up[(record.round, client)]
        assert set(record.bytes_down.values()) == {sent_down[record.round]}
        assert record.total_bytes == sum(record.bytes_up.values()) + 3 * sent_down[record.round]


@pytest.mark.parametrize("strategy", ["plain-fedavg", "he-fedavg"])
def test_client_dropping_out_mid_round(federation, strategy):
    config = FederatedConfig(**FAST, quorum=2)
    clients = federation.clients(config)
    dropouts = {2: {"client-1"}}
    keys = None if strategy == "plain-fedavg" else federation.server_keys
    result = run_strategy(
        strategy,
        clients,
        keys,
        federation.x[federation.test],
        federation.y[federation.test],
        config,
        dropouts=dropouts,
        progress=False,
    )
    assert result.rounds[1].contributors == ["client-0", "client-2"]
    assert result.rounds[1].dropped == ["client-1"]
    assert "client-1" not in result.rounds[1].bytes_up
    expected = direct_fedavg(clients, config.rounds, dropouts)[-1]
    if strategy == "plain-fedavg":
        np.testing.assert_allclose(
            result.head.to_vector(), expected.to_vector(), rtol=1e-12, atol=1e-12
        )
    else:  # equal up to the released error, which leaves every prediction unchanged
        xt = normalize_rows(federation.x[federation.test])
        np.testing.assert_array_equal(result.head.predict(xt), expected.predict(xt))


def test_quorum_violation_fails_the_round_clearly(federation):
    config = FederatedConfig(**FAST)  # quorum None: every client is required
    with pytest.raises(
        QuorumError, match=r"round 2: 2 valid contribution\(s\).*quorum is 3.*client-1"
    ):
        run_strategy(
            "he-fedavg",
            federation.clients(config),
            federation.server_keys,
            federation.x[federation.test],
            federation.y[federation.test],
            config,
            dropouts={2: {"client-1"}},
            progress=False,
        )


def test_differential_privacy_noise_and_epsilon(federation):
    dp = DPConfig(noise_multiplier=1.0, clip_norm=0.5)
    config = FederatedConfig(rounds=1, local_epochs=1, dp=dp)
    xt, yt = federation.x[federation.test], federation.y[federation.test]
    clients = federation.clients(config)
    head0 = LinearHead.zeros(CLASSES, DIM)
    # the clipped deltas without noise, computed directly
    deltas = []
    for c in clients:
        d = c.local_train(head0, 1).to_vector()
        deltas.append(d * min(1.0, dp.clip_norm / np.linalg.norm(d)))
    noiseless = np.mean(deltas, axis=0)
    result = run_strategy("plain-fedavg", clients, None, xt, yt, config, progress=False)
    noise = (result.head.to_vector() - noiseless) * 3 / (dp.noise_multiplier * dp.clip_norm)
    # the summed noise shares are N(0, (z C)^2): standardised, ~300 draws have std 1 +- 15%
    assert 0.85 < float(np.std(noise)) < 1.15
    assert abs(float(np.mean(noise))) < 0.25
    assert result.epsilon is not None and result.epsilon > 0
    more_rounds = run_strategy(
        "plain-fedavg",
        federation.clients(FederatedConfig(rounds=3, local_epochs=1, dp=dp)),
        None,
        xt,
        yt,
        FederatedConfig(rounds=3, local_epochs=1, dp=dp),
        progress=False,
    )
    assert more_rounds.epsilon > result.epsilon
    ridge = run_strategy(
        "he-ridge",
        federation.clients(config),
        federation.server_keys,
        xt,
        yt,
        config,
        progress=False,
    )
    assert ridge.epsilon == pytest.approx(result.epsilon)  # one Gaussian release each

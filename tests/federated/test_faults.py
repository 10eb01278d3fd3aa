"""Federated faults: whatever a client sends, the server keeps working, rejects what it must with a
logged reason, and never folds bad data into an aggregate."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from hevit import he
from hevit.errors import ProtocolError, SecretKeyRequiredError
from hevit.federated import (
    AggregationServer,
    FederatedConfig,
    FederationKeys,
    LinearHead,
    Message,
    ServerKeys,
)
from hevit.federated.vectors import decrypt_vector

from .conftest import CLASSES, DIM


@pytest.fixture
def setup(federation):
    config = FederatedConfig(rounds=2, local_epochs=1)
    clients = federation.clients(config)
    server = AggregationServer(
        "he-fedavg",
        federation.server_keys.updates,
        clients=[c.client_id for c in clients],
        quorum=2,
    )
    return config, clients, server


def honest_sum(clients, r, head):
    return sum(c.fedavg_contribution(head, r) for c in clients)


def test_hostile_messages_are_rejected_and_never_aggregated(federation, setup, caplog):
    config, clients, server = setup
    head = LinearHead.zeros(CLASSES, DIM)
    r = server.open_round()
    good = [c.update_message("he-fedavg", head, r) for c in clients[:2]]
    other_keys = FederationKeys.generate(
        aggregation_preset="release",
        inference_preset="single-row",
        inference_layout="sample",
        dim=DIM,
        classes=CLASSES,
    )
    stranger = type(clients[2])(
        "client-2",
        clients[2].raw,
        clients[2].y,
        classes=CLASSES,
        keys=other_keys,
        config=config,
        clients=3,
    )
    foreign = stranger.update_message("he-fedavg", head, r)
    forged = Message.from_bytes(foreign)
    forged = Message(
        forged.kind,
        forged.strategy,
        forged.round,
        forged.sender,
        federation.server_keys.updates.keyset_id.hex(),
        forged.blobs,
    ).to_bytes()
    tampered = bytearray(good[1])
    tampered[-100] ^= 0x01
    msg0 = Message.from_bytes(good[0])
    hostile = {
        "unknown client": Message(
            msg0.kind, msg0.strategy, r, "client-9", msg0.keyset_id, msg0.blobs
        ).to_bytes(),
        "future round": Message(
            msg0.kind, msg0.strategy, r + 1, "client-2", msg0.keyset_id, msg0.blobs
        ).to_bytes(),
        "stale round": Message(
            msg0.kind, msg0.strategy, 0, "client-2", msg0.keyset_id, msg0.blobs
        ).to_bytes(),
        "wrong strategy": Message(
            msg0.kind, "he-ridge", r, "client-2", msg0.keyset_id, msg0.blobs
        ).to_bytes(),
        "other key set (header)": foreign,
        "other key set (forged header)": forged,
        "tampered ciphertext": bytes(tampered),
        "truncated": good[1][: len(good[1]) // 2],
        "plaintext in an HE round": Message(
            "update", "he-fedavg", r, "client-2", msg0.keyset_id, {"update": np.ones(10)}
        ).to_bytes(),
        "not a message": b"\x00" * 64,
    }
    assert server.receive(good[0])
    with caplog.at_level(logging.WARNING, logger="hevit.federated.server"):
        for name, data in hostile.items():
            assert not server.receive(data), name
        assert not server.receive(good[0])  # replay of an accepted message in the same round
    assert server.receive(good[1])
    assert len(server.rejections) == len(hostile) + 1
    reasons = " ".join(r.reason for r in server.rejections)
    for fragment in (
        "unknown client",
        "stale or future round",
        "another key set",
        "duplicate contribution",
        "checksum",
        "plaintext",
    ):
        assert fragment in reasons, fragment
    assert (
        len([rec for rec in caplog.records if "rejected" in rec.getMessage()]) == len(hostile) + 1
    )
    aggregate = Message.from_bytes(server.close_round())
    assert aggregate.meta["contributors"] == 2
    assert server.completed[-1].dropped == ["client-2"]
    # the aggregate is exactly the two honest contributions (within the CKKS sum tolerance)
    batch = he.EncryptedBatch.from_bytes(
        aggregate.blobs["sum"], federation.keys.updates.public_context()
    )
    length = CLASSES * DIM + CLASSES + 1
    total = decrypt_vector(federation.keys.updates, batch, length)
    expected = honest_sum(clients[:2], r, head)
    assert np.abs(total - expected).max() <= he.reference.sum_tolerance(
        federation.keys.updates.params, 2
    )


def test_replay_of_an_earlier_round_is_rejected(setup):
    _config, clients, server = setup
    head = LinearHead.zeros(CLASSES, DIM)
    r1 = server.open_round()
    first = [c.update_message("he-fedavg", head, r1) for c in clients]
    assert all(server.receive(m) for m in first)
    server.close_round()
    r2 = server.open_round()
    assert r2 == 2
    assert not server.receive(first[0])
    assert "stale or future round 1" in server.rejections[-1].reason
    assert server.receive(clients[0].update_message("he-fedavg", head, r2))


def test_server_side_objects_refuse_secret_contexts(federation):
    with pytest.raises(SecretKeyRequiredError):
        AggregationServer("he-fedavg", federation.keys.updates, clients=["a"])
    with pytest.raises(SecretKeyRequiredError):
        ServerKeys(
            federation.server_keys.updates,
            federation.keys.aggregation,
            federation.server_keys.inference,
        )
    with pytest.raises(ValueError, match="needs the federation's PublicContext"):
        AggregationServer("he-ridge", None, clients=["a"])


def test_clients_refuse_aggregates_from_the_wrong_round_or_key_set(federation, setup):
    config, clients, server = setup
    head = LinearHead.zeros(CLASSES, DIM)
    r = server.open_round()
    for c in clients:
        server.receive(c.update_message("he-fedavg", head, r))
    aggregate = server.close_round()
    with pytest.raises(ProtocolError, match="round 2"):
        clients[0].read_fedavg_aggregate(aggregate, "he-fedavg", head, r + 1)
    other = FederationKeys.generate(
        aggregation_preset="release",
        inference_preset="single-row",
        inference_layout="sample",
        dim=DIM,
        classes=CLASSES,
    )
    outsider = type(clients[0])(
        "client-0",
        clients[0].raw,
        clients[0].y,
        classes=CLASSES,
        keys=other,
        config=config,
        clients=3,
    )
    with pytest.raises(ProtocolError, match="another key set"):
        outsider.read_fedavg_aggregate(aggregate, "he-fedavg", head, r)


EXAMPLES = int(__import__("os").environ.get("HEVIT_FUZZ_EXAMPLES", "60"))


@pytest.fixture(scope="module")
def honest_update(federation):
    config = FederatedConfig(rounds=1, local_epochs=1)
    clients = federation.clients(config)
    head = LinearHead.zeros(CLASSES, DIM)
    return clients[0].update_message("he-fedavg", head, 1), clients[0].fedavg_contribution(head, 1)


def test_fuzzed_updates_never_crash_the_server_or_reach_the_aggregate(
    federation, honest_update, capsys
):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    data, vector = honest_update
    tol = he.reference.sum_tolerance(federation.keys.updates.params, 1)
    outcomes = {"rejected": 0, "accepted intact": 0}

    @settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.data())
    def run(draw):
        raw = bytearray(data)
        for _ in range(draw.draw(st.integers(1, 3))):
            pos = draw.draw(st.integers(0, len(raw) - 1))
            raw[pos] ^= draw.draw(st.integers(1, 255))
        server = AggregationServer(
            "he-fedavg",
            federation.server_keys.updates,
            clients=["client-0", "client-1", "client-2"],
            quorum=1,
        )
        server.open_round()
        if not server.receive(bytes(raw)):
            assert server.rejections and server.rejections[-1].reason
            outcomes["rejected"] += 1
            return
        # accepted: the edit must have left the contribution itself intact (e.g. header metadata)
        msg = Message.from_bytes(server.close_round())
        batch = he.EncryptedBatch.from_bytes(
            msg.blobs["sum"], federation.keys.updates.public_context()
        )
        total = decrypt_vector(federation.keys.updates, batch, len(vector))
        assert np.abs(total - vector).max() <= tol
        outcomes["accepted intact"] += 1

    run()
    with capsys.disabled():
        print(f"\nfuzzed updates: {outcomes}")

"""Federated faults: whatever a client sends, the server keeps working, rejects what it must with a
logged reason, and never folds bad data into an aggregate."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from hevit import he
from hevit.errors import ProtocolError, SecretKeyRefusedError
from hevit.federated import (
    AggregationServer,
    FederatedConfig,
    FederationKeys,
    LinearHead,
    Message,
    ServerKeys,
    make_clients,
)
from hevit.federated.vectors import decrypt_vector

from .conftest import CLASSES, DIM

#: a linear head's FedAvg contribution: weights, bias and the row count
LENGTH = CLASSES * DIM + CLASSES + 1


@pytest.fixture
def setup(federation):
    config = FederatedConfig(rounds=2, local_epochs=1)
    clients = federation.clients(config)
    server = AggregationServer(
        "he-fedavg",
        federation.server_keys.updates,
        clients=[c.client_id for c in clients],
        quorum=2,
        expected_length=LENGTH,
    )
    return config, clients, server


def outsider(clients, k, keys, config):
    """Client ``k``'s rows under another federation's keys and a fresh identity and roster."""
    return make_clients(
        clients[k].raw,
        clients[k].y,
        [np.arange(len(clients[k].y))] * (k + 1),
        classes=CLASSES,
        keys=keys,
        config=config,
    )[k]


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
    stranger = outsider(clients, 2, other_keys, config)
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


def test_a_message_under_another_hospitals_id_is_rejected(federation, setup):
    """Where the transport authenticates the sender (a Flower node's described id), a message
    claiming another id is rejected and recorded; the real sender's own message still counts.
    The same holds for he-cls requests."""
    from hevit.federated import InferenceServer

    _config, clients, server = setup
    head = LinearHead.zeros(CLASSES, DIM)
    r = server.open_round()
    impersonation = clients[1].update_message("he-fedavg", head, r)
    assert not server.receive(impersonation, expected_sender="client-0")
    assert "claiming to be from 'client-1' arrived from 'client-0'" in server.rejections[-1].reason
    assert server.receive(
        clients[0].update_message("he-fedavg", head, r), expected_sender="client-0"
    )
    assert server.receive(impersonation, expected_sender="client-1")
    server.close_round()
    assert server.completed[-1].contributors == ["client-0", "client-1"]

    inference = InferenceServer(
        federation.server_keys.inference,
        LinearHead(np.full((CLASSES, DIM), 0.01), np.zeros(CLASSES)),
        layout="sample",
    )
    keys = federation.keys
    rows = np.full((2, DIM), 1.0 / np.sqrt(DIM))
    request = Message(
        "infer-request",
        "he-cls",
        0,
        "client-1",
        keys.inference.public_context().keyset_id.hex(),
        {
            "features": keys.inference.encrypt(rows, layout="sample").to_bytes(),
            "context": keys.inference.public_context().to_bytes(),
        },
    ).to_bytes()
    with pytest.raises(ProtocolError, match="claiming to be from 'client-1'"):
        inference.handle(request, expected_sender="client-2")
    assert (
        Message.from_bytes(inference.handle(request, expected_sender="client-1")).kind
        == "infer-reply"
    )


def test_server_side_objects_refuse_secret_contexts(federation):
    with pytest.raises(SecretKeyRefusedError):
        AggregationServer(
            "he-fedavg", federation.keys.updates, clients=["a"], expected_length=LENGTH
        )
    with pytest.raises(SecretKeyRefusedError):
        ServerKeys(
            federation.server_keys.updates,
            federation.keys.aggregation,
            federation.server_keys.inference,
        )
    with pytest.raises(ValueError, match="needs the federation's PublicContext"):
        AggregationServer("he-ridge", None, clients=["a"], expected_length=LENGTH)


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
    with pytest.raises(ProtocolError, match="another key set"):
        outsider(clients, 0, other, config).read_fedavg_aggregate(aggregate, "he-fedavg", head, r)


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
            expected_length=LENGTH,
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


# ---------------------------------------------------------------------------------- hostile rounds
def _rewrite_batch(data: bytes, edit) -> bytes:
    """A client's update message with its ciphertext's payload edited by ``edit(bytearray)`` and
    the checksum recomputed (a checksum is not a MAC: a hostile client forges it)."""
    from tests.he.test_wire_fuzz import with_checksum

    msg = Message.from_bytes(data)
    blob = bytearray(msg.blobs["update"])
    edit(blob)
    msg.blobs["update"] = with_checksum(bytes(blob))
    return msg.to_bytes()


def _scale_nudge(blob: bytearray) -> None:
    import struct

    offset = 64 + 4 + 4 + 24  # wire header, then layout/seeds/reserved, primes, rows/cols/period
    (scale,) = struct.unpack_from("<d", blob, offset)
    struct.pack_into("<d", blob, offset, scale * (1 + 1e-7))


def test_a_nudged_scale_is_rejected_and_never_stalls_the_round(setup, caplog):
    """Changing the scale by one part in 10^7 made close_round fail on every attempt; the
    server now checks the scale before accepting, logs why, and the round completes."""
    _config, clients, server = setup
    head = LinearHead.zeros(CLASSES, DIM)
    r = server.open_round()
    hostile = _rewrite_batch(clients[0].update_message("he-fedavg", head, r), _scale_nudge)
    with caplog.at_level(logging.WARNING):
        assert not server.receive(hostile)
    assert "scale" in server.rejections[-1].reason and "rejected" in caplog.text
    for c in clients[1:]:
        assert server.receive(c.update_message("he-fedavg", head, r))
    aggregate = server.close_round()
    assert Message.from_bytes(aggregate).meta["contributors"] == 2
    assert server.open_round() == r + 1


def test_the_first_contribution_cannot_fix_the_round_shape(federation, setup):
    """A 1 x 1 batch sent first is rejected; every honest client is still accepted."""
    _config, clients, server = setup
    head = LinearHead.zeros(CLASSES, DIM)
    r = server.open_round()
    tiny = federation.keys.updates.encrypt(np.zeros((1, 1)), layout="batch").to_bytes()
    msg = Message.from_bytes(clients[0].update_message("he-fedavg", head, r))
    msg.blobs["update"] = tiny
    assert not server.receive(msg.to_bytes())
    assert "rows 1" in server.rejections[-1].reason
    assert all(server.receive(c.update_message("he-fedavg", head, r)) for c in clients)


def test_many_seeds_are_rejected_before_any_seed_is_expanded(federation, setup, monkeypatch):
    """255 seeds per ciphertext cost ~100x an honest message to expand: the header says so, and
    the server refuses it without loading (from_bytes is never reached)."""
    _config, clients, server = setup
    head = LinearHead.zeros(CLASSES, DIM)
    r = server.open_round()
    fresh = [
        federation.keys.updates.encrypt(np.zeros((LENGTH, 1)), layout="batch") for _ in range(255)
    ]
    many = he.EncryptedBatch.sum(fresh)
    assert many.seed_count == 255
    msg = Message.from_bytes(clients[0].update_message("he-fedavg", head, r))
    msg.blobs["update"] = many.to_bytes()

    def must_not_load(*args, **kwargs):
        raise AssertionError("the server loaded a contribution its header already disqualified")

    monkeypatch.setattr(he.EncryptedBatch, "from_bytes", must_not_load)
    assert not server.receive(msg.to_bytes())
    assert "seed_count 255" in server.rejections[-1].reason


def test_a_round_that_fails_to_aggregate_rolls_back_and_can_be_retried(setup, monkeypatch):
    _config, clients, server = setup
    head = LinearHead.zeros(CLASSES, DIM)
    r = server.open_round()
    for c in clients:
        assert server.receive(c.update_message("he-fedavg", head, r))
    real_sum = he.EncryptedBatch.sum

    def failing_sum(batches, **kwargs):
        raise he_errors.ContextMismatchError("injected")

    from hevit import errors as he_errors

    monkeypatch.setattr(he.EncryptedBatch, "sum", staticmethod(failing_sum))
    with pytest.raises(ProtocolError, match=r"failed to aggregate.*round stays open"):
        server.close_round()
    assert server.round == r and not server.completed
    monkeypatch.setattr(he.EncryptedBatch, "sum", staticmethod(real_sum))
    for c in clients:  # the clients resend: nothing of the failed attempt is kept
        assert server.receive(c.update_message("he-fedavg", head, r))
    assert Message.from_bytes(server.close_round()).meta["contributors"] == len(clients)


def test_every_header_field_edit_is_rejected_and_the_round_still_closes(setup):
    """Hypothesis over the batch header fields a hostile client can set (with a forged
    checksum): each edit is rejected with a reason, and the honest contributions still sum."""
    import struct

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    _config, clients, _ = setup
    head = LinearHead.zeros(CLASSES, DIM)
    honest = {c.client_id: c.update_message("he-fedavg", head, 1) for c in clients}
    # (offset in the payload after the wire header, struct format) of each header field
    fields = [
        (0, "<B"),
        (1, "<B"),
        (4, "<I"),
        (8, "<Q"),
        (16, "<Q"),
        (24, "<Q"),
        (32, "<d"),
        (40, "<d"),
        (48, "<Q"),
    ]

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(fields), st.integers(0, 2**64 - 1), st.floats(allow_nan=True))
    def run(field, integer, real):
        offset, fmt = field
        size = struct.calcsize(fmt)

        def edit(blob):
            old = struct.unpack_from(fmt, blob, 64 + offset)[0]
            new = real if fmt == "<d" else integer % (256**size)
            if new == old or (fmt == "<d" and new != new and old != old):
                new = old + 1 if fmt != "<d" else old * 2 + 1
            struct.pack_into(fmt, blob, 64 + offset, new)

        server = AggregationServer(
            "he-fedavg",
            clients[0].keys.updates.public_context(),
            clients=[c.client_id for c in clients],
            quorum=2,
            expected_length=LENGTH,
        )
        server.open_round()
        assert not server.receive(_rewrite_batch(honest[clients[0].client_id], edit))
        assert server.rejections[-1].reason
        for c in clients[1:]:
            assert server.receive(honest[c.client_id])
        assert Message.from_bytes(server.close_round()).meta["contributors"] == 2

    run()


def test_inference_server_checks_the_request_header_before_loading(federation, monkeypatch):
    """A request that is not one fresh encryption (here: a sum carrying two seeds) is refused
    from its header; it is never loaded, and the plan never runs on it."""
    from hevit.federated import InferenceServer

    keys = federation.keys
    head = LinearHead(np.ones((CLASSES, DIM)) * 0.01, np.zeros(CLASSES))
    server = InferenceServer(federation.server_keys.inference, head, layout="sample")
    rows = np.full((2, DIM), 1.0 / np.sqrt(DIM))
    two = he.EncryptedBatch.sum([keys.inference.encrypt(rows, layout="sample") for _ in range(2)])
    request = Message(
        "infer-request",
        "he-cls",
        0,
        "client-0",
        keys.inference.public_context().keyset_id.hex(),
        {"features": two.to_bytes(), "context": keys.inference.public_context().to_bytes()},
    )
    monkeypatch.setattr(
        he.EncryptedBatch, "from_bytes", lambda *a, **k: pytest.fail("loaded a refused request")
    )
    with pytest.raises(ProtocolError, match=r"fresh encryption.*2 seeds"):
        server.handle(request.to_bytes())


def test_a_flood_of_junk_keeps_the_audit_bounded_and_the_round_open(federation):
    """A client that sends thousands of bad messages grows neither the rejection list nor the
    received-kinds audit past audit_limit; the totals still count everything and honest
    contributions still close the round."""
    clients = federation.clients(FederatedConfig(rounds=1, local_epochs=1))
    server = AggregationServer(
        "he-fedavg",
        federation.server_keys.updates,
        clients=[c.client_id for c in clients],
        expected_length=LENGTH,
        audit_limit=50,
    )
    head = LinearHead.zeros(CLASSES, DIM)
    r = server.open_round()
    stale = clients[0].update_message("he-fedavg", head, r + 7)  # parses, then is rejected
    for k in range(400):
        assert not server.receive(stale if k % 2 else b"junk" * k)
    assert len(server.rejections) == 50 and server.rejected_total == 400
    assert len(server.received_kinds) == 50 and server.received_total == 200
    assert all(server.receive(c.update_message("he-fedavg", head, r)) for c in clients)
    server.close_round()
    assert server.received_total == 200 + len(clients)

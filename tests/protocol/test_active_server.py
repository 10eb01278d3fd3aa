"""The attacks of an active server (issue: a server that learns only the aggregate), each shown
succeeding against a key holder without the protocol core's checks and failing against it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from hevit import _core, he
from hevit.attacks.key_recovery import decrypts_correctly
from hevit.errors import DecryptionBudgetError, VerificationError
from hevit.federated import FederatedConfig, FederationKeys, make_clients
from hevit.federated.client import fedavg_vector_length
from hevit.federated.messages import Message
from hevit.federated.models import initial_head
from hevit.federated.server import AggregationServer
from hevit.federated.simulation import federation_roster
from hevit.he.flooding import FloodingPolicy, coefficient_flooding_sigma, flooding_value_sigma
from hevit.protocol import ContributionStatement, HospitalIdentity, Roster

CLASSES, DIM = 3, 16


@pytest.fixture(scope="module")
def keys():
    return FederationKeys.generate(dim=DIM, classes=CLASSES)


def federation(keys, rng, *, quorum=None, clients=3):
    x = rng.standard_normal((30 * clients, DIM))
    y = np.arange(len(x)) % CLASSES
    parts = np.array_split(rng.permutation(len(x)), clients)
    config = FederatedConfig(rounds=2, quorum=quorum, standardize=False)
    return make_clients(x, y, parts, classes=CLASSES, keys=keys, config=config), config


def honest_round(clients, keys, *, session="s"):
    """Round 1 of he-fedavg in ``session``: the honest server's aggregate of every hospital."""
    head = initial_head("linear", CLASSES, DIM)
    server = AggregationServer(
        "he-fedavg",
        keys.server_keys().updates,
        clients=[c.client_id for c in clients],
        quorum=federation_roster(clients).quorum,
        expected_length=fedavg_vector_length(head),
        roster=federation_roster(clients),
        session=session,
    )
    for c in clients:
        c.session = session
    server.open_round()
    for c in clients:
        assert server.receive(c.update_message("he-fedavg", head, 1))
    return head, Message.from_bytes(server.close_round())


def forged(aggregate: Message, batch: bytes, **meta) -> bytes:
    return dataclasses.replace(
        aggregate, blobs={"sum": batch}, meta={**aggregate.meta, **meta}
    ).to_bytes()


def test_a_crafted_aggregate_reveals_the_key_without_verification_and_is_refused(keys, rng):
    clients, _ = federation(keys, rng)
    head, aggregate = honest_round(clients, keys)
    sk = keys.updates
    pub = keys.server_keys().updates
    n = pub.params.poly_modulus_degree
    # the server's own public-key encryption of zeros, with amount * X^0 added to c1: its
    # decryption carries amount * s, far above flooding sized for an honest sum
    amount = 2**42  # below the first prime (44 bits), far above the flooding (2^36)
    zeros = pub.encrypt(np.zeros((n, 1)), layout="batch")
    crafted = he.EncryptedBatch(_core.inspection.shift_c1(zeros._core, 0, amount))

    # positive control: a key holder that decrypts whatever it is sent, flooded at the honest
    # sum's sigma, gives the server the whole secret key
    sigma = coefficient_flooding_sigma(
        sk.params, ciphertexts=1, summands=3, policy=FloodingPolicy()
    )
    released = sk.decrypt_flooded(crafted, sigma=sigma, noise_key=bytes(32))
    q = int(_core.inspection.first_prime(pub._core))
    coeffs = _core.inspection.plaintext_coefficients(pub._core, released, "batch", 0)
    centred = np.array([int(c) - q if int(c) > q // 2 else int(c) for c in coeffs])
    key = np.rint(centred / amount).astype(np.int64)
    assert set(np.unique(key)) <= {-1, 0, 1}
    x2 = rng.uniform(-1, 1, (n, 1))
    other = he.EncryptedBatch.from_bytes(sk.encrypt(x2, layout="batch").to_bytes(), pub)
    bound = 7 * he.reference.coefficient_noise_std(sk.params) * 2.0**sk.params.scale_bits
    assert decrypts_correctly(key, other, x2, noise_bound=bound)
    assert not decrypts_correctly(rng.integers(-1, 2, n), other, x2, noise_bound=bound)

    # the key holder: the honest round's signed statements attached to the crafted ciphertext
    # (or to a copy of it with the right shape), refused before anything is decrypted
    calls = []
    original = he.SecretContext.decrypt_flooded
    try:
        he.SecretContext.decrypt_flooded = lambda *a, **k: calls.append(1) or original(*a, **k)
        for batch in (
            crafted,
            he.EncryptedBatch(
                _core.inspection.shift_c1(
                    he.EncryptedBatch.from_bytes(aggregate.blobs["sum"], pub)._core, 0, amount
                )
            ),
        ):
            for c in clients:
                with pytest.raises(VerificationError):
                    c.read_fedavg_aggregate(
                        forged(aggregate, batch.to_bytes()), "he-fedavg", head, 1
                    )
    finally:
        he.SecretContext.decrypt_flooded = original
    assert calls == []


def test_aggregates_that_are_not_the_signed_contributions_are_refused(keys, rng):
    clients, _ = federation(keys, rng, quorum=2)
    head, aggregate = honest_round(clients, keys)
    statements, signatures = aggregate.meta["statements"], aggregate.meta["signatures"]
    stranger = HospitalIdentity.generate("client-1")
    attacks = {
        # a seeded ciphertext under another key set (the server's own key)
        "foreign key set": forged(
            aggregate,
            he.SecretContext.generate(keys.updates.params)
            .encrypt(np.zeros((fedavg_vector_length(head), 1)), layout="batch")
            .to_bytes(),
        ),
        "fewer than quorum": forged(
            aggregate, aggregate.blobs["sum"], statements=statements[:1], signatures=signatures[:1]
        ),
        "a contributor twice": forged(
            aggregate,
            aggregate.blobs["sum"],
            statements=[statements[0], statements[0], statements[2]],
            signatures=[signatures[0], signatures[0], signatures[2]],
        ),
        "reordered statements": forged(
            aggregate,
            aggregate.blobs["sum"],
            statements=[statements[1], statements[0], statements[2]],
            signatures=[signatures[1], signatures[0], signatures[2]],
        ),
        "a signature of a key not in the roster": forged(
            aggregate,
            aggregate.blobs["sum"],
            signatures=[
                signatures[0],
                stranger.sign(bytes.fromhex("00")).hex(),
                signatures[2],
            ],
        ),
        "another round": dataclasses.replace(aggregate, round=2).to_bytes(),
    }
    for name, data in attacks.items():
        for c in clients:
            r = 2 if name == "another round" else 1
            with pytest.raises(VerificationError):
                c.read_fedavg_aggregate(data, "he-fedavg", head, r)
            assert c.keyholder.ledger.committed(c.label("he-fedavg/linear", 1).key) is None, name
    # the honest aggregate still passes, for everyone, identically
    released = [
        c.read_fedavg_aggregate(aggregate.to_bytes(), "he-fedavg", head, 1) for c in clients
    ]
    assert all(np.array_equal(m.to_vector(), released[0].to_vector()) for m in released)
    # a session or another task's statement cannot be replayed into this one
    clients[0].session = "another session"
    with pytest.raises(VerificationError):
        clients[0].read_fedavg_aggregate(aggregate.to_bytes(), "he-fedavg", head, 1)


def test_equivocation_releases_nothing_anywhere(keys, rng):
    clients, _ = federation(keys, rng, quorum=2)
    a, b, c = clients
    # three genuine quorum-2 sums of the same round's contributions
    head = initial_head("linear", CLASSES, DIM)
    for k in clients:
        k.session = "s"
    contributions = {k.client_id: k.update_message("he-fedavg", head, 1) for k in clients}

    def aggregate_of(ids):
        server = AggregationServer(
            "he-fedavg",
            keys.server_keys().updates,
            clients=[k.client_id for k in clients],
            quorum=2,
            expected_length=fedavg_vector_length(head),
            roster=federation_roster(clients),
            session="s",
        )
        server.open_round()
        for i in ids:
            assert server.receive(contributions[i])
        return server.close_round()

    s_ab, s_bc, s_ac = (
        aggregate_of(p)
        for p in (("client-0", "client-1"), ("client-1", "client-2"), ("client-0", "client-2"))
    )

    # positive control: hospitals that release whatever genuine sum they get hand the server
    # every hospital's own model: a = (s_ab - s_bc + s_ac) / 2
    weak = [k.keyholder for k in clients]
    label = a.label("he-fedavg/linear", 1)
    releases = []
    for kh, (data, _ids) in zip(
        weak,
        (
            (s_ab, ("client-0", "client-1")),
            (s_bc, ("client-1", "client-2")),
            (s_ac, ("client-0", "client-2")),
        ),
        strict=True,
    ):
        msg = Message.from_bytes(data)
        from hevit.protocol import ContributionStatement

        statements = [ContributionStatement.from_meta(m) for m in msg.meta["statements"]]
        sigs = [bytes.fromhex(h) for h in msg.meta["signatures"]]
        verified = kh.verify(
            msg.blobs["sum"],
            statements,
            sigs,
            label,
            length=fedavg_vector_length(head),
            require_own=False,
        )
        releases.append(kh.release(verified))
    own_a = (releases[0] - releases[1] + releases[2]) / 2
    exact_a = a.fedavg_contribution(head, 1)
    assert np.abs(own_a - exact_a).max() < 1e-3 * np.abs(exact_a).max()

    # against the protocol: fresh hospitals, the server equivocates (s_ab to a and b, s_bc to c)
    clients, _ = federation(keys, rng, quorum=2)
    a, b, c = clients
    for k in clients:
        k.session = "s"
    contributions = {k.client_id: k.update_message("he-fedavg", head, 1) for k in clients}
    s_ab, s_bc = aggregate_of(("client-0", "client-1")), aggregate_of(("client-1", "client-2"))
    a.read_fedavg_aggregate(s_ab, "he-fedavg", head, 1)
    b.read_fedavg_aggregate(s_ab, "he-fedavg", head, 1)
    c.read_fedavg_aggregate(s_bc, "he-fedavg", head, 1)
    # b refuses the second sum for a round it committed to
    with pytest.raises(VerificationError, match="second, different aggregate"):
        b.read_fedavg_aggregate(s_bc, "he-fedavg", head, 1)
    commitments = [k.commitment("he-fedavg/linear", 1) for k in clients]
    for k in clients:
        with pytest.raises(VerificationError, match="another aggregate"):
            k.certify("he-fedavg/linear", 1, commitments)
        with pytest.raises(VerificationError, match="no quorum"):
            k.require_certified("he-fedavg/linear", 1)
    # c alone cannot certify its sum either (quorum 2)
    with pytest.raises(VerificationError, match="quorum"):
        c.certify("he-fedavg/linear", 1, [commitments[2]])


def test_every_site_releases_the_same_bits_once(keys, rng):
    clients, _ = federation(keys, rng)
    head, aggregate = honest_round(clients, keys)
    data = aggregate.to_bytes()
    first = [c.read_fedavg_aggregate(data, "he-fedavg", head, 1).to_vector() for c in clients]
    assert all(np.array_equal(v, first[0]) for v in first)
    # positive control: sites that flood independently (a noise key of their own each) let
    # the server average their copies: the mean of 3 releases carries sigma / sqrt(3)
    verified = [
        c.keyholder.verify(
            aggregate.blobs["sum"],
            [ContributionStatement.from_meta(m) for m in aggregate.meta["statements"]],
            [bytes.fromhex(h) for h in aggregate.meta["signatures"]],
            c.label("he-fedavg/linear", 1),
            length=fedavg_vector_length(head),
        )
        for c in clients
    ]
    sk, params = keys.updates, keys.updates.params
    sigma = coefficient_flooding_sigma(params, ciphertexts=1, summands=3, policy=FloodingPolicy())
    exact = sk.decrypt(verified[0].batch).ravel()
    independent = [
        sk.decrypt_flooded(verified[0].batch, sigma=sigma, noise_key=bytes([k]) * 32).ravel()
        for k in range(1, 4)
    ]
    value_sigma = flooding_value_sigma(params, sigma)
    n = exact.size
    margin = 5 / np.sqrt(2 * n)  # relative error of a sample std of n Gaussian values
    single = np.std(independent[0] - exact) / value_sigma
    averaged = np.std(np.mean(independent, axis=0) - exact) / value_sigma
    assert abs(single - 1) < margin and abs(averaged * np.sqrt(3) - 1) < margin
    # ours: the three sites' releases are the same bits, so their mean is any one of them
    ours = [c.keyholder.release(v) for c, v in zip(clients, verified, strict=True)]
    assert all(np.array_equal(v, ours[0]) for v in ours)
    kh = clients[0].keyholder
    spent = kh.ledger.released(keys.updates.public_context().keyset_id)
    again = clients[0].read_fedavg_aggregate(data, "he-fedavg", head, 1).to_vector()
    assert np.array_equal(again, first[0])  # a replay gives the same bits...
    assert kh.ledger.released(keys.updates.public_context().keyset_id) == spent  # ...for free


def test_the_budget_counts_releases_per_key_set(keys, rng):
    clients, _config = federation(keys, rng)
    for c in clients:
        c.keyholder.policy = FloodingPolicy(max_decryptions=1)
    head, aggregate = honest_round(clients, keys)
    clients[0].read_fedavg_aggregate(aggregate.to_bytes(), "he-fedavg", head, 1)
    # another session under the same key set: a new aggregate, and the budget is spent
    head, aggregate = honest_round(clients, keys, session="t")
    with pytest.raises(DecryptionBudgetError):
        clients[0].read_fedavg_aggregate(aggregate.to_bytes(), "he-fedavg", head, 1)


def test_the_roster_quorum_is_a_strict_majority():
    ids = [HospitalIdentity.generate(f"h{k}") for k in range(4)]
    with pytest.raises(ValueError, match="strict majority"):
        Roster.of("f", ids, quorum=2)
    assert Roster.of("f", ids, quorum=3).quorum == 3
    roster = Roster.of("f", ids)
    assert Roster.from_bytes(roster.to_bytes()) == roster

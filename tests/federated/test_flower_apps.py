"""The Flower apps on an in-process Grid (every CI run): the experiment's report equals
``run_experiment``'s, and a hostile node can neither stall the run nor get its reports counted.
The real multi-process deployment (TLS, authentication, killed nodes, restarts) is
``test_flower_deployment.py``."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord

from hevit import he
from hevit.features import FeatureSet
from hevit.federated import FederationKeys, Message
from hevit.federated.flower.experiment import FlowerExperiment
from hevit.federated.flower.settings import RunSettings, config_from_run
from hevit.jobs.experiment import run_experiment
from hevit.protocol import save_federation_identities

from .conftest import clustered_features
from .loopback_grid import LoopbackGrid, assert_same_numbers, bundled_run_config, task_identity

DIM, CLASSES, NODES = 48, 3, 3
HOSTILE = 101 + NODES - 1  # the node of client-2


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("loopback")
    x, y = clustered_features(9, rows=240, dim=DIM)
    FeatureSet(
        x.astype(np.float32), y, [str(i) for i in range(len(y))], ("a", "b", "c"), {"data": "t"}
    ).save(root / "features.npz")
    keys = FederationKeys.generate(dim=DIM, classes=CLASSES)
    keys.save(root / "hospital-keys")
    keys.server_keys().to_files(root / "server-keys")
    save_federation_identities(
        root / "hospital-keys", root / "server-keys", federation="t", hospitals=NODES, quorum=2
    )
    return root, keys


def run_config(root, tmp_path, **overrides) -> dict:
    return bundled_run_config(
        **{
            "num-clients": NODES,
            "dim": DIM,
            "classes": CLASSES,
            "rounds": 2,
            "local-epochs": 2,
            "features": str(root / "features.npz"),
            "keys-dir": str(root / "hospital-keys"),
            "server-keys-dir": str(root / "server-keys"),
            "report-dir": str(tmp_path / "report"),
            **overrides,
        }
    )


def run_on_grid(run: dict, tamper=None) -> dict:
    grid = LoopbackGrid(run, NODES, tamper=tamper)
    return FlowerExperiment(grid, RunSettings.from_run_config(run)).run().to_dict()


def test_the_experiment_on_flower_reports_what_run_experiment_reports(files, tmp_path, monkeypatch):
    root, keys = files
    task_identity(monkeypatch)
    run = run_config(root, tmp_path, strategies="plain-fedavg,he-fedavg,he-ridge")
    report = run_on_grid(run)
    local = run_experiment(
        FeatureSet.load(root / "features.npz"),
        clients=NODES,
        strategies=("plain-fedavg", "he-fedavg", "he-ridge"),
        config=config_from_run(run),
        keys=keys,
        progress=False,
    ).to_dict()
    assert_same_numbers(report, local)
    assert (tmp_path / "report" / "report.md").exists()
    # no Flower process serves this test: the transport is recorded as not observed, by the
    # ServerApp and by every node's transport Mod; the memory Mod reported every node
    deployment = report["deployment"]
    assert deployment["transport"]["description"] == "not observed"
    assert [t["description"] for t in deployment["node_transports"].values()] == [
        "not observed"
    ] * NODES
    assert set(deployment["peak_rss_mb_per_node"]) == {f"client-{k}" for k in range(NODES)}


def test_a_node_over_an_insecure_connection_refuses_unless_the_run_declares_it(
    files, tmp_path, monkeypatch
):
    """The nodes' transport Mod refuses every message before its handler reads a row or a key;
    the run cannot start. Declared insecure, it runs and every node's observation is recorded."""
    from hevit.errors import ProtocolError
    from hevit.federated.flower import mods
    from hevit.federated.flower.security import Transport

    root, _ = files
    task_identity(monkeypatch)
    plain = Transport(observed=True, tls=False, node_authentication=False)
    monkeypatch.setattr(mods, "observe_transport", lambda role: plain)
    run = run_config(root, tmp_path, strategies="he-ridge", standardize=False)
    grid = LoopbackGrid(run, NODES)
    with pytest.raises(ProtocolError, match=r"0 of 3 nodes answered.*InsecureTransportError"):
        FlowerExperiment(grid, RunSettings.from_run_config(run)).run()
    assert all(m.metadata.message_type == "query.describe" for m in grid.sent)
    assert all(
        mods.TRANSPORT not in c.state and "hevit-partition" not in c.state
        for c in grid.contexts.values()
    )
    report = run_on_grid({**run, "insecure": True})
    assert report["deployment"]["insecure"] is True
    assert {t["description"] for t in report["deployment"]["node_transports"].values()} == {
        "no TLS + no node authentication"
    }


def test_a_resumed_dp_run_replays_its_checkpoint_and_continues(files, tmp_path, monkeypatch):
    """DP FedAvg resumed on fresh nodes: each node first reads the checkpoint's aggregates in
    order (a DP aggregate is a sum of clipped deltas, added to the node's previous copy), then
    trains the remaining round; every hospital ends with initial + mean delta 1 + mean delta 2,
    up to its flooding draws, and epsilon covers both rounds."""
    import base64

    from hevit.federated import LinearHead
    from hevit.federated.privacy import epsilon as dp_epsilon
    from hevit.federated.vectors import decrypt_vector
    from hevit.he.reference import sum_tolerance

    root, keys = files
    task_identity(monkeypatch)
    plan = {
        "strategies": "he-fedavg",
        "standardize": False,
        "checkpoint-dir": str(tmp_path / "checkpoints"),
        "result-path": str(tmp_path / "audit.json"),
        "dp-noise-multiplier": 0.5,
    }
    first = run_on_grid(run_config(root, tmp_path, rounds=1, **plan))
    audit1 = json.loads((tmp_path / "audit.json").read_text())
    run = run_config(root, tmp_path, **plan)
    grid = LoopbackGrid(run, NODES)  # new nodes: nothing kept from the first run
    report = FlowerExperiment(grid, RunSettings.from_run_config(run)).run().to_dict()
    audit2 = json.loads((tmp_path / "audit.json").read_text())
    (entry,) = report["strategies"]
    assert entry["resumed_after_round"] == 1
    assert [r["round"] for r in entry["rounds"]] == [1, 2]
    assert entry["rounds"][0]["bytes_up"] == first["strategies"][0]["rounds"][0]["bytes_up"]
    assert entry["epsilon"] == dp_epsilon(0.5, 2, 1e-5)
    length = LinearHead.zeros(CLASSES, DIM).size + 1
    expected = np.zeros(length - 1)  # the zero head, then each round's mean delta
    for audit, r in ((audit1, "1"), (audit2, "2")):
        msg = Message.from_bytes(
            base64.b64decode(audit["runs"]["he-fedavg/linear"]["aggregates"][r])
        )
        batch = he.EncryptedBatch.from_bytes(msg.blobs["sum"], keys.updates.public_context())
        total = decrypt_vector(keys.updates, batch, length)
        expected += total[:-1] / round(total[-1])
    # each hospital's copy adds two flooded releases, each of std <= 1e-4 per parameter after
    # the division by the contributors (read_fedavg_aggregate's resolution): 6 sigma of their
    # sum, plus the CKKS error of the sums themselves
    bound = 6 * np.sqrt(2) * 1e-4 + sum_tolerance(keys.updates.params, NODES)
    for context in grid.contexts.values():
        record = context.state["hevit-model-he-fedavg-linear"]
        assert int(record["round"].numpy()[0]) == 2
        assert np.abs(record["vector"].numpy() - expected).max() <= bound


def _set(reply, record: str, key: str, value):
    reply.content[record][key] = value
    return reply


def _resend_as(reply, sender: str):
    msg = Message.from_bytes(reply.content["hevit"]["message"])
    forged = Message(msg.kind, msg.strategy, msg.round, sender, msg.keyset_id, msg.blobs, msg.meta)
    return _set(reply, "hevit", "message", forged.to_bytes())


#: what a hostile node (client-2) does to its replies, by message type
ATTACKS = {
    # a description that does not fit the run: the node is left out of it altogether
    "wrong-dimension": ("query.describe", lambda r: _set(r, "hevit", "dim", DIM - 1)),
    # an int where bytes belong (bytes(2**62) would try to allocate 4 EiB)
    "huge-int-message": ("train", lambda r: _set(r, "hevit", "message", 2**62)),
    # its contribution under another hospital's id
    "impersonation": ("train", lambda r: _resend_as(r, "client-0")),
    # more correct predictions than test rows (counts of a certified round)
    "inflated-accuracy": ("query.certify", lambda r: _set(r, "metrics", "correct", 10**6)),
    # a released model of the wrong shape
    "wrong-model": (
        "query.certify",
        lambda r: (r.content.__setitem__("model", ArrayRecord({"vector": Array(np.ones(3))})), r)[
            1
        ],
    ),
    # junk instead of encrypted rows
    "junk-he-cls-requests": (
        "query.he_cls_request",
        lambda r: _set(r, "hevit", "requests", [b"junk"]),
    ),
    # an impossible he-cls comparison
    "inflated-he-cls-report": (
        "query.he_cls_reply",
        lambda r: _set(r, "metrics", "correct-encrypted", 10**6),
    ),
    # no metrics at all
    "no-metrics": ("", lambda r: (r.content.__delitem__("metrics"), r)[1]),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_a_hostile_node_cannot_stall_the_run_or_get_its_reports_counted(
    files, tmp_path, monkeypatch, caplog, attack
):
    """Quorum 2 of 3, client-2 hostile: the run completes with a report, and what the hostile
    node sent (contributions, evaluations, he-cls requests or reports) is left out, logged."""
    root, _ = files
    task_identity(monkeypatch)
    kind, rewrite = ATTACKS[attack]

    def tamper(msg, reply):
        hit = msg.metadata.dst_node_id == HOSTILE and msg.metadata.message_type.startswith(kind)
        return rewrite(reply) if hit and not reply.has_error() else reply

    run = run_config(root, tmp_path, strategies="he-fedavg", quorum=2)
    honest_rows = None
    with caplog.at_level(logging.WARNING):
        report = run_on_grid(run, tamper)
    (entry,) = report["strategies"]
    honest = ["client-0", "client-1"]
    test_rows = {
        c: n
        for c, n in zip(
            ["client-0", "client-1", "client-2"],
            [len(p) for p in _test_parts(root)],
            strict=True,
        )
    }
    honest_rows = test_rows["client-0"] + test_rows["client-1"]
    assert all(0 <= r["accuracy"] <= 1 for r in entry["rounds"])
    assert 0 <= entry["inference"]["accuracy_encrypted"] <= 1
    if attack in ("wrong-dimension", "huge-int-message", "impersonation"):
        assert all(r["contributors"] == honest for r in entry["rounds"])
        assert report["standardization"]["contributors"] == honest
        # rejected by the server in the moments round or in training (a node whose contribution
        # is missing from an aggregate refuses it and takes no further part)
        assert any("rejected a message from" in r.getMessage() for r in caplog.records), (
            "the hostile contributions were not recorded"
        )
    if attack == "wrong-dimension":
        assert report["deployment"]["nodes_described"] == honest
    if attack in (
        # a node whose contribution is missing from an aggregate refuses that aggregate (its
        # own contribution must be in) and takes no further part in the run
        "wrong-dimension",
        "huge-int-message",
        "impersonation",
        "junk-he-cls-requests",
        "inflated-he-cls-report",
        "no-metrics",
    ):
        assert entry["inference"]["rows"] == honest_rows
    else:
        assert entry["inference"]["rows"] == sum(test_rows.values())
    assert (
        "left out" in caplog.text
        or "rejected" in caplog.text
        or "without its metrics" in caplog.text
    )


def _test_parts(root):
    from hevit.data import client_parts, stratified_split

    labels = FeatureSet.load(root / "features.npz").labels
    tr, te = stratified_split(labels, test_fraction=0.3, seed=0)
    return client_parts(labels[tr], len(te), clients=NODES, seed=0)[1]

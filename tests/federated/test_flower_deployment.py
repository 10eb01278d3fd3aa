"""A real Flower deployment on loopback: one SuperLink and three SuperNodes as separate processes,
secure as a hospital would run it (TLS from a private CA, SuperNode authentication with
registered keys; an unregistered SuperNode is refused), running hevit's ClientApp/ServerApp for
he-fedavg and he-ridge. The results must match the in-process run and the server side must only
ever receive ciphertext bytes."""

from __future__ import annotations

import base64
import functools
import json
import operator
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

# Flower is a test dependency (hevit[flower]); a missing import fails this module loudly
from hevit import he
from hevit.cli.main import main
from hevit.features import FeatureSet
from hevit.federated import FederationKeys, HospitalClient, LinearHead, Message, run_strategy
from hevit.federated.flower import app_dir
from hevit.federated.flower.apps import BUDGET_FILE, client_partition, config_from_run
from hevit.federated.flower.security import TlsFiles, make_supernode_key
from hevit.federated.keys import KEY_SETS
from hevit.federated.vectors import decrypt_vector
from hevit.he.flooding import DecryptionBudget

from .conftest import clustered_features
from .test_secret_key_exposure import secret_key_chunks

DIM, CLASSES = 48, 3
#: SuperNodes of the deployment (the README's 10-node run: HEVIT_FLOWER_NODES=10)
NODES = int(os.environ.get("HEVIT_FLOWER_NODES", "3"))
TIMEOUT = 420


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on port {port}")


def executable(name: str) -> str:
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else shutil.which(name)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    root = tmp_path_factory.mktemp("flower")
    x, y = clustered_features(9, rows=240, dim=DIM)
    features = FeatureSet(
        x.astype(np.float32), y, [str(i) for i in range(len(y))], ("a", "b", "c"), {}
    )
    features.save(root / "features.npz")
    keys = FederationKeys.generate(
        aggregation_preset="release",
        inference_preset="single-row",
        inference_layout="sample",
        dim=DIM,
        classes=CLASSES,
    )
    keys.save(root / "hospital-keys")
    keys.server_keys().to_files(root / "server-keys")
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    (root / "cli").mkdir()
    # secure by default: TLS from a private CA, and only registered SuperNode keys connect
    # the README's helper: a private CA, the SuperLink's certificate and one key pair per node
    assert main(["flower-credentials", "--out", str(root / "creds"), "--nodes", str(NODES)]) == 0
    tls = TlsFiles(*(root / "creds" / "tls" / f for f in ("ca.crt", "server.pem", "server.key")))
    (root / "cli" / "config.toml").write_text(
        f'[superlink]\ndefault = "loopback"\n\n[superlink.loopback]\naddress = "127.0.0.1:{port}"\n'
        f'root-certificates = "{tls.ca_certificate}"\n'
    )
    nodes = root / "creds" / "nodes"
    node_keys = [(nodes / f"node{k}.key", nodes / f"node{k}.pub") for k in range(NODES)]
    intruder_key, _ = make_supernode_key(root / "intruder-keys", "intruder")
    procs = []
    superlink_log = open(root / "superlink.log", "w")
    try:
        procs.append(
            subprocess.Popen(
                [
                    executable("flower-superlink"),
                    "--ssl-ca-certfile",
                    str(tls.ca_certificate),
                    "--ssl-certfile",
                    str(tls.server_certificate),
                    "--ssl-keyfile",
                    str(tls.server_key),
                    "--enable-supernode-auth",
                    "--port",
                    str(port),
                    "--disable-runtime-dependency-installation",
                ],
                env={**env, "FLWR_HOME": str(root / "superlink")},
                stdout=superlink_log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        wait_for_port(port, time.monotonic() + 60)
        for _, public in node_keys:
            registered = subprocess.run(
                [executable("flwr"), "supernode", "register", str(public), "loopback"],
                env={**env, "FLWR_HOME": str(root / "cli")},
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert registered.returncode == 0, registered.stdout + registered.stderr

        def supernode(name: str, private_key: Path, partition: int) -> subprocess.Popen:
            with open(root / f"{name}.log", "w") as log:
                return subprocess.Popen(
                    [
                        executable("flower-supernode"),
                        "--root-certificates",
                        str(tls.ca_certificate),
                        "--auth-supernode-private-key",
                        str(private_key),
                        "--superlink",
                        f"127.0.0.1:{port}",
                        "--port",
                        str(free_port()),
                        "--node-config",
                        f"partition-id={partition}",
                    ],
                    env={**env, "FLWR_HOME": str(root / name)},
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )

        named = {}
        for k, (private, _) in enumerate(node_keys):
            named[f"node{k}"] = supernode(f"node{k}", private, k)
        # a SuperNode whose key was never registered must be refused
        named["intruder"] = supernode("intruder", intruder_key, 0)
        procs.extend(named.values())
        yield root, keys, env, named
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, 9)
            except ProcessLookupError:
                pass
            p.wait(timeout=30)
        superlink_log.close()


def flwr_run(
    root: Path, env: dict, strategy: str, rounds: int, *, during=None, tag: str = "", **extra
) -> dict:
    """Runs the app to completion; ``during(received_dir)`` is called while it runs."""
    result = root / f"{strategy}{tag}-result.json"
    overrides = {
        "strategy": strategy,
        "rounds": rounds,
        "num-clients": NODES,
        "dim": DIM,
        "classes": CLASSES,
        "local-epochs": 2,
        "features": str(root / "features.npz"),
        "keys-dir": str(root / "hospital-keys"),
        "server-keys-dir": str(root / "server-keys"),
        "result-path": str(result),
        "received-dir": str(root / f"{strategy}{tag}-received"),
        **extra,
    }
    run_config = " ".join(f"{k}={json.dumps(v)}" for k, v in overrides.items())
    proc = subprocess.Popen(
        [
            executable("flwr"),
            "run",
            str(app_dir()),
            "loopback",
            "--stream",
            "--run-config",
            run_config,
        ],
        env={**env, "FLWR_HOME": str(root / "cli")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if during is not None:
        during(Path(overrides["received-dir"]))
    stdout, stderr = proc.communicate(timeout=TIMEOUT)
    proc = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    assert proc.returncode == 0 and result.exists(), (proc.stdout[-3000:], proc.stderr[-3000:])
    return json.loads(result.read_text())


def run_config(root: Path, strategy: str, rounds: int) -> dict:
    return {
        "strategy": strategy,
        "rounds": rounds,
        "num-clients": NODES,
        "local-epochs": 2,
        "quorum": 0,
        "seed": 0,
        "learning-rate": 0.5,
        "test-fraction": 0.3,
        "features": str(root / "features.npz"),
    }


def in_process(root: Path, keys, strategy: str, rounds: int):
    cfg_dict = run_config(root, strategy, rounds)
    config = config_from_run(cfg_dict)
    clients, xt, yt = [], [], []
    for k in range(NODES):
        x, y, x_test, y_test, classes = client_partition(cfg_dict, k)
        clients.append(
            HospitalClient(
                f"client-{k}", x, y, classes=classes, keys=keys, config=config, clients=NODES
            )
        )
        xt.append(x_test)
        yt.append(y_test)
    xt, yt = np.concatenate(xt), np.concatenate(yt)
    return clients, run_strategy(
        strategy, clients, keys.server_keys(), xt, yt, config, progress=False
    )


def assert_server_saw_only_ciphertexts(root: Path, keys, strategy: str, result: dict) -> None:
    received = sorted((root / f"{strategy}-received").iterdir())
    assert len(received) == NODES * len(result["rounds"])
    chunks = functools.reduce(
        operator.iadd, (secret_key_chunks(getattr(keys, name)) for name in KEY_SETS), []
    )
    for path in received:
        data = path.read_bytes()
        msg = Message.from_bytes(data)
        assert msg.blobs and all(
            isinstance(b, bytes) for b in msg.blobs.values()
        )  # ciphertexts only
        ctx = (
            keys.updates.public_context()
            if strategy == "he-fedavg"
            else keys.aggregation.public_context()
        )
        assert msg.keyset_id == ctx.keyset_id.hex()
        he.EncryptedBatch.from_bytes(next(iter(msg.blobs.values())), ctx)
        assert not any(c in data for c in chunks)
    assert all(kinds == ["ciphertext"] for _, _, kinds in result["received_kinds"])
    assert result["rejections"] == []


def test_a_restarted_server_resumes_after_its_last_completed_round(deployment):
    """A SuperLink or ServerApp restart: the first run stops after round 1 (its checkpoint
    written atomically after the round); the next run of the same 2-round plan continues at round
    2 from the checkpointed aggregate. Rounds, bytes and accuracy equal the uninterrupted run (no
    round lost or counted twice), and a run that finds every round done redoes nothing."""
    root, keys, env, _ = deployment
    checkpoint = {"checkpoint-path": str(root / "resume-checkpoint.json")}
    first = flwr_run(root, env, "he-fedavg", 1, tag="-resume1", **checkpoint)
    assert first["resumed_after_round"] == 0 and first["rounds"] == [1]
    second = flwr_run(root, env, "he-fedavg", 2, tag="-resume2", **checkpoint)
    assert second["resumed_after_round"] == 1 and second["rounds"] == [1, 2]
    assert list(second["aggregates"]) == ["2"] and list(second["accuracy"]) == ["2"]
    _, local = in_process(root, keys, "he-fedavg", 2)
    assert second["accuracy"]["2"] == local.rounds[1].accuracy
    assert second["bytes_up"] == [r.bytes_up for r in local.rounds]
    third = flwr_run(root, env, "he-fedavg", 2, tag="-resume3", **checkpoint)
    assert third["resumed_after_round"] == 2 and third["rounds"] == [1, 2]
    assert third["aggregates"] == {} and third["accuracy"] == {}


@pytest.mark.slow
def test_flower_he_ridge_matches_in_process(deployment):
    root, keys, env, _ = deployment
    result = flwr_run(root, env, "he-ridge", 1)
    assert result["rounds"] == [1] and result["contributors"] == [
        [f"client-{k}" for k in range(NODES)]
    ]
    assert_server_saw_only_ciphertexts(root, keys, "he-ridge", result)
    clients, local = in_process(root, keys, "he-ridge", 1)
    # the encrypted sum Flower's server produced decrypts to the in-process statistics
    aggregate = Message.from_bytes(base64.b64decode(result["aggregates"]["1"]))
    batch = he.EncryptedBatch.from_bytes(aggregate.blobs["sum"], keys.aggregation.public_context())
    stats = sum(c.statistics_vector() for c in clients)
    total = decrypt_vector(keys.aggregation, batch, len(stats))
    assert np.abs(total - stats).max() <= he.reference.sum_tolerance(keys.aggregation.params, NODES)
    assert result["accuracy"]["1"] == local.rounds[0].accuracy


@pytest.mark.slow
def test_flower_he_fedavg_matches_in_process(deployment):
    root, keys, env, _ = deployment
    budget = DecryptionBudget(root / "hospital-keys" / BUDGET_FILE)
    released_before = budget.released(keys.updates.public_context().keyset_id)
    result = flwr_run(root, env, "he-fedavg", 2)
    assert result["rounds"] == [1, 2]
    assert_server_saw_only_ciphertexts(root, keys, "he-fedavg", result)
    clients, local = in_process(root, keys, "he-fedavg", 2)
    # round 1 starts from the same zero head on both engines: identical sums up to CKKS noise
    aggregate = Message.from_bytes(base64.b64decode(result["aggregates"]["1"]))
    batch = he.EncryptedBatch.from_bytes(aggregate.blobs["sum"], keys.updates.public_context())
    expected = sum(c.fedavg_contribution(LinearHead.zeros(CLASSES, DIM), 1) for c in clients)
    total = decrypt_vector(keys.updates, batch, len(expected))
    assert np.abs(total - expected).max() <= he.reference.sum_tolerance(keys.updates.params, NODES)
    assert [result["accuracy"][str(r)] for r in (1, 2)] == [r.accuracy for r in local.rounds]
    assert result["bytes_up"] == [r.bytes_up for r in local.rounds]
    # every ClientApp process spent the hospitals' shared budget file: each node decrypted the
    # round-1 aggregate to train round 2 and both aggregates to evaluate
    released = budget.released(keys.updates.public_context().keyset_id) - released_before
    assert released == 3 * NODES
    # every node's ClientApp processes reported their peak memory with their replies
    assert len(result["peak_rss_mb_per_node"]) == NODES
    assert all(mb > 50 for mb in result["peak_rss_mb_per_node"].values())
    assert len(result["seconds"]) == 2 and all(s > 0 for s in result["seconds"])


@pytest.mark.slow
def test_a_supernode_with_an_unregistered_key_is_refused(deployment):
    """TLS and authentication are on: the intruder's key was never registered, so the SuperLink
    refuses to activate it and it exits; the registered nodes serve the runs above."""
    root, _, _, named = deployment
    assert named["intruder"].wait(timeout=120) != 0
    log = (root / "intruder.log").read_text()
    assert "Failed to activate SuperNode" in log
    for k in range(NODES):
        assert "SuperNode ID" in (root / f"node{k}.log").read_text()


@pytest.mark.slow
def test_a_supernode_killed_mid_run_costs_its_contributions_not_the_run(deployment):
    """Quorum 2 of 3: a SuperNode killed once the first round is under way is lost (logged,
    recorded as dropped), the rounds complete under the quorum and accuracy is still reported.
    Runs last: the node stays dead."""
    root, _, env, named = deployment
    victim = named[f"node{NODES - 1}"]

    def kill_when_round_one_started(received: Path) -> None:
        deadline = time.monotonic() + TIMEOUT
        while not (received.exists() and any(received.iterdir())):
            assert time.monotonic() < deadline, "round 1 never started"
            time.sleep(0.1)
        os.killpg(victim.pid, 9)

    result = flwr_run(
        root,
        env,
        "he-fedavg",
        2,
        during=kill_when_round_one_started,
        tag="-killed",
        quorum=2,
        timeout=20.0,
    )
    lost = f"client-{NODES - 1}"
    assert result["rounds"] == [1, 2]
    assert any(lost not in c for c in result["contributors"])
    assert all(len(c) >= 2 for c in result["contributors"])
    assert set(result["accuracy"]) == {"1", "2"}

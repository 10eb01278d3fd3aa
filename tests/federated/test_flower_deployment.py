"""A real Flower deployment on loopback: one SuperLink and three SuperNodes as separate processes
(insecure mode), running hevit's ClientApp/ServerApp for he-fedavg and he-ridge. The results must
match the in-process run and the server side must only ever receive ciphertext bytes."""

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
from hevit.features import FeatureSet
from hevit.federated import FederationKeys, HospitalClient, LinearHead, Message, run_strategy
from hevit.federated.flower import app_dir
from hevit.federated.flower.apps import client_partition, config_from_run
from hevit.federated.keys import KEY_SETS
from hevit.federated.vectors import decrypt_vector

from .conftest import clustered_features
from .test_secret_key_exposure import secret_key_chunks

DIM, CLASSES, NODES = 48, 3, 3
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
    (root / "cli" / "config.toml").write_text(
        f'[superlink]\ndefault = "loopback"\n\n[superlink.loopback]\naddress = "127.0.0.1:{port}"\ninsecure = true\n'
    )
    procs = []
    try:
        procs.append(
            subprocess.Popen(
                [
                    executable("flower-superlink"),
                    "--insecure",
                    "--port",
                    str(port),
                    "--disable-runtime-dependency-installation",
                ],
                env={**env, "FLWR_HOME": str(root / "superlink")},
                stdout=open(root / "superlink.log", "w"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        wait_for_port(port, time.monotonic() + 60)
        for k in range(NODES):
            procs.append(
                subprocess.Popen(
                    [
                        executable("flower-supernode"),
                        "--insecure",
                        "--superlink",
                        f"127.0.0.1:{port}",
                        "--port",
                        str(free_port()),
                        "--node-config",
                        f"partition-id={k}",
                    ],
                    env={**env, "FLWR_HOME": str(root / f"node{k}")},
                    stdout=open(root / f"node{k}.log", "w"),
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        yield root, keys, env
    finally:
        for p in procs:
            try:
                os.killpg(p.pid, 9)
            except ProcessLookupError:
                pass
            p.wait(timeout=30)


def flwr_run(root: Path, env: dict, strategy: str, rounds: int) -> dict:
    result = root / f"{strategy}-result.json"
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
        "received-dir": str(root / f"{strategy}-received"),
    }
    run_config = " ".join(f"{k}={json.dumps(v)}" for k, v in overrides.items())
    proc = subprocess.run(
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
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
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


@pytest.mark.slow
def test_flower_he_ridge_matches_in_process(deployment):
    root, keys, env = deployment
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
    root, keys, env = deployment
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

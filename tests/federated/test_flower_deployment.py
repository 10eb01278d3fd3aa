"""A real Flower deployment on loopback: one SuperLink and three SuperNodes as separate processes,
secure as a hospital would run it (TLS from a private CA, SuperNode authentication with
registered keys; an unregistered SuperNode is refused), running hevit's ClientApp/ServerApp: the
whole experiment (moments round, he-fedavg with the linear and the two-layer head, he-ridge,
he-cls of every head, DP). The report must match ``hevit experiment`` in process on the same
features, keys and seed, and the server side must only ever receive ciphertext bytes."""

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
from hevit.federated import FederatedConfig, FederationKeys, LinearHead, Message
from hevit.federated.flower import app_dir
from hevit.federated.flower.node import ledger_file
from hevit.federated.flower.security import TlsFiles, make_supernode_key
from hevit.federated.flower.settings import config_from_run
from hevit.federated.keys import KEY_SETS, MLP_KEY_SET
from hevit.federated.privacy import DPConfig
from hevit.federated.privacy import epsilon as dp_epsilon
from hevit.federated.vectors import decrypt_vector
from hevit.jobs.experiment import run_experiment
from hevit.protocol import ReleaseLedger, save_federation_identities

from .conftest import clustered_features
from .loopback_grid import assert_same_numbers
from .test_secret_key_exposure import secret_key_chunks

DIM, CLASSES = 48, 3
#: SuperNodes of the deployment (the README's 10-node run: HEVIT_FLOWER_NODES=10)
NODES = int(os.environ.get("HEVIT_FLOWER_NODES", "3"))
TIMEOUT = 900


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
        x.astype(np.float32),
        y,
        [str(i) for i in range(len(y))],
        ("a", "b", "c"),
        {"data": "clustered test features"},
    )
    features.save(root / "features.npz")
    # the key sets `hevit experiment` makes by default, with the two-layer head's
    keys = FederationKeys.generate(dim=DIM, classes=CLASSES, mlp_hidden=FederatedConfig().hidden)
    keys.save(root / "hospital-keys")
    keys.server_keys().to_files(root / "server-keys")
    # every hospital's signing key and the roster (quorum 2 of 3: a killed node cannot stall)
    save_federation_identities(
        root / "hospital-keys", root / "server-keys", federation="t", hospitals=NODES, quorum=2
    )
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
    try:
        procs.append(
            spawn(
                [
                    "flower-superlink",
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
                root,
                "superlink",
                env,
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
            return spawn(
                [
                    "flower-supernode",
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
                root,
                name,
                env,
            )

        named = {}
        for k, (private, _) in enumerate(node_keys):
            named[f"node{k}"] = supernode(f"node{k}", private, k)
        # a SuperNode whose key was never registered must be refused
        named["intruder"] = supernode("intruder", intruder_key, 0)
        procs.extend(named.values())
        yield root, keys, env, named
    finally:
        stop(procs)


def spawn(command: list[str], root: Path, name: str, env: dict) -> subprocess.Popen:
    """A Flower process in its own session (``stop`` kills it with its children), logging to
    ``root/<name>.log`` with its own Flower home."""
    with open(root / f"{name}.log", "w") as log:
        return subprocess.Popen(
            [executable(command[0]), *command[1:]],
            env={**env, "FLWR_HOME": str(root / name)},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        try:
            os.killpg(p.pid, 9)
        except ProcessLookupError:
            pass
        p.wait(timeout=30)


def flwr_run(
    root: Path, env: dict, tag: str, *, during=None, superlink="loopback", **overrides
) -> tuple[dict, dict]:
    """Runs the app to completion; ``during(received_dir)`` is called while it runs. Returns the
    report (report.json) and the audit file (result-path)."""
    settings = {
        "strategies": "he-fedavg",
        "rounds": 2,
        "num-clients": NODES,
        "dim": DIM,
        "classes": CLASSES,
        "local-epochs": 2,
        "features": str(root / "features.npz"),
        "keys-dir": str(root / "hospital-keys"),
        "server-keys-dir": str(root / "server-keys"),
        "report-dir": str(root / tag / "report"),
        "result-path": str(root / tag / "audit.json"),
        "received-dir": str(root / tag / "received"),
        **overrides,
    }
    run_config = " ".join(f"{k}={json.dumps(v)}" for k, v in settings.items())
    proc = subprocess.Popen(
        [
            executable("flwr"),
            "run",
            str(app_dir()),
            superlink,
            "--stream",
            "--run-config",
            run_config,
        ],
        env={**env, "FLWR_HOME": str(root / "cli")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if during is not None and during(Path(settings["received-dir"])):
        proc.kill()  # ``during`` killed the run's ServerApp: its CLI has nothing more to show
        proc.communicate(timeout=60)
        return None, None
    stdout, stderr = proc.communicate(timeout=TIMEOUT)
    (root / tag).mkdir(exist_ok=True)
    (root / tag / "flwr-run.log").write_text(stdout + stderr)
    audit = root / tag / "audit.json"
    assert proc.returncode == 0 and audit.exists(), (stdout[-20000:], stderr[-3000:])
    report = json.loads((root / tag / "report" / "report.json").read_text())
    return report, json.loads(audit.read_text())


def in_process(root: Path, keys, strategies, heads=("linear",), **config) -> dict:
    """``hevit experiment`` in process on the deployment's features, keys and seed."""
    settings = {"local-epochs": 2, "rounds": 2, **config}
    return run_experiment(
        FeatureSet.load(root / "features.npz"),
        clients=NODES,
        strategies=strategies,
        heads=heads,
        config=config_from_run(settings),
        keys=keys,
        progress=False,
    ).to_dict()


def released(root: Path, ctx) -> int:
    """Releases under ``ctx``'s key set summed over every hospital's ledger."""
    return sum(
        ReleaseLedger(ledger_file(root / "hospital-keys", f"client-{k}")).released(
            ctx.public_context().keyset_id
        )
        for k in range(NODES)
    )


def assert_server_saw_only_ciphertexts(received: Path, keys, run: dict) -> None:
    files = sorted(received.iterdir())
    assert len(files) == sum(len(c) for c in run["contributors"])
    chunks = functools.reduce(
        operator.iadd,
        (secret_key_chunks(getattr(keys, name)) for name in (*KEY_SETS, MLP_KEY_SET)),
        [],
    )
    ctx = keys.updates if run["strategy"] == "he-fedavg" else keys.aggregation
    for path in files:
        data = path.read_bytes()
        msg = Message.from_bytes(data)
        assert msg.blobs and all(
            isinstance(b, bytes) for b in msg.blobs.values()
        )  # ciphertexts only
        assert msg.keyset_id == ctx.public_context().keyset_id.hex()
        he.EncryptedBatch.from_bytes(next(iter(msg.blobs.values())), ctx.public_context())
        assert not any(c in data for c in chunks)
    assert all(kinds == ["ciphertext"] for _, _, kinds in run["received_kinds"])
    assert run["rejections"] == []


@pytest.mark.slow
def test_the_flower_experiment_reports_what_the_in_process_experiment_reports(deployment):
    """The whole experiment on Flower: moments round, he-fedavg with both heads, he-ridge and
    he-cls of every trained head. Its report equals the in-process one number for number (noise
    draws and clocks aside), it was written as `hevit experiment` writes it, the server only ever
    received ciphertexts, and every hospital released each aggregate once (its copy of the
    model is kept on its node for the next round)."""
    root, keys, env, _ = deployment
    before = {name: released(root, getattr(keys, name)) for name in ("updates", "aggregation")}
    report, audit = flwr_run(
        root, env, "experiment", strategies="he-fedavg,he-ridge", heads="linear,mlp"
    )
    local = in_process(root, keys, ("he-fedavg", "he-ridge"), ("linear", "mlp"))
    assert_same_numbers(report, local)
    assert report["centralized_ridge_accuracy"] is None  # the pooled rows never exist
    deployment = report["deployment"]
    # observed from the Flower processes: TLS and authentication at the SuperLink and every node
    assert deployment["insecure"] is False
    for transport in (deployment["transport"], *deployment["node_transports"].values()):
        assert transport["observed"] and transport["tls"] and transport["node_authentication"]
    assert len(deployment["node_transports"]) == NODES
    assert set(deployment["peak_rss_mb_per_node"]) == {f"client-{k}" for k in range(NODES)}
    assert all(mb > 50 for mb in deployment["peak_rss_mb_per_node"].values())
    for name in ("report.md", "accuracy_per_round.png", "bytes_per_round.png"):
        assert (root / "experiment" / "report" / name).stat().st_size > 0
    assert "Deployment: flower" in (root / "experiment" / "report" / "report.md").read_text()
    for key in ("he-fedavg/linear", "he-fedavg/mlp", "he-ridge/linear"):
        run = audit["runs"][key]
        assert_server_saw_only_ciphertexts(
            root / "experiment" / "received" / key.replace("/", "-"), keys, run
        )
    # one release per hospital and aggregate: moments and ridge (aggregation), 2 + 2 FedAvg
    # rounds (updates); train messages read the copy kept on the node instead of decrypting
    assert released(root, keys.aggregation) - before["aggregation"] == 2 * NODES
    assert released(root, keys.updates) - before["updates"] == 4 * NODES
    # the server's round-1 sum decrypts (with the hospitals' key) to a count of every training
    # row: each hospital's whole partition went in, once
    first = Message.from_bytes(
        base64.b64decode(audit["runs"]["he-fedavg/linear"]["aggregates"]["1"])
    )
    batch = he.EncryptedBatch.from_bytes(first.blobs["sum"], keys.updates.public_context())
    length = LinearHead.zeros(CLASSES, DIM).size + 1
    total = decrypt_vector(keys.updates, batch, length)
    assert abs(total[-1] - report["train_rows"]) <= he.reference.sum_tolerance(
        keys.updates.params, NODES
    )


@pytest.mark.slow
def test_differential_privacy_on_flower_is_accounted_as_in_process(deployment):
    """DP on Flower: the same accountant and report entry as in process (epsilon per strategy),
    and DP FedAvg's second round adds the noisy mean delta to each hospital's kept copy."""
    root, keys, env, _ = deployment
    dp = {"dp-noise-multiplier": 0.5, "dp-clip-norm": 1.0, "standardize": False}
    report, audit = flwr_run(root, env, "dp", strategies="he-fedavg,he-ridge", **dp)
    local = in_process(root, keys, ("he-fedavg", "he-ridge"), **dp)
    config = config_from_run(dp)
    assert config.dp == DPConfig(0.5, clip_norm=1.0, delta=1e-5)
    assert report["standardization"] is None
    expected = {"he-fedavg": dp_epsilon(0.5, 2, 1e-5), "he-ridge": dp_epsilon(0.5, 1, 1e-5)}
    for f, s in zip(report["strategies"], local["strategies"], strict=True):
        assert f["epsilon"] == s["epsilon"] == expected[f["strategy"]]
        assert f["bytes_per_round"] == s["bytes_per_round"]
    assert audit["runs"]["he-fedavg/linear"]["rounds"] == [1, 2]
    assert "epsilon" in (root / "dp" / "report" / "report.md").read_text()


def serverapp_pids(flwr_home: Path) -> list[int]:
    """The ServerApp processes the SuperLink with this Flower home started."""
    pids = []
    for d in Path("/proc").iterdir():
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
            environ = (d / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if any(a.endswith(b"flwr-serverapp") for a in argv[:2]) and (
            f"FLWR_HOME={flwr_home}".encode() in environ
        ):
            pids.append(int(d.name))
    return pids


def test_a_killed_serverapp_resumes_after_its_last_completed_round(deployment):
    """A ServerApp killed (SIGKILL) while round 2 is open, after round 1's checkpoint was
    written: the next run of the same plan has every node read the checkpoint's aggregates in
    order (round 1), then redoes round 2 only. Rounds, bytes and accuracy equal the uninterrupted
    in-process run (no round lost or counted twice), and a run that finds every round done
    trains nothing."""
    root, keys, env, _ = deployment
    checkpoints = root / "resume-checkpoints"
    plan = {"checkpoint-dir": str(checkpoints), "standardize": False}

    before = released(root, keys.updates)

    def kill_serverapp_in_round_two(received: Path) -> bool:
        # every node has released round 1's aggregate (its evaluation): the ServerApp has sent
        # round 2's training messages and waits for the ClientApp processes Flower starts
        deadline = time.monotonic() + TIMEOUT
        while released(root, keys.updates) < before + NODES:
            assert time.monotonic() < deadline, "round 1 was never evaluated"
            time.sleep(0.02)
        (pid,) = serverapp_pids(root / "superlink")
        os.kill(pid, 9)
        return True

    assert flwr_run(root, env, "resume1", during=kill_serverapp_in_round_two, **plan) == (
        None,
        None,
    )
    checkpoint = json.loads((checkpoints / "he-fedavg.ckpt.json").read_text())
    assert [r["round"] for r in checkpoint["completed"]] == [1]
    report, second = flwr_run(root, env, "resume2", **plan)
    run = second["runs"]["he-fedavg/linear"]
    assert run["resumed_after_round"] == 1 and run["rounds"] == [1, 2]
    assert list(run["aggregates"]) == ["2"]  # round 1 was not redone
    local = in_process(root, keys, ("he-fedavg",), standardize=False)["strategies"][0]
    (entry,) = report["strategies"]
    assert entry["resumed_after_round"] == 1
    assert [r["round"] for r in entry["rounds"]] == [1, 2]
    assert [r["accuracy"] for r in entry["rounds"]] == [r["accuracy"] for r in local["rounds"]]
    assert [r["bytes_up"] for r in entry["rounds"]] == [r["bytes_up"] for r in local["rounds"]]
    _, third = flwr_run(root, env, "resume3", **plan)
    run = third["runs"]["he-fedavg/linear"]
    assert run["resumed_after_round"] == 2 and run["rounds"] == [1, 2]
    assert run["aggregates"] == {} and list(run["accuracy"]) == ["1", "2"]


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
    recorded as dropped), the rounds complete under the quorum, and accuracy and he-cls are still
    reported from the survivors. Runs last: the node stays dead."""
    root, _, env, named = deployment
    victim = named[f"node{NODES - 1}"]

    def kill_when_round_one_started(received: Path) -> None:
        deadline = time.monotonic() + TIMEOUT
        run = received / "he-fedavg-linear"
        while not (run.exists() and any(run.iterdir())):
            assert time.monotonic() < deadline, "round 1 never started"
            time.sleep(0.1)
        os.killpg(victim.pid, 9)

    report, audit = flwr_run(
        root,
        env,
        "killed",
        during=kill_when_round_one_started,
        quorum=2,
        timeout=20.0,
        standardize=False,
    )
    lost = f"client-{NODES - 1}"
    run = audit["runs"]["he-fedavg/linear"]
    assert run["rounds"] == [1, 2]
    assert any(lost not in c for c in run["contributors"])
    assert all(len(c) >= 2 for c in run["contributors"])
    (entry,) = report["strategies"]
    assert [r["round"] for r in entry["rounds"]] == [1, 2]
    assert any(lost in r["dropped"] for r in entry["rounds"])
    assert entry["inference"]["rows"] > 0 and entry["inference"]["agreement"] == 1.0


@pytest.fixture(scope="module")
def insecure_deployment(deployment):
    """A SuperLink and one SuperNode started without TLS or authentication (`--insecure`), a
    second connection in the same Flower CLI home."""
    root, _, env, _ = deployment
    port = free_port()
    with open(root / "cli" / "config.toml", "a") as f:
        f.write(f'\n[superlink.insecure]\naddress = "127.0.0.1:{port}"\ninsecure = true\n')
    procs = [
        spawn(
            [
                "flower-superlink",
                "--insecure",
                "--port",
                str(port),
                "--disable-runtime-dependency-installation",
            ],
            root,
            "insecure-superlink",
            env,
        )
    ]
    try:
        wait_for_port(port, time.monotonic() + 60)
        procs.append(
            spawn(
                [
                    "flower-supernode",
                    "--insecure",
                    "--superlink",
                    f"127.0.0.1:{port}",
                    "--port",
                    str(free_port()),
                    "--node-config",
                    "partition-id=0",
                ],
                root,
                "insecure-node0",
                env,
            )
        )
        yield root, env
    finally:
        stop(procs)


@pytest.mark.slow
def test_an_insecure_deployment_runs_only_when_declared_and_its_report_says_so(
    insecure_deployment,
):
    """Without TLS and node authentication the ServerApp refuses the run (before any key is
    read) unless run_config declares insecure=true; a declared run records the declaration and
    what the SuperLink and the node observed, and its report.md says so."""
    root, env = insecure_deployment
    # one hospital: its own roster (quorum 1) beside the shared key sets
    solo = root / "solo-hospital-keys"
    if not solo.exists():
        FederationKeys.load(root / "hospital-keys").save(solo)
        FederationKeys.load(root / "hospital-keys").server_keys().to_files(
            root / "solo-server-keys"
        )
        save_federation_identities(
            solo, root / "solo-server-keys", federation="solo", hospitals=1, quorum=1
        )
    plan = {
        "superlink": "insecure",
        "strategies": "he-ridge",
        "standardize": False,
        "num-clients": 1,
        "keys-dir": str(solo),
        "server-keys-dir": str(root / "solo-server-keys"),
    }
    with pytest.raises(AssertionError):
        flwr_run(root, env, "undeclared", **plan)
    assert "InsecureTransportError" in (root / "undeclared" / "flwr-run.log").read_text()
    assert not (root / "undeclared" / "report").exists()
    report, audit = flwr_run(root, env, "declared", insecure=True, **plan)
    deployment = report["deployment"]
    assert deployment["insecure"] is True and audit["insecure"] is True
    for transport in (deployment["transport"], deployment["node_transports"]["client-0"]):
        assert transport["observed"] and not transport["tls"]
        assert not transport["node_authentication"]
    assert "declared insecure" in (root / "declared" / "report" / "report.md").read_text()
    (entry,) = report["strategies"]
    assert entry["inference"]["agreement"] == 1.0

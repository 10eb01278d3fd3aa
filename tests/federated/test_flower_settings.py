"""The Flower apps' run_config: one mapping onto FederatedConfig, defaults that cannot drift from
the in-process ones, and the on-demand key folder a ClientApp process reads."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import tomllib

from hevit import he
from hevit.federated import FederatedConfig, FederationKeys
from hevit.federated.flower import app_dir
from hevit.federated.flower.node import client_partition
from hevit.federated.flower.settings import RunSettings, config_from_run
from hevit.federated.keys import KeyFolder
from hevit.federated.privacy import DPConfig

from .conftest import clustered_features


def bundled_run_config() -> dict:
    with open(app_dir() / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["flwr"]["app"]["config"]


def test_the_bundled_app_defaults_are_the_in_process_defaults():
    """`flwr run` with the bundled defaults trains exactly what `hevit experiment` trains."""
    assert config_from_run(bundled_run_config()) == FederatedConfig()


def test_every_federated_config_field_is_settable_from_run_config():
    run = {
        **bundled_run_config(),
        "rounds": 4,
        "local-epochs": 3,
        "learning-rate": 0.2,
        "batch-size": 16,
        "weight-decay": 0.01,
        "ridge-alpha": 0.5,
        "hidden": 32,
        "standardize": False,
        "inference-layout": "batch",
        "count-scale": 2.0,
        "quorum": 2,
        "seed": 5,
        "dp-noise-multiplier": 1.1,
        "dp-clip-norm": 0.5,
        "dp-delta": 1e-6,
        "flooding-security-bits": 64,
        "flooding-max-decryptions": 1024,
    }
    config = config_from_run(run, head="mlp")
    assert config == FederatedConfig(
        rounds=4,
        local_epochs=3,
        learning_rate=0.2,
        batch_size=16,
        weight_decay=0.01,
        ridge_alpha=0.5,
        head="mlp",
        hidden=32,
        standardize=False,
        inference_layout="batch",
        count_scale=2.0,
        quorum=2,
        seed=5,
        dp=DPConfig(1.1, clip_norm=0.5, delta=1e-6),
        flooding=dataclasses.replace(
            FederatedConfig().flooding, statistical_security_bits=64, max_decryptions=1024
        ),
    )
    # the presets are the key sets' (not run_config's): every other field is covered above
    covered = {f.name for f in dataclasses.fields(FederatedConfig)} - {
        "aggregation_preset",
        "update_preset",
        "inference_preset",
        "mlp_inference_preset",
    }
    changed = {
        f.name
        for f in dataclasses.fields(FederatedConfig)
        if getattr(config, f.name) != getattr(FederatedConfig(), f.name)
    }
    assert changed == covered


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("strategies", "he-fedavg,he-cls"),
        ("strategies", ""),
        ("strategies", "he-ridge,he-ridge"),
        ("heads", "linear,transformer"),
        ("partition", "by-hospital"),
        ("standardize", "maybe"),
        ("num-clients", 0),
        ("server-keys-dir", ""),
    ],
)
def test_bad_run_settings_are_refused(key, value):
    run = {**bundled_run_config(), "server-keys-dir": "/keys", key: value}
    with pytest.raises(ValueError):
        RunSettings.from_run_config(run)


def test_run_settings_order_runs_like_hevit_experiment():
    run = {
        **bundled_run_config(),
        "server-keys-dir": "/keys",
        "strategies": "plain-fedavg,he-ridge,he-fedavg",
        "heads": "linear,mlp",
        "partition": "dirichlet",
        "dirichlet-alpha": 0.3,
    }
    settings = RunSettings.from_run_config(run)
    assert settings.runs() == [
        ("plain-fedavg", "linear"),
        ("plain-fedavg", "mlp"),
        ("he-ridge", "linear"),
        ("he-fedavg", "linear"),
        ("he-fedavg", "mlp"),
    ]
    assert settings.partition == "dirichlet(alpha=0.3)"
    assert settings.insecure is False and settings.report_dir is None


def test_a_node_takes_the_rows_hevit_experiment_gives_its_client(tmp_path):
    from hevit.data import client_parts, stratified_split
    from hevit.features import FeatureSet

    x, y = clustered_features(3, rows=90, dim=8)
    FeatureSet(x.astype(np.float32), y, [str(i) for i in range(90)], ("a", "b", "c")).save(
        tmp_path / "f.npz"
    )
    run = {**bundled_run_config(), "features": str(tmp_path / "f.npz"), "num-clients": 3}
    x32 = x.astype(np.float32).astype(np.float64)
    tr, te = stratified_split(y, test_fraction=0.3, seed=0)
    parts, test_parts = client_parts(y[tr], len(te), clients=3, seed=0)
    covered = []
    for k in range(3):
        rows = client_partition(run, k)
        np.testing.assert_array_equal(rows["x"], x32[tr][parts[k]])
        np.testing.assert_array_equal(rows["y-test"], y[te][test_parts[k]])
        covered.append(len(rows["y"]))
    assert sum(covered) == len(tr)
    with pytest.raises(ValueError, match="partition-id 3"):
        client_partition(run, 3)


def test_key_folder_loads_each_key_set_on_first_use(tmp_path):
    keys = FederationKeys.generate(dim=8, classes=3)
    keys.save(tmp_path / "keys")
    folder = KeyFolder(tmp_path / "keys")
    assert folder.loaded == ()
    assert folder.updates.public_context().keyset_id == keys.updates.public_context().keyset_id
    assert folder.loaded == ("updates",)
    assert folder.mlp_inference is None  # no two-layer head in this federation
    assert folder.updates is folder.updates  # read once
    assert set(folder.loaded) == {"updates", "mlp_inference"}
    os.remove(tmp_path / "keys" / "aggregation.key")
    with pytest.raises(FileNotFoundError):
        _ = folder.aggregation
    with pytest.raises(FileNotFoundError, match="not a hospital key folder"):
        KeyFolder(tmp_path / "elsewhere")


def test_parameters_read_back_from_bytes_name_their_preset():
    for name in ("latency", "release", "update", "mlp"):
        params = he.CkksParams.preset(name, max_norm=1.0)
        round_trip = he.PublicContext.from_bytes(
            he.SecretContext.generate(params).public_context().to_bytes()
        ).params
        assert round_trip.name is None and round_trip.matching_preset() == name
    assert he.CkksParams(4096, (40,), 20, 1.0).matching_preset() is None


def fake_process_tree(root, chain):
    """A /proc with ``chain`` of argv lists, the first the parent of this process."""
    pids = list(range(100, 100 - len(chain), -1))
    for k, (pid, argv) in enumerate(zip(pids, chain, strict=True)):
        d = root / str(pid)
        d.mkdir(parents=True)
        (d / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
        parent = pids[k + 1] if k + 1 < len(pids) else 1
        (d / "stat").write_text(f"{pid} (python3 (x)) S {parent} {pid} {pid} 0 -1\n")
    return pids[0]


SUPERNODE = ["/usr/bin/python3", "/venv/bin/flower-supernode", "--superlink", "10.0.0.1:9092"]
SUPERLINK = ["/usr/bin/python3", "/venv/bin/flower-superlink"]
EXEC = ["/usr/bin/python3", "/venv/bin/flower-superexec", "--insecure"]  # its local runtime API


@pytest.mark.parametrize(
    ("role", "chain", "secure", "description"),
    [
        (
            "node",
            [
                EXEC,
                [*SUPERNODE, "--root-certificates", "ca.crt", "--auth-supernode-private-key", "k"],
            ],
            True,
            "TLS + SuperNode authentication",
        ),
        ("node", [EXEC, [*SUPERNODE, "--insecure"]], False, "no TLS + no node authentication"),
        (
            "node",
            [EXEC, [*SUPERNODE, "--root-certificates", "ca.crt"]],
            False,
            "TLS + no node authentication",
        ),
        (
            "server",
            [
                EXEC,
                [
                    *SUPERLINK,
                    "--ssl-certfile",
                    "s.pem",
                    "--ssl-keyfile",
                    "s.key",
                    "--enable-supernode-auth",
                ],
            ],
            True,
            "TLS + SuperNode authentication",
        ),
        ("server", [EXEC, [*SUPERLINK, "--insecure"]], False, "no TLS + no node authentication"),
        (
            "server",
            [EXEC, [*SUPERLINK, "--ssl-certfile", "s.pem"]],
            False,
            "TLS + no node authentication",
        ),
        (
            "node",
            [["ray::worker"], EXEC, [*SUPERLINK, "--insecure", "--simulation"]],
            True,
            "simulation (one machine, no network)",
        ),
        (
            "server",
            [EXEC, [*SUPERLINK, "--insecure", "--simulation"]],
            True,
            "simulation (one machine, no network)",
        ),
    ],
)
def test_the_transport_is_read_from_the_serving_flower_process(
    tmp_path, monkeypatch, role, chain, secure, description
):
    from hevit.errors import InsecureTransportError
    from hevit.federated.flower.security import observe_transport, require_secure_transport

    parent = fake_process_tree(tmp_path, [["/venv/bin/flwr-clientapp", "--token", "t"], *chain])
    monkeypatch.setattr(os, "getppid", lambda: parent)
    transport = observe_transport(role, proc=tmp_path)
    assert transport.observed and transport.secure is secure
    assert transport.describe() == description
    require_secure_transport(transport, insecure_declared=True, where="test")  # declared: runs
    if secure:
        require_secure_transport(transport, insecure_declared=False, where="test")
    else:
        with pytest.raises(InsecureTransportError, match="insecure=true"):
            require_secure_transport(transport, insecure_declared=False, where="test")


def test_an_unobservable_transport_is_reported_as_such(tmp_path, monkeypatch):
    from hevit.federated.flower.security import observe_transport, require_secure_transport

    parent = fake_process_tree(tmp_path, [["/usr/bin/bash"], ["/sbin/init"]])
    monkeypatch.setattr(os, "getppid", lambda: parent)
    transport = observe_transport("node", proc=tmp_path)
    assert not transport.observed and transport.describe() == "not observed"
    require_secure_transport(transport, insecure_declared=False, where="test")
    with pytest.raises(ValueError):
        observe_transport("superlink", proc=tmp_path)

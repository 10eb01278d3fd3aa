"""Server checkpoints: atomic writes, resume with no round lost or counted twice, and a real
SIGKILL of the process running the federation mid-run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hevit.errors import ProtocolError, SerializationError
from hevit.features import FeatureSet
from hevit.federated import AggregationServer, FederatedConfig, run_strategy
from hevit.federated.server import Rejection

from .conftest import CLASSES, DIM, clustered_features


def test_resume_continues_after_the_last_completed_round(federation, tmp_path):
    config = FederatedConfig(rounds=4, local_epochs=2)
    xt, yt = federation.x[federation.test], federation.y[federation.test]
    full = run_strategy(
        "plain-fedavg", federation.clients(config), None, xt, yt, config, progress=False
    )

    class Crash(Exception):
        pass

    def crash_after_round_2(r):
        if r == 2:
            raise Crash

    with pytest.raises(Crash):
        run_strategy(
            "plain-fedavg",
            federation.clients(config),
            None,
            xt,
            yt,
            config,
            checkpoint_dir=tmp_path,
            progress=False,
            on_round_end=crash_after_round_2,
        )
    state = json.loads((tmp_path / "plain-fedavg.ckpt.json").read_text())
    assert [s["round"] for s in state["completed"]] == [1, 2]
    resumed = run_strategy(
        "plain-fedavg",
        federation.clients(config),
        None,
        xt,
        yt,
        config,
        checkpoint_dir=tmp_path,
        progress=False,
    )
    assert [r.round for r in resumed.rounds] == [1, 2, 3, 4]
    np.testing.assert_array_equal(resumed.head.to_vector(), full.head.to_vector())
    assert [r.accuracy for r in resumed.rounds] == [r.accuracy for r in full.rounds]


def test_checkpoint_write_is_atomic(federation, tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    server = AggregationServer(
        "he-fedavg",
        federation.server_keys.updates,
        clients=["a", "b"],
        checkpoint=path,
        expected_length=CLASSES * DIM + CLASSES + 1,
    )
    server.save_checkpoint(path)
    before = path.read_bytes()

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    server.rejections.append(Rejection(1, "a", "changed state"))
    with pytest.raises(OSError, match="disk full"):
        server.save_checkpoint(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temporary file left behind


@pytest.mark.parametrize(
    "damage", ["truncate", "other-keys", "gap", "deep", "huge-int", "not-a-list", "bad-base64"]
)
def test_damaged_checkpoints_are_refused(federation, tmp_path, damage):
    """Whatever the damage, resume raises SerializationError or ProtocolError (never a bare
    AttributeError, OverflowError or RecursionError)."""
    path = tmp_path / "he-fedavg.ckpt.json"
    config = FederatedConfig(rounds=2, local_epochs=1)
    run_strategy(
        "he-fedavg",
        federation.clients(config),
        federation.server_keys,
        federation.x[federation.test],
        federation.y[federation.test],
        config,
        checkpoint_dir=tmp_path,
        progress=False,
    )
    state = json.loads(path.read_text())
    if damage == "truncate":
        path.write_text(path.read_text()[:500])
    elif damage == "other-keys":
        state["keyset_id"] = "00" * 16
        path.write_text(json.dumps(state))
    elif damage == "gap":
        state["completed"] = state["completed"][1:]
        path.write_text(json.dumps(state))
    elif damage == "deep":
        path.write_text("[" * 100_000 + "]" * 100_000)
    elif damage == "huge-int":
        state["completed"][0]["seconds"] = 10**400
        path.write_text(json.dumps(state))
    elif damage == "not-a-list":
        state["completed"] = 7
        path.write_text(json.dumps(state))
    else:
        state["completed"][0]["aggregate"] = "not base64!"
        path.write_text(json.dumps(state))
    with pytest.raises((SerializationError, ProtocolError)):
        AggregationServer.resume(
            path, federation.server_keys.updates, expected_length=CLASSES * DIM + CLASSES + 1
        )


def _experiment_command(features: Path, checkpoint: Path, out: Path, rounds: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "hevit.cli.main",
        "experiment",
        "--features",
        str(features),
        "--strategies",
        "he-fedavg",
        "--rounds",
        str(rounds),
        "--local-epochs",
        "150",
        "--checkpoint-dir",
        str(checkpoint),
        "--out",
        str(out),
    ]


def test_killed_run_resumes_with_no_round_lost_or_counted_twice(tmp_path):
    x, y = clustered_features(11, rows=600, dim=64)
    features = FeatureSet(
        x.astype(np.float32),
        y,
        [f"row{i}" for i in range(len(y))],
        ("a", "b", "c"),
        {"data": "synthetic clustered rows"},
    ).save(tmp_path / "f.npz")
    rounds = 8
    checkpoint = tmp_path / "ckpt"
    state_file = checkpoint / "server" / "he-fedavg.ckpt.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        _experiment_command(features, checkpoint, tmp_path / "run1", rounds),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    completed_at_kill = 0
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if state_file.exists():
                completed_at_kill = len(json.loads(state_file.read_text())["completed"])
                if completed_at_kill >= 3:
                    break
            time.sleep(0.01)
        assert proc.poll() is None, (
            f"the run ended before it could be killed: {proc.stderr.read()[-2000:]}"
        )
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    completed_at_kill = len(json.loads(state_file.read_text())["completed"])
    assert 3 <= completed_at_kill < rounds
    resumed = subprocess.run(
        _experiment_command(features, checkpoint, tmp_path / "run2", rounds),
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    report = json.loads((tmp_path / "run2" / "report.json").read_text())
    rounds_seen = [r["round"] for r in report["strategies"][0]["rounds"]]
    assert rounds_seen == list(range(1, rounds + 1))
    state = json.loads(state_file.read_text())
    assert [s["round"] for s in state["completed"]] == list(range(1, rounds + 1))
    # every round's contributions counted once: one upload per client per round
    assert all(len(s["bytes_up"]) == 3 for s in state["completed"])
    assert state["bytes_received"] == {
        c: sum(s["bytes_up"][c] for s in state["completed"]) for c in state["clients"]
    }
    # an uninterrupted run from the same seed reaches the same accuracy in every round
    fresh = subprocess.run(
        _experiment_command(features, tmp_path / "ckpt-fresh", tmp_path / "run3", rounds),
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    fresh_report = json.loads((tmp_path / "run3" / "report.json").read_text())
    assert [r["accuracy"] for r in fresh_report["strategies"][0]["rounds"]] == [
        r["accuracy"] for r in report["strategies"][0]["rounds"]
    ]

"""Load: 50 hospitals, several encrypted FedAvg rounds; memory must stay flat.

Prints peak RSS and throughput (contributions aggregated per second) for the record;
``HEVIT_SOAK_ROUNDS`` lengthens the run.
"""

from __future__ import annotations

import os
import resource
import time

import numpy as np
import pytest

from hevit.data import iid_partition
from hevit.federated import FederatedConfig, FederationKeys, make_clients, run_strategy

from .conftest import CLASSES, DIM, clustered_features

CLIENTS = 50
ROUNDS = int(os.environ.get("HEVIT_SOAK_ROUNDS", "8"))


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.slow
def test_fifty_clients_memory_stays_flat(capsys):
    x, y = clustered_features(5, rows=CLIENTS * 24)
    parts = iid_partition(np.arange(len(y)), clients=CLIENTS, seed=0)
    keys = FederationKeys.generate(
        aggregation_preset="release",
        inference_preset="single-row",
        inference_layout="sample",
        dim=DIM,
        classes=CLASSES,
    )
    config = FederatedConfig(rounds=ROUNDS, local_epochs=1)
    clients = make_clients(x, y, parts, classes=CLASSES, keys=keys, config=config)
    samples: list[int] = []
    start = time.perf_counter()
    result = run_strategy(
        "he-fedavg",
        clients,
        keys.server_keys(),
        x[:100],
        y[:100],
        config,
        progress=False,
        on_round_end=lambda r: samples.append(rss_bytes()),
    )
    seconds = time.perf_counter() - start
    assert [r.round for r in result.rounds] == list(range(1, ROUNDS + 1))
    assert all(len(r.contributors) == CLIENTS for r in result.rounds)
    upload = float(np.mean([sum(r.bytes_up.values()) for r in result.rounds]))
    # after warm-up, what a round leaves behind must be a small fraction of what it moved
    slope = np.polyfit(np.arange(2, ROUNDS + 1), np.array(samples[1:], dtype=float), 1)[0]
    assert slope < upload / 6, (slope, upload)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    with capsys.disabled():
        print(
            f"\nsoak: {CLIENTS} clients x {ROUNDS} he-fedavg rounds in {seconds:.1f} s, "
            f"{CLIENTS * ROUNDS / seconds:.1f} contributions/s, {upload / 1e6:.2f} MB uploaded per round, "
            f"RSS growth {slope / 1e6:.3f} MB/round, peak RSS {peak / 1e6:.0f} MB"
        )

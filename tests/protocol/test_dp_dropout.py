"""DP with dropouts: noise shares are sized for the quorum, so a round that closes with only the
quorum of contributors still carries the nominal noise (epsilon is computed from it)."""

from __future__ import annotations

import numpy as np

from hevit.federated import FederatedConfig, FederationKeys, make_clients
from hevit.federated.models import initial_head
from hevit.federated.privacy import DPConfig, clip_to_norm, noise_share

CLASSES, DIM = 3, 96


def test_a_quorum_round_carries_the_nominal_dp_noise(rng):
    x = rng.standard_normal((180, DIM))
    y = np.arange(len(x)) % CLASSES
    parts = np.array_split(np.arange(len(x)), 3)
    dp = DPConfig(noise_multiplier=0.7, clip_norm=0.5)
    config = FederatedConfig(rounds=1, quorum=2, dp=dp, standardize=False)
    keys = FederationKeys.generate(dim=DIM, classes=CLASSES)
    clients = make_clients(x, y, parts, classes=CLASSES, keys=keys, config=config)
    head = initial_head("linear", CLASSES, DIM)
    # client-2 drops out: the released sum holds two shares
    noise = []
    for c in clients[:2]:
        clean = clip_to_norm(c.local_train(head, 1).to_vector() - head.to_vector(), dp.clip_norm)
        noise.append(c.fedavg_contribution(head, 1)[:-1] - clean)
    total = np.sum(noise, axis=0)
    target = dp.noise_multiplier * dp.clip_norm
    n = total.size
    # the sample std of n Gaussian values is within 5 / sqrt(2 n) of the true one (relative)
    margin = 5 / np.sqrt(2 * n)
    assert clients[0].noise_shares == 2
    assert abs(total.std() / target - 1) < margin
    # positive control: shares sized for all three registered hospitals fall short
    short = noise_share((2, n), target, 3, np.random.default_rng(1)).sum(axis=0)
    assert short.std() / target < 1 - margin

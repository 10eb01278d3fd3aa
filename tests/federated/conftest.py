"""A small federation on synthetic class-clustered features (fast), shared by the FL tests."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from hevit.data import iid_partition, stratified_split
from hevit.federated import FederatedConfig, FederationKeys, ServerKeys, make_clients

CLASSES = 3
DIM = 96


def clustered_features(seed: int, rows: int = 360, dim: int = DIM, classes: int = CLASSES):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, dim))
    labels = rng.integers(0, classes, rows)
    features = 0.4 * centres[labels] + rng.standard_normal((rows, dim)) + 1.5
    return features, labels


@dataclass
class Federation:
    x: np.ndarray
    y: np.ndarray
    train: np.ndarray
    test: np.ndarray
    parts: list
    keys: FederationKeys
    server_keys: ServerKeys

    def clients(self, config: FederatedConfig):
        return make_clients(
            self.x[self.train],
            self.y[self.train],
            self.parts,
            classes=CLASSES,
            keys=self.keys,
            config=config,
        )


@pytest.fixture(scope="session")
def federation() -> Federation:
    x, y = clustered_features(7)
    train, test = stratified_split(y, test_fraction=0.3, seed=0)
    parts = iid_partition(np.arange(len(train)), clients=3, seed=0)
    keys = FederationKeys.generate(
        aggregation_preset="release",
        inference_preset="single-row",
        inference_layout="sample",
        dim=DIM,
        classes=CLASSES,
    )
    return Federation(x, y, train, test, parts, keys, keys.server_keys())

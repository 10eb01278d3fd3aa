"""Shared fixtures: one seeded generator per test and cached CKKS key sets."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from hevit import he

BASE_SEED = 20261121


@pytest.fixture
def rng(request) -> np.random.Generator:
    """Fresh inputs per test, reproducible per test id (seed printed on failure via the id)."""
    return np.random.default_rng(BASE_SEED + zlib.crc32(request.node.nodeid.encode()))


class KeyCache:
    """Key generation is the slowest setup step; tests share key sets per (preset, steps)."""

    def __init__(self) -> None:
        self._cache: dict = {}

    def get(self, preset: str, rotation_steps=()) -> he.SecretContext:
        key = (preset, tuple(sorted(set(rotation_steps))))
        if key not in self._cache:
            params = he.CkksParams.preset(preset)
            self._cache[key] = he.SecretContext.generate(params, rotation_steps=key[1])
        return self._cache[key]


@pytest.fixture(scope="session")
def keys() -> KeyCache:
    return KeyCache()

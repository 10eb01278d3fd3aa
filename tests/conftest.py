"""Shared fixtures: one seeded generator per test and cached CKKS key sets."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np
import pytest

import hevit
from hevit import he

BASE_SEED = 20261121

# CI tests the installed wheel (.ci/run): a hevit imported from this checkout's sources would
# test the tree instead of the artefact, so it is refused rather than silently used
if os.environ.get("HEVIT_TEST_INSTALLED") == "1":
    _sources = Path(__file__).resolve().parents[1] / "python"
    if _sources in Path(hevit.__file__).resolve().parents:
        raise pytest.UsageError(
            f"HEVIT_TEST_INSTALLED=1 but hevit was imported from the checkout ({hevit.__file__})"
        )


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

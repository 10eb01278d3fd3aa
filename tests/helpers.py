"""Small input generators shared by tests."""

from __future__ import annotations

import numpy as np


def rows_with_norm(rng: np.random.Generator, rows: int, cols: int, norm: float) -> np.ndarray:
    """Gaussian rows scaled to a given L2 norm (the worst case a context admits)."""
    x = rng.standard_normal((rows, cols))
    return x * (norm / np.linalg.norm(x, axis=1, keepdims=True))

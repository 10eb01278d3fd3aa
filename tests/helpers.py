"""Small input generators and paths shared by tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

#: Real LC25000 lung images shipped beside the project (see ../shared/data/README.md).
LC25000 = Path(__file__).resolve().parents[2] / "shared" / "data" / "lc25000_lung"


def rows_with_norm(rng: np.random.Generator, rows: int, cols: int, norm: float) -> np.ndarray:
    """Gaussian rows scaled to a given L2 norm (the worst case a context admits)."""
    x = rng.standard_normal((rows, cols))
    return x * (norm / np.linalg.norm(x, axis=1, keepdims=True))


def require_lc25000() -> Path:
    if not (LC25000 / "lung_aca").is_dir():
        pytest.fail(
            f"real test images missing: {LC25000} (the shared data folder must sit beside the checkout)"
        )
    return LC25000

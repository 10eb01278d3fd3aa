"""Optional differential privacy: clipping, Gaussian noise shares and the accountant.

Each client adds its share ``N(0, (z * C)^2 / Q)`` of the noise, Q being the quorum (the fewest
contributions a round may close with), so every released aggregate of k >= Q clients carries at
least ``N(0, (z * C)^2)`` (k / Q times its variance; a round that loses clients down to the quorum
still meets the nominal multiplier z, from which epsilon is computed) (distributed Gaussian mechanism: under encryption no single party
sees a less noisy sum). ``he-fedavg``/``plain-fedavg`` clip each client's model delta to norm C
(client-level DP, one Gaussian release per round); ``he-ridge`` clips each feature row to norm 1,
so one record changes the statistics by at most ``sqrt(6)`` in L2 (record-level DP, one release).
Epsilon comes from Google's ``dp-accounting`` (RDP accountant) for the stated delta.

Noise shares come from OS entropy: noise an adversary can predict gives no privacy.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass

import numpy as np

__all__ = ["RIDGE_RECORD_SENSITIVITY", "DPConfig", "clip_to_norm", "epsilon", "noise_share"]

#: L2 change of the ridge statistics when one unit-norm row (with its bias 1 and one-hot label) is
#: added or removed: ||xa xa^T||_F <= 2 and ||xa y^T||_F <= sqrt(2).
RIDGE_RECORD_SENSITIVITY = math.sqrt(6.0)


@dataclass(frozen=True)
class DPConfig:
    noise_multiplier: float
    clip_norm: float = 1.0
    delta: float = 1e-5

    def __post_init__(self) -> None:
        if not self.noise_multiplier > 0:
            raise ValueError(f"noise_multiplier must be positive, got {self.noise_multiplier}")
        if not self.clip_norm > 0:
            raise ValueError(f"clip_norm must be positive, got {self.clip_norm}")
        if not 0 < self.delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {self.delta}")


def clip_to_norm(v: np.ndarray, bound: float) -> np.ndarray:
    norm = float(np.linalg.norm(v))
    return v * min(1.0, bound / norm) if norm > 0 else v


def noise_share(
    shape, std_total: float, clients: int, rng: np.random.Generator | None = None
) -> np.ndarray:
    """One client's share of Gaussian noise whose sum over ``clients`` has std ``std_total``."""
    rng = rng if rng is not None else np.random.default_rng(secrets.randbits(128))
    return rng.normal(0.0, std_total / math.sqrt(clients), size=shape)


def epsilon(noise_multiplier: float, releases: int, delta: float) -> float:
    """Epsilon of ``releases`` Gaussian mechanisms with this noise multiplier (RDP accountant).

    Raises ImportError with the install command when dp-accounting is missing.
    """
    try:
        import dp_accounting
        from dp_accounting import rdp
    except ImportError as exc:
        raise ImportError(
            "differential privacy accounting needs dp-accounting: pip install 'hevit[dp]'"
        ) from exc
    accountant = rdp.RdpAccountant()
    accountant.compose(dp_accounting.GaussianDpEvent(noise_multiplier), count=int(releases))
    return float(accountant.get_epsilon(delta))

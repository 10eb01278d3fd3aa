"""A ciphertext-only adversary whose test can fail: the distinguishing game.

The adversary picks two classes (or two images), receives many messages made under the real
protocol from each, and trains a classifier on what it sees (a ridge classifier on standardised
features: what :class:`hevit.attacks.PublicAdversary` computes from ciphertexts with the public
parameters, i.e. c0 + c1 s' in coefficients for guessed keys s' and c0 - c0' for ciphertexts
sharing a seed; raw ciphertext bytes, which have no power against broken encryption either; or
plaintext values for the unencrypted counterpart). Positive controls in tests/attacks (no key, a
zero key, a reused seed, a planted 8-sparse key guessed right) must leak to it. Its advantage
is ``2 * accuracy - 1`` on held-out messages, with a Wilson interval (95% unless asked). Against
semantically secure encryption the adversary must show no advantage (``leaks``: the interval lies
above 0); the same adversary on the plaintext messages must win (that shows the test has power).
An interval below 0 is chance, not leakage: at confidence c, secure encryption still gives
``leaks`` in a fraction (1 - c) / 2 of games, so a test that must not fail by chance asks for a
high c.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np

__all__ = ["GameResult", "ciphertext_features", "distinguishing_game"]


@dataclass(frozen=True)
class GameResult:
    advantage: float
    ci_low: float
    ci_high: float
    train: int
    test: int
    features: int

    @property
    def contains_zero(self) -> bool:
        return self.ci_low <= 0.0 <= self.ci_high

    @property
    def leaks(self) -> bool:
        """The adversary does better than chance (the whole interval above 0)."""
        return self.ci_low > 0.0

    def to_dict(self) -> dict:
        return {**asdict(self), "contains_zero": self.contains_zero}

    def describe(self) -> str:
        return f"{self.advantage:+.3f} [{self.ci_low:+.3f}, {self.ci_high:+.3f}]"


def ciphertext_features(blob: bytes, count: int, *, header: int = 64) -> np.ndarray:
    """The first ``count`` payload bytes of a serialized hevit object after its wire header, as
    numbers (what an adversary without the key can feed a classifier)."""
    payload = np.frombuffer(blob, dtype=np.uint8)[header : header + count]
    if len(payload) < count:
        raise ValueError(f"blob has {len(payload)} payload bytes, fewer than {count}")
    return payload.astype(np.float64)


def _wilson(correct: int, n: int, confidence: float) -> tuple[float, float]:
    z = NormalDist().inv_cdf(0.5 + confidence / 2)  # two-sided quantile (1.96 at 95%)
    p = correct / n
    denom = 1 + z**2 / n
    centre = (p + z**2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z**2 / (4 * n * n)) / denom
    return centre - half, centre + half


def distinguishing_game(
    samples_a: np.ndarray,
    samples_b: np.ndarray,
    *,
    seed: int,
    train_fraction: float = 2 / 3,
    ridge: float = 1.0,
    confidence: float = 0.95,
) -> GameResult:
    """Trains a ridge classifier (labels +-1, standardised features, solved in the dual) on a
    random ``train_fraction`` of the two sample sets and scores it on the rest; the advantage's
    interval is a two-sided Wilson interval at ``confidence``."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    a = np.asarray(samples_a, dtype=np.float64)
    b = np.asarray(samples_b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"need two (samples, features) arrays, got {a.shape} and {b.shape}")
    x = np.vstack([a, b])
    y = np.concatenate([np.ones(len(a)), -np.ones(len(b))])
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    cut = round(train_fraction * len(x))
    train, test = order[:cut], order[cut:]
    if len(test) < 10 or len(train) < 10:
        raise ValueError(f"too few samples ({len(x)}) for a train/test split")
    mean = x[train].mean(axis=0)
    std = x[train].std(axis=0)
    std[std == 0] = 1.0
    z = (x - mean) / std
    gram = z[train] @ z[train].T
    alpha = np.linalg.solve(gram + ridge * len(train) * np.eye(len(train)), y[train])
    scores = z[test] @ (z[train].T @ alpha)
    guesses = np.sign(scores)
    # a score of exactly 0 carries no information: the adversary guesses (a fair coin)
    ties = guesses == 0
    guesses[ties] = rng.choice([-1.0, 1.0], size=int(ties.sum()))
    correct = int(np.sum(guesses == y[test]))
    lo, hi = _wilson(correct, len(test), confidence)
    return GameResult(
        advantage=2 * correct / len(test) - 1,
        ci_low=2 * lo - 1,
        ci_high=2 * hi - 1,
        train=len(train),
        test=len(test),
        features=x.shape[1],
    )

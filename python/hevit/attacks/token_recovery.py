"""Recovering [CLS] tokens from a linear head's update.

One SGD step of ``y = W x + b`` on rows ``x_i`` changes row k of the head by
``-lr sum_i g_ik x_i`` and its bias by ``-lr sum_i g_ik`` (``g_ik`` the logit gradients), so every
change of W lies in the span of the rows, and for one row ``dW_k / db_k = x`` exactly, whatever
the number of local steps (each is rank one along the same x; weight decay adds a small term
along W itself). With several rows each ratio is a weighted mean of them. The server of
``plain-fedavg`` reads W and b of the hospital's local head from its update message, subtracts the
global head it sent, and takes those ratios.
"""

from __future__ import annotations

import numpy as np

__all__ = ["cosine_to_truth", "recover_tokens"]


def recover_tokens(delta_w: np.ndarray, delta_b: np.ndarray) -> np.ndarray:
    """One token estimate per output class: ``dW_k / db_k`` (rows of classes whose bias moved
    by less than 1e-9 of the largest move are left out)."""
    delta_w = np.asarray(delta_w, dtype=np.float64)
    delta_b = np.asarray(delta_b, dtype=np.float64)
    if delta_w.ndim != 2 or delta_b.shape != (delta_w.shape[0],):
        raise ValueError(
            f"need dW (classes, dim) and db (classes,), got {delta_w.shape}, {delta_b.shape}"
        )
    largest = np.abs(delta_b).max()
    if not largest > 0:
        raise ValueError("the bias did not move: no token can be read from this update")
    keep = np.abs(delta_b) > 1e-9 * largest
    return delta_w[keep] / delta_b[keep, None]


def cosine_to_truth(estimates: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """For each true token (rows of ``truth``), the best |cosine| any estimate reaches (the
    adversary does not know which estimate belongs to which row; the sign of a ratio is known,
    but |cos| keeps the score independent of it)."""
    e = np.asarray(estimates, dtype=np.float64)
    t = np.asarray(truth, dtype=np.float64)
    e = e / np.linalg.norm(e, axis=1, keepdims=True)
    t = t / np.linalg.norm(t, axis=1, keepdims=True)
    return np.abs(t @ e.T).max(axis=1)

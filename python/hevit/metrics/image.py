"""PSNR, SSIM and two normalised mutual information definitions."""

from __future__ import annotations

import numpy as np

from .._optional import require

__all__ = ["nmi", "nmi_skimage", "psnr", "ssim"]


def _pair(x_true, x_rec) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(x_true, dtype=np.float64)
    b = np.asarray(x_rec, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"images differ in shape: {a.shape} vs {b.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("images contain NaN or inf")
    return a, b


def _check_range(data_range: float) -> float:
    data_range = float(data_range)
    if not data_range > 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    return data_range


def psnr(x_true, x_rec, *, data_range: float) -> float:
    """Peak signal-to-noise ratio in dB (``skimage.metrics.peak_signal_noise_ratio``)."""
    peak_signal_noise_ratio = require("skimage.metrics", "attacks").peak_signal_noise_ratio

    a, b = _pair(x_true, x_rec)
    return float(peak_signal_noise_ratio(a, b, data_range=_check_range(data_range)))


def ssim(x_true, x_rec, *, data_range: float) -> float:
    """Structural similarity (``skimage.metrics.structural_similarity``), colour channels last."""
    structural_similarity = require("skimage.metrics", "attacks").structural_similarity

    a, b = _pair(x_true, x_rec)
    channel_axis = -1 if a.ndim == 3 else None
    return float(
        structural_similarity(a, b, data_range=_check_range(data_range), channel_axis=channel_axis)
    )


def _joint_histogram(a, b, data_range: float, bins: int) -> np.ndarray:
    edges = np.linspace(0.0, data_range, bins + 1)
    qa = np.clip(np.digitize(a.ravel(), edges[1:-1]), 0, bins - 1)
    qb = np.clip(np.digitize(b.ravel(), edges[1:-1]), 0, bins - 1)
    joint = np.zeros((bins, bins))
    np.add.at(joint, (qa, qb), 1.0)
    return joint / joint.sum()


def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-np.sum(p * np.log(p)))


def nmi(x_true, x_rec, *, data_range: float, bins: int = 32) -> float:
    """Normalised mutual information in [0, 1]: ``I(A; B) / mean(H(A), H(B))``.

    Pixel values are quantised to ``bins`` levels over ``[0, data_range]`` and treated as labels,
    the arithmetic-mean normalisation of scikit-learn's ``normalized_mutual_info_score``. This
    is the [0, 1] scale on which papers report e.g. 0.741 for a near-perfect reconstruction (small
    errors still move pixels across quantisation levels). 32 levels keep the plug-in estimator's
    positive bias small: independent 224 x 224 RGB images score about 0.003.
    """
    a, b = _pair(x_true, x_rec)
    joint = _joint_histogram(a, b, _check_range(data_range), bins)
    ha, hb = _entropy(joint.sum(axis=1)), _entropy(joint.sum(axis=0))
    mi = ha + hb - _entropy(joint)
    denom = 0.5 * (ha + hb)
    return float(mi / denom) if denom > 0 else 1.0


def nmi_skimage(x_true, x_rec, *, bins: int = 100) -> float:
    """``skimage.metrics.normalized_mutual_information``: ``(H(A) + H(B)) / H(A, B)`` in [1, 2]."""
    normalized_mutual_information = require(
        "skimage.metrics", "attacks"
    ).normalized_mutual_information

    a, b = _pair(x_true, x_rec)
    return float(normalized_mutual_information(a, b, bins=bins))

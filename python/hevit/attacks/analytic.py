"""Closed-form gradient inversion.

A linear layer y = W x + b trained on one input leaks x exactly: dL/dW = (dL/dy) x^T and
dL/db = dL/dy, so x = (dL/dW)_i / (dL/db)_i for any output i with a nonzero bias gradient.

A ViT's patch embedding is a linear map shared by all P patches, so its weight gradient mixes
them: dL/dW = G^T X with X the (P, 3 p p) patches and G the (P, D) gradients at the patch tokens.
But every token also receives its own position embedding, whose gradient is exactly G. With
P <= D, G^T has full column rank, and X = lstsq(G^T, dL/dW) recovers every patch of a single
image: this is how near-perfect reconstructions (PSNR > 50 dB) arise from unprotected updates.
"""

from __future__ import annotations

import numpy as np

__all__ = ["invert_linear_layer", "invert_patch_embedding"]


def invert_linear_layer(weight_grad: np.ndarray, bias_grad: np.ndarray) -> np.ndarray:
    """x from the gradients of y = W x + b on a single input (rows with the largest |dL/db|
    are averaged for numerical stability)."""
    weight_grad = np.asarray(weight_grad, dtype=np.float64)
    bias_grad = np.asarray(bias_grad, dtype=np.float64)
    if weight_grad.ndim != 2 or bias_grad.shape != (weight_grad.shape[0],):
        raise ValueError(
            f"need dL/dW (out, in) and dL/db (out,), got {weight_grad.shape} and {bias_grad.shape}"
        )
    if not np.any(bias_grad):
        raise ValueError("all bias gradients are zero: the input cannot be recovered analytically")
    order = np.argsort(-np.abs(bias_grad))
    top = order[: max(1, int(np.sum(np.abs(bias_grad) > 1e-3 * np.abs(bias_grad[order[0]]))))]
    weights = bias_grad[top] ** 2
    estimates = weight_grad[top] / bias_grad[top, None]
    return (weights[:, None] * estimates).sum(axis=0) / weights.sum()


def invert_patch_embedding(
    proj_weight_grad: np.ndarray,
    pos_embed_grad: np.ndarray,
    *,
    image_size: tuple[int, int],
    num_prefix_tokens: int = 1,
) -> np.ndarray:
    """Reconstructs the normalised input image (1, 3, H, W) of a single-image ViT update.

    Parameters
    ----------
    proj_weight_grad : (D, 3, p, p) gradient of ``patch_embed.proj.weight``
    pos_embed_grad : (1, prefix + P, D) gradient of ``pos_embed``
    image_size : (H, W) of the model input
    """
    gw = np.asarray(proj_weight_grad, dtype=np.float64)
    d, channels, p, _ = gw.shape
    h, w = image_size
    grid_h, grid_w = h // p, w // p
    g = np.asarray(pos_embed_grad, dtype=np.float64).reshape(-1, d)[num_prefix_tokens:]
    if g.shape[0] != grid_h * grid_w:
        raise ValueError(
            f"position-embedding gradient has {g.shape[0]} patch rows, expected {grid_h * grid_w}"
        )
    m = gw.reshape(d, channels * p * p)
    patches, *_ = np.linalg.lstsq(g.T, m, rcond=None)  # (P, 3 p p)
    img = (
        patches.reshape(grid_h, grid_w, channels, p, p)
        .transpose(2, 0, 3, 1, 4)
        .reshape(channels, h, w)
    )
    return img[None].astype(np.float32)

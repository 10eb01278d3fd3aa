"""Closed-form gradient inversion.

A linear layer y = W x + b trained on one input leaks x exactly: dL/dW = (dL/dy) x^T and
dL/db = dL/dy, so x = (dL/dW)_i / (dL/db)_i for any output i with a nonzero bias gradient.

A ViT's patch embedding is a linear map shared by all P patches, so its weight gradient mixes
them: dL/dW = G^T X with X the (P, 3 p p) patches and G the (P, D) gradients at the patch tokens.
But every token also receives its own position embedding, whose gradient is exactly G. With
P <= D, G^T has full column rank, and X = lstsq(G^T, dL/dW) recovers every patch of a single
image: this is how near-perfect reconstructions (PSNR > 50 dB) arise from unprotected updates.

With P > D (ViT-Ti/16 at 224 px: 196 patches, 192 dimensions) the patches are known up to the
(P - rank) dimensional null space of G^T: X = X0 + N Z. The attack then picks Z to make the
image smooth (least squared differences between neighbouring pixels, a quadratic problem solved
by conjugate gradients), which costs the exactness of the P <= D case.
"""

from __future__ import annotations

import numpy as np

from .._optional import require

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
    # float32 gradients carry ~1e-7 relative error: directions below 1e-6 of the largest
    # singular value are noise, and count as unseen (null space) rather than being amplified
    patches, _, rank, _ = np.linalg.lstsq(g.T, m, rcond=1e-6)  # (P, 3 p p)
    if rank < g.shape[0]:
        _, _, vt = np.linalg.svd(g.T, full_matrices=True)
        null = vt[rank:].T  # (P, P - rank): patch mixtures the gradients cannot see
        patches = patches + null @ _smoothest(patches, null, (grid_h, grid_w, channels, p))
    return _to_image(patches, (grid_h, grid_w, channels, p))[None].astype(np.float32)


def _to_image(patches: np.ndarray, grid: tuple[int, int, int, int]) -> np.ndarray:
    grid_h, grid_w, channels, p = grid
    return (
        patches.reshape(grid_h, grid_w, channels, p, p)
        .transpose(2, 0, 3, 1, 4)
        .reshape(channels, grid_h * p, grid_w * p)
    )


def _from_image(img: np.ndarray, grid: tuple[int, int, int, int]) -> np.ndarray:
    grid_h, grid_w, channels, p = grid
    return (
        img.reshape(channels, grid_h, p, grid_w, p)
        .transpose(1, 3, 0, 2, 4)
        .reshape(grid_h * grid_w, channels * p * p)
    )


def _smoothest(x0: np.ndarray, null: np.ndarray, grid) -> np.ndarray:
    """Z minimising the squared neighbour differences of the image of x0 + null @ Z."""
    linalg = require("scipy.sparse.linalg", "attacks")
    LinearOperator, cg = linalg.LinearOperator, linalg.cg

    k, cols = null.shape[1], x0.shape[1]

    def grad_adjoint_grad(img):
        # L^T L for horizontal and vertical first differences
        out = np.zeros_like(img)
        dx = img[:, :, 1:] - img[:, :, :-1]
        out[:, :, 1:] += dx
        out[:, :, :-1] -= dx
        dy = img[:, 1:, :] - img[:, :-1, :]
        out[:, 1:, :] += dy
        out[:, :-1, :] -= dy
        return out

    def normal(z_flat):
        z = z_flat.reshape(k, cols)
        return (null.T @ _from_image(grad_adjoint_grad(_to_image(null @ z, grid)), grid)).ravel()

    rhs = -(null.T @ _from_image(grad_adjoint_grad(_to_image(x0, grid)), grid)).ravel()
    op = LinearOperator((k * cols, k * cols), matvec=normal, dtype=np.float64)
    z, _ = cg(op, rhs, maxiter=500, rtol=1e-10)
    return z.reshape(k, cols)

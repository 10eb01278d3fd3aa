"""Procedurally generated H&E-like tiles: hevit's embedded default dataset.

Third-party images cannot ship with hevit, so the out-of-the-box job runs on tiles hevit draws
itself: eosin-pink stroma with hematoxylin-purple nuclei whose density, size, shape and
arrangement depend on the class. They are SYNTHETIC (every report says so) and only stand in for
real data such as LC25000; the real path is ``--data DIR``.

Classes: ``synthetic_benign`` (alveolar air spaces, sparse small round nuclei),
``synthetic_glandular`` (gland rings of nuclei around lumens) and ``synthetic_squamous``
(dense sheets of large irregular nuclei with keratin whorls).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._optional import require

__all__ = ["SYNTHETIC_CLASSES", "synthetic_tile", "write_synthetic_dataset"]

SYNTHETIC_CLASSES = ("synthetic_benign", "synthetic_glandular", "synthetic_squamous")

_EOSIN = np.array([232.0, 170.0, 200.0])
_HEMATOXYLIN = np.array([85.0, 55.0, 135.0])
_WHITE = np.array([245.0, 240.0, 245.0])


def _smooth_field(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Bilinearly upsampled random grid in [0, 1]: low-frequency texture."""
    grid = rng.random((cells + 1, cells + 1))
    t = np.linspace(0, cells, size, endpoint=False)
    i = t.astype(int)
    f = t - i
    rows = grid[i] * (1 - f)[:, None] + grid[i + 1] * f[:, None]
    return rows[:, i] * (1 - f)[None, :] + rows[:, i + 1] * f[None, :]


def _blur(img: np.ndarray, passes: int = 2) -> np.ndarray:
    for _ in range(passes):
        img = (
            img
            + np.roll(img, 1, 0)
            + np.roll(img, -1, 0)
            + np.roll(img, 1, 1)
            + np.roll(img, -1, 1)
        ) / 5.0
    return img


def _paint_ellipses(img, alpha, centers, radii, angles, color, strength, rng):
    size = img.shape[0]
    for (cy, cx), (ry, rx), theta in zip(centers, radii, angles, strict=True):
        r = int(np.ceil(max(ry, rx))) + 1
        y0, y1 = max(int(cy) - r, 0), min(int(cy) + r + 1, size)
        x0, x1 = max(int(cx) - r, 0), min(int(cx) + r + 1, size)
        if y0 >= y1 or x0 >= x1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        dy, dx = yy - cy, xx - cx
        c, s = np.cos(theta), np.sin(theta)
        u = (c * dx + s * dy) / rx
        v = (-s * dx + c * dy) / ry
        inside = np.clip(1.5 - 1.5 * (u * u + v * v), 0.0, 1.0)
        # chromatin texture inside the nucleus
        inside *= 0.75 + 0.25 * rng.random(inside.shape)
        a = alpha[y0:y1, x0:x1]
        a[:] = np.maximum(a, inside * strength)
    img[:] = img * (1 - alpha[..., None]) + color * alpha[..., None]


def synthetic_tile(label: int, *, size: int = 224, seed: int = 0) -> np.ndarray:
    """One (size, size, 3) uint8 tile of class ``label``; the same (label, seed) gives the same tile."""
    if label not in range(len(SYNTHETIC_CLASSES)):
        raise ValueError(f"label must be in 0..{len(SYNTHETIC_CLASSES) - 1}, got {label}")
    rng = np.random.default_rng([seed, label, size])
    scale = size / 224.0
    texture = _smooth_field(rng, size, 6)
    fibers = 0.5 + 0.5 * np.sin(
        np.linspace(0, rng.uniform(8, 20), size)[None, :]
        + 3.0 * _smooth_field(rng, size, 4) * np.pi
    )
    stain = _EOSIN * (0.88 + 0.12 * texture[..., None]) - 18.0 * fibers[..., None]
    img = stain.copy()

    if label == 0:  # benign: alveolar air spaces, sparse small round nuclei on thin septa
        spaces = rng.integers(3, 6)
        yy, xx = np.mgrid[0:size, 0:size]
        air = np.zeros((size, size))
        for _ in range(spaces):
            cy, cx = rng.uniform(0, size, 2)
            r = rng.uniform(25, 55) * scale
            d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) / r
            air = np.maximum(air, np.clip(1.3 - d, 0, 1))
        img = img * (1 - air[..., None]) + _WHITE * air[..., None]
        n = int(rng.integers(40, 70) * scale**2)
        centers = rng.uniform(0, size, (n, 2))
        keep = air[centers[:, 0].astype(int), centers[:, 1].astype(int)] < 0.3
        centers = centers[keep]
        radii = rng.uniform(2.0, 3.2, (len(centers), 2)) * scale
        strength = 0.85
    elif label == 1:  # glandular: rings of elongated nuclei around white lumens
        glands = rng.integers(2, 5)
        yy, xx = np.mgrid[0:size, 0:size]
        centers_list = []
        for _ in range(glands):
            cy, cx = rng.uniform(0.15 * size, 0.85 * size, 2)
            r = rng.uniform(18, 38) * scale
            d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) / (0.7 * r)
            lumen = np.clip(1.2 - d, 0, 1)
            img = img * (1 - lumen[..., None]) + _WHITE * lumen[..., None]
            k = int(2 * np.pi * r / (7 * scale))
            phi = np.linspace(0, 2 * np.pi, k, endpoint=False) + rng.uniform(0, 1)
            centers_list.append(np.stack([cy + r * np.sin(phi), cx + r * np.cos(phi)], 1))
        scatter = rng.uniform(0, size, (int(rng.integers(30, 60) * scale**2), 2))
        centers = np.concatenate([*centers_list, scatter])
        radii = (
            np.stack([rng.uniform(2.5, 3.5, len(centers)), rng.uniform(3.5, 5.5, len(centers))], 1)
            * scale
        )
        strength = 0.9
    else:  # squamous: dense large irregular nuclei, keratin whorls
        yy, xx = np.mgrid[0:size, 0:size]
        for _ in range(rng.integers(1, 3)):
            cy, cx = rng.uniform(0, size, 2)
            d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
            whorl = (0.5 + 0.5 * np.sin(d / (3.0 * scale))) * np.clip(1.0 - d / (35 * scale), 0, 1)
            img = (
                img * (1 - 0.5 * whorl[..., None])
                + np.array([240.0, 120.0, 160.0]) * 0.5 * whorl[..., None]
            )
        n = int(rng.integers(130, 190) * scale**2)
        centers = rng.uniform(0, size, (n, 2))
        radii = rng.uniform(3.5, 6.5, (n, 2)) * scale
        strength = 0.95
    angles = rng.uniform(0, np.pi, len(centers))
    alpha = np.zeros((size, size))
    _paint_ellipses(img, alpha, centers, radii, angles, _HEMATOXYLIN, strength, rng)
    img = _blur(img, 1) + rng.normal(0, 4.0, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def write_synthetic_dataset(root, *, per_class: int = 40, size: int = 224, seed: int = 0) -> Path:
    """Writes ``root/<class>/<class>_<i>.png`` for every synthetic class and returns ``root``."""
    Image = require("PIL.Image", "vit")

    root = Path(root)
    for label, name in enumerate(SYNTHETIC_CLASSES):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            tile = synthetic_tile(label, size=size, seed=seed * 1_000_003 + i)
            Image.fromarray(tile).save(folder / f"{name}_{i:04d}.png")
    (root / "README.txt").write_text(
        "SYNTHETIC H&E-like tiles generated by hevit.data.synthetic "
        f"(seed={seed}, per_class={per_class}, size={size}). Not real patient data.\n"
    )
    return root

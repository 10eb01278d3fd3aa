"""Input conversion shared by the facade: one place decides what a valid matrix is."""

from __future__ import annotations

import math
import os

import numpy as np

from ..errors import LayoutError, ResourceError, ValueRangeError

LAYOUTS = ("batch", "sample", "coefficient")


def as_matrix(x, *, name: str) -> np.ndarray:
    """Returns ``x`` as a C-contiguous float64 2-D array, or raises LayoutError.

    Real integer and floating dtypes are accepted; complex, boolean, object and string arrays are
    refused rather than silently converted.
    """
    return _real_array(x, 2, name, "a 2-D array (rows, features)")


def as_vector(x, *, name: str) -> np.ndarray:
    return _real_array(x, 1, name, "a 1-D array")


def _real_array(x, ndim: int, name: str, what: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype.kind not in "iuf":
        raise LayoutError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim != ndim:
        raise LayoutError(f"{name} must be {what}, got shape {arr.shape}")
    return np.ascontiguousarray(arr, dtype=np.float64)


def check_layout(layout: str) -> str:
    if layout not in LAYOUTS:
        raise LayoutError(
            f"unknown layout {layout!r}: use 'batch' (throughput), 'sample' or 'coefficient' (latency)"
        )
    return layout


#: Most worker threads one call may use (the C++ core refuses more too).
MAX_THREADS = 256


def resolve_threads(threads: int | None) -> int:
    """None means every core this process may use (at most ``MAX_THREADS``); an explicit count
    must be in [1, MAX_THREADS] (:class:`hevit.errors.ResourceError` above it)."""
    if threads is None:
        try:
            return min(len(os.sched_getaffinity(0)), MAX_THREADS)
        except AttributeError:  # not on Linux
            return min(os.cpu_count() or 1, MAX_THREADS)
    threads = int(threads)
    if threads < 1:
        raise ValueRangeError(f"threads must be >= 1 (or None for every core), got {threads}")
    if threads > MAX_THREADS:
        raise ResourceError(f"threads={threads} is above the limit of {MAX_THREADS}")
    return threads


def as_bytes(data, *, what: str) -> bytes:
    if isinstance(data, bytes):
        return data
    if isinstance(data, (bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"{what} must be bytes, bytearray or memoryview, got {type(data).__name__}")


def positive_finite(value, *, name: str) -> float:
    """``value`` as a float, or :class:`hevit.errors.ValueRangeError` unless it is positive and
    finite."""
    number = float(value)
    if not (math.isfinite(number) and number > 0):
        raise ValueRangeError(f"{name} must be a positive finite number, got {value!r}")
    return number

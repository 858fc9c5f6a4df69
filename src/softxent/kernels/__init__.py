"""Backend choice for the fused kernels: one contract, several implementations.

The public NumPy functions validate their input, then ask :func:`cpu` for the
compiled kernels. They get ``None`` (and use the exact NumPy reference path)
when

* the environment variable ``SOFTXENT_REFERENCE`` is set to anything but
  ``""`` or ``"0"`` (read at every call, so tests and benchmarks can switch);
* numba cannot be imported on this machine;
* the dtype is not float32 or float64 (float16 and longdouble take the
  reference path).

The kernels (:mod:`softxent.kernels._cpu`) never validate; the callers do.
Importing this package does not import numba: the first call that needs a
kernel does (and compiles, or loads from numba's on-disk cache).
"""

from __future__ import annotations

import math
import os
import threading
from types import ModuleType

import numpy as np

__all__ = ["cpu", "compiled", "reference_forced", "KERNEL_DTYPES", "as_rows", "from_rows", "scratch"]

KERNEL_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

_cpu_module: ModuleType | None = None
_cpu_failed = False


# On POSIX, CPython keeps os.environ in a dict of bytes (``os.environ._data``,
# which its __setitem__ / __delitem__ and so pytest's monkeypatch keep up to
# date). Read there, the variable costs one dict look-up; os.environ.get
# goes through Mapping.get, encodes the key and raises and catches a
# KeyError when it is unset, which after a pause (a training step, a
# garbage collection) costs several microseconds on every call.
# Anything else (another OS, os.environ replaced by a plain dict) takes os.environ.get.
_POSIX = os.name == "posix"


def reference_forced() -> bool:
    """True when ``SOFTXENT_REFERENCE`` asks for the NumPy reference path."""
    data = getattr(os.environ, "_data", None)
    if _POSIX and type(data) is dict:
        return data.get(b"SOFTXENT_REFERENCE", b"") not in (b"", b"0")
    return os.environ.get("SOFTXENT_REFERENCE", "") not in ("", "0")


def cpu(dtype: np.dtype) -> ModuleType | None:
    """The compiled CPU kernels for ``dtype``, or ``None`` for the reference path."""
    if np.dtype(dtype) not in KERNEL_DTYPES:
        return None
    return compiled()


def compiled() -> ModuleType | None:
    """:func:`cpu` for a caller that knows its dtype is float32 or float64."""
    global _cpu_module, _cpu_failed
    if _cpu_failed or reference_forced():
        return None
    if _cpu_module is None:
        try:
            from . import _cpu
        except ImportError:  # numba missing or incompatible: stay exact, just slower
            _cpu_failed = True
            return None
        _cpu_module = _cpu
    return _cpu_module


def as_rows(a: np.ndarray, axis: int) -> np.ndarray:
    """``a`` with ``axis`` moved last, as a C-contiguous (N, V) array: a view
    when the layout allows, else a copy (the kernels' input contract)."""
    # The common case, classes last, skips np.moveaxis: its axis checks cost
    # more than the kernel on small inputs.
    moved = a if axis in (-1, a.ndim - 1) else np.moveaxis(a, axis, -1)
    n_rows = math.prod(moved.shape[:-1])
    return np.ascontiguousarray(moved).reshape(n_rows, a.shape[axis])


def from_rows(rows: np.ndarray, shape: tuple[int, ...], axis: int) -> np.ndarray:
    """Inverse of :func:`as_rows`: the (N, V) array as ``shape`` with V at ``axis``."""
    if axis in (-1, len(shape) - 1):
        return rows.reshape(shape)
    moved = tuple(n for i, n in enumerate(shape) if i != axis) + (shape[axis],)
    return np.moveaxis(rows.reshape(moved), -1, axis)


# Per-row float64 outputs that a call only reduces (the losses of a mean, the
# log-sum-exps nobody asked for) live in buffers kept per thread and reused:
# a fresh 512 KiB array is a fresh mmap, and its page faults cost more than
# the kernel's work on few classes (65536 rows: two such arrays 0.6 ms, the
# kernel about 2 ms). Buffers of more than _SCRATCH_MAX rows are not kept.
_SCRATCH_MAX = 1 << 20
_scratch = threading.local()


def scratch(n: int, count: int = 1) -> list[np.ndarray]:
    """``count`` float64 work arrays of length ``n``, reused by later calls
    on this thread: the caller must not return or keep them."""
    if n > _SCRATCH_MAX:
        return [np.empty(n) for _ in range(count)]
    buf = getattr(_scratch, "buf", None)
    if buf is None or buf.shape[0] < count * n:  # one buffer cut in ``count``: one look-up a call
        buf = np.empty(min(max(count * n, 2 * (0 if buf is None else buf.shape[0])), count * _SCRATCH_MAX))
        _scratch.buf = buf
    return [buf[k * n : (k + 1) * n] for k in range(count)]

"""The column kernel of the CPU linear head: loss, log-sum-exp and gradient of (V, R) transposed logits.

Imported on first use by :mod:`._linear_blocks` (numba compiles it, or
loads it from its on-disk cache), whose module docstring gives the layout,
the algebra and the measurements. Only :func:`_xent_columns` is called from
outside.
"""

from __future__ import annotations

import itertools
import math
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numba as nb
import numpy as np

from ..kernels._jit import JIT, JIT_SUM
from ..kernels._vmath import vexp

# The shared option dicts, typed for mypy: their values mix types, which numba's stubs cannot match to njit's keywords.
_JIT: dict[str, Any] = JIT
_JIT_SUM: dict[str, Any] = JIT_SUM

# Loops over the R columns of 4 rows at a time, with the accumulators in locals between loads and
# one store: written as acc[j] = max(acc[j], z[v, j]) row by row, LLVM left the loop scalar
# (0.52 against 0.07 ns an element in L2).


@nb.njit(**_JIT_SUM)
def _cols_max(zt, v0, v1, acc):
    """``acc[j] = max(acc[j], zt[v0:v1, j])`` (NaN entries skipped: pass 2 meets them)."""
    n = zt.shape[1]
    v = v0
    while v + 4 <= v1:
        r0, r1, r2, r3 = zt[v], zt[v + 1], zt[v + 2], zt[v + 3]
        for j in range(n):
            a = acc[j]
            x = r0[j]
            a = x if x > a else a
            x = r1[j]
            a = x if x > a else a
            x = r2[j]
            a = x if x > a else a
            x = r3[j]
            a = x if x > a else a
            acc[j] = a
        v += 4
    for u in range(v, v1):
        r0 = zt[u]
        for j in range(n):
            a = acc[j]
            x = r0[j]
            acc[j] = x if x > a else a


@nb.njit(**_JIT_SUM)
def _cols_exp(zt, v0, v1, sh, rb, nb_, db):
    """``e = exp(z - sh)`` over rows v0:v1, stored; per column ``rb`` += the terms with ``z != sh``,
    ``nb_`` += the count of ``z == sh`` (each exactly 1), ``db`` += ``z - sh`` (label smoothing)."""
    n = zt.shape[1]
    zero, one = zt.dtype.type(0.0), zt.dtype.type(1.0)
    v = v0
    while v + 4 <= v1:
        r0, r1, r2, r3 = zt[v], zt[v + 1], zt[v + 2], zt[v + 3]
        for j in range(n):
            m = sh[j]
            d0, d1, d2, d3 = r0[j] - m, r1[j] - m, r2[j] - m, r3[j] - m
            e0, e1, e2, e3 = vexp(d0), vexp(d1), vexp(d2), vexp(d3)
            rb[j] += ((zero if d0 == 0 else e0) + (zero if d1 == 0 else e1)) + (
                (zero if d2 == 0 else e2) + (zero if d3 == 0 else e3)
            )
            nb_[j] += ((one if d0 == 0 else zero) + (one if d1 == 0 else zero)) + (
                (one if d2 == 0 else zero) + (one if d3 == 0 else zero)
            )
            db[j] += (d0 + d1) + (d2 + d3)
            r0[j], r1[j], r2[j], r3[j] = e0, e1, e2, e3
        v += 4
    for u in range(v, v1):
        r0 = zt[u]
        for j in range(n):
            d0 = r0[j] - sh[j]
            e0 = vexp(d0)
            rb[j] += zero if d0 == 0 else e0
            nb_[j] += one if d0 == 0 else zero
            db[j] += d0
            r0[j] = e0


# Rows whose terms are summed in the data's dtype (vectorised at its width) before the float64 sums:
# 16 terms a lane, within 16 ulps of each partial sum.
_SUM_ROWS = 16


@nb.njit(**_JIT)
def _part_sums(zt, v0, v1, sh, rest, ntop, dsum):
    n = zt.shape[1]
    rb, nb_, db = np.empty(n, zt.dtype), np.empty(n, zt.dtype), np.empty(n, zt.dtype)
    for b0 in range(v0, v1, _SUM_ROWS):
        rb[:] = 0
        nb_[:] = 0
        db[:] = 0
        _cols_exp(zt, b0, min(v1, b0 + _SUM_ROWS), sh, rb, nb_, db)
        for j in range(n):
            rest[j] += rb[j]
            ntop[j] += nb_[j]
            dsum[j] += db[j]


@nb.njit(**_JIT)
def _shift_and_labels(part_max, zt, labels, m, sh, z_y):
    """The column maxima ``m`` from the parts', the shift ``sh`` (0 for a fully masked column), the label logits."""
    n_parts, n = part_max.shape
    dt = zt.dtype.type
    for j in range(n):
        a = part_max[0, j]
        for p in range(1, n_parts):
            x = part_max[p, j]
            a = x if x > a else a
        m[j] = a
        sh[j] = a if a > -np.inf else dt(0.0)  # a fully masked column: no -inf - -inf
        z_y[j] = zt[labels[j], j]  # read before pass 2 overwrites it


@nb.njit(**_JIT)
def _finish_columns(zt, labels, smoothing, z_loss, ce_scale, zl_scale, row_scale, m, z_y, rest, ntop, dsum,
                    loss, lse, k_out, sub_out):  # fmt: skip
    """Each column's loss, lse, k and sigma from the parts' sums; the label entries of E'; the count of bad columns."""
    n_cls, n = zt.shape
    dt = zt.dtype.type
    k1 = smoothing / n_cls
    bad = 0
    for j in range(n):
        r, n_top, d_sum = rest[:, j].sum(), ntop[:, j].sum(), dsum[:, j].sum()
        if not (-np.inf < m[j] < np.inf and r == r):
            bad += 1
            continue
        log_s = math.log1p((n_top - 1.0) + r)  # s = n_top + r: exact for a confident row
        row_lse = m[j] + log_s
        lse[j] = row_lse
        # eq. (7) with the smoothed target: (1-eps)(lse - z_y) + eps (lse - mean z), shifted by m
        smooth = k1 * d_sum if k1 > 0.0 else 0.0  # without smoothing a masked class (-inf) adds nothing
        loss[j] = ce_scale * (log_s - (1.0 - smoothing) * (z_y[j] - m[j]) - smooth)
        loss[j] += zl_scale * z_loss * row_lse * row_lse
        z_term = 2.0 * z_loss * zl_scale * row_lse  # d(lse^2)/dz = 2 lse a
        k = (ce_scale + z_term) / (n_top + r) * row_scale[j]
        sub = ce_scale * k1 * row_scale[j]
        a_m1 = math.expm1(z_y[j] - row_lse)  # a_y - 1 without cancellation when a_y -> 1
        g_y = (ce_scale * (a_m1 + smoothing - k1) + z_term * (a_m1 + 1.0)) * row_scale[j]
        e_y = (g_y + sub) / k if k != 0.0 else 0.0
        if not (abs(loss[j]) < np.inf and abs(e_y) < 1e30):
            bad += 1
            continue
        k_out[j] = k
        sub_out[j] = sub
        zt[labels[j], j] = dt(e_y)
    return bad


# --------------------------------------------------------------------------- the parts, on Python threads
#
# The two sweeps split the vocabulary into parts, run on Python threads (the kernels release the GIL)
# rather than numba's parallel loops: numba's OpenMP layer is a second libgomp next to torch's, and
# after each parallel region its worker spins for some milliseconds (about 10 ms of CPU time measured
# here) while MKL's threads want both cores for the next matrix product; idle Python threads sleep.

_pool: ThreadPoolExecutor | None = None
_pool_size = 0
_pool_pid = 0
_pool_lock = threading.Lock()


def _helpers(n: int) -> ThreadPoolExecutor | None:
    """A pool of ``n`` helper threads (the calling thread is the other one), made on first use.

    A new one in a forked child: the parent's threads do not exist there, and its pool would
    queue the parts and never run them.
    """
    global _pool, _pool_size, _pool_pid
    if n <= 0:
        return None
    with _pool_lock:
        if _pool is None or _pool_size != n or _pool_pid != os.getpid():
            if _pool is not None and _pool_pid == os.getpid():
                _pool.shutdown(wait=False)
            _pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="softxent-columns")
            _pool_size, _pool_pid = n, os.getpid()
        return _pool


def _run_parts(fn: Callable[[int], None], n_parts: int, n_threads: int) -> None:
    """``fn(p)`` for every part p, on ``n_threads`` threads (this one included) taking parts as they finish."""
    todo = itertools.count()

    def loop() -> None:
        p = next(todo)  # itertools.count is advanced under the GIL: each part is taken once
        while p < n_parts:
            fn(p)
            p = next(todo)

    pool = _helpers(min(n_threads, n_parts) - 1)
    futures = [] if pool is None else [pool.submit(loop) for _ in range(_pool_size)]
    try:
        loop()
    finally:
        for f in futures:
            f.result()


def _xent_columns(
    zt: np.ndarray, labels: np.ndarray, smoothing: float, z_loss: float, ce_scale: float, zl_scale: float,
    row_scale: np.ndarray, n_parts: int, loss: np.ndarray, lse: np.ndarray, k_out: np.ndarray, sub_out: np.ndarray,
    n_threads: int = 1,
) -> int:  # fmt: skip
    r"""Loss, lse and the gradient's column form of (V, R) transposed logits ``zt``, in place; returns
    how many columns need the row kernel (NaN, fully masked, infinite loss).

    ``zt`` becomes E' with :math:`G_{vr} = k_r E'_{vr} - \sigma_r` (``k_out``, ``sub_out``; see
    :mod:`._linear_blocks`); ``row_scale`` multiplies each column's gradient, not its loss. The
    vocabulary's ``n_parts`` parts are swept on ``n_threads`` threads.
    """
    n_cls, n = zt.shape
    step = (n_cls + n_parts - 1) // n_parts
    part_max = np.full((n_parts, n), -np.inf, dtype=zt.dtype)
    _run_parts(lambda p: _cols_max(zt, p * step, min(n_cls, (p + 1) * step), part_max[p]), n_parts, n_threads)
    m, z_y, sh = np.empty(n), np.empty(n), np.empty(n, dtype=zt.dtype)
    _shift_and_labels(part_max, zt, labels, m, sh, z_y)
    rest, ntop, dsum = np.zeros((n_parts, n)), np.zeros((n_parts, n)), np.zeros((n_parts, n))

    def sums(p: int) -> None:
        _part_sums(zt, p * step, min(n_cls, (p + 1) * step), sh, rest[p], ntop[p], dsum[p])

    _run_parts(sums, n_parts, n_threads)
    return int(
        _finish_columns(zt, labels, smoothing, z_loss, ce_scale, zl_scale, row_scale, m, z_y, rest, ntop, dsum,
                        loss, lse, k_out, sub_out)
    )  # fmt: skip

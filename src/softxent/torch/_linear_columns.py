"""The column kernel of the CPU linear head: loss, log-sum-exp and gradient of (V, R) transposed logits.

Imported on first use by :mod:`._linear_blocks` (numba compiles it, or
loads it from its on-disk cache), whose module docstring gives the layout,
the algebra and the measurements. Only :func:`_xent_columns` is called from
outside.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from ..kernels._jit import JIT, JIT_SUM
from ..kernels._vmath import vexp

# Loops over the R columns of 4 rows at a time, with the accumulators in locals between loads and
# one store: written as acc[j] = max(acc[j], z[v, j]) row by row, LLVM left the loop scalar
# (0.52 against 0.07 ns an element in L2).


@nb.njit(**JIT_SUM)
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


@nb.njit(**JIT_SUM)
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


@nb.njit(**JIT)
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


@nb.njit(parallel=True, **JIT)
def _xent_columns(zt, labels, smoothing, z_loss, ce_scale, zl_scale, row_scale, n_parts, loss, lse, k_out, sub_out):
    r"""Loss, lse and the gradient's column form of (V, R) transposed logits ``zt``, in place; returns
    how many columns need the row kernel (NaN, fully masked, infinite loss).

    ``zt`` becomes E' with :math:`G_{vr} = k_r E'_{vr} - \sigma_r` (``k_out``, ``sub_out``; see
    the module docstring); ``row_scale`` multiplies each column's gradient, not its loss.
    """
    n_cls, n = zt.shape
    dt = zt.dtype.type
    step = (n_cls + n_parts - 1) // n_parts
    part_max = np.full((n_parts, n), -np.inf, dtype=zt.dtype)
    for p in nb.prange(n_parts):
        _cols_max(zt, p * step, min(n_cls, (p + 1) * step), part_max[p])
    m = np.empty(n)
    sh = np.empty(n, dtype=zt.dtype)
    for j in range(n):
        a = part_max[0, j]
        for p in range(1, n_parts):
            x = part_max[p, j]
            a = x if x > a else a
        m[j] = a
        sh[j] = a if a > -np.inf else dt(0.0)  # a fully masked column: no -inf - -inf
    z_y = np.empty(n)
    for j in range(n):
        z_y[j] = zt[labels[j], j]  # read before pass 2 overwrites it
    rest, ntop, dsum = np.zeros((n_parts, n)), np.zeros((n_parts, n)), np.zeros((n_parts, n))
    for p in nb.prange(n_parts):
        _part_sums(zt, p * step, min(n_cls, (p + 1) * step), sh, rest[p], ntop[p], dsum[p])
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

"""Softmax cross-entropy with integer labels for few classes (V <= 64), across rows.

:func:`_xent_index_tiles` runs a tile of rows at a time, transposed so that
every loop runs along rows (the vector lanes) instead of along a row too
short for a vector register; rows that need care go to
:func:`._rows._xent_index_rows`. The copies into and out of the tile are
:mod:`._short_rows`' (8x8 transposes in registers for float32, V >= 8),
and the next tile's rows are prefetched while one computes. For float32
without class weights or label smoothing (the common call), the passes
over the tile are :mod:`._tile_vec`'s, in explicit vectors of eight rows,
and up to 24 classes there is no tile: :mod:`._narrow_vec` holds eight
rows in registers (one thread, 16384 rows in cache: V = 3 11.8 -> 8.6-9.9
ns a row, V = 10 17.7-18.2 -> 12.7-12.9). The numba loops below run every other
case.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
from numba import types
from numba.extending import overload

from ._jit import JIT
from ._narrow_vec import NARROW_V, narrow_rows
from ._rows import _xent_index_rows
from ._short_rows import _copy_in, _copy_out, _prefetch_rows
from ._tile_vec import plain_tile, vec_tile
from ._vmath import _vlog1p, from_key, order_key, vexp

# --------------------------------------------------------------------------- few classes
#
# With few classes (V <= _SMALL_V) a row is shorter than a vector register, so
# the row loops of _rows.py run mostly scalar remainders and per-row libm
# calls. The tile kernel transposes tiles of _TILE rows into a (V, _TILE)
# buffer and runs every step across rows instead: the exponentials, and the
# per-row log through _vlog1p. Rows that need care (NaN, +-inf, every class
# masked) are left to the row kernel, which sees them untouched.

_SMALL_V = 64
_TILE = 64


def _key_array(n, like):  # pragma: no cover - replaced by the overload inside jitted code
    """An empty array of ``n`` :func:`order_key` integers for floats like ``like``."""
    raise NotImplementedError


@overload(_key_array, inline="always")
def _key_array_overload(n, like):
    # int32 keys for float32: the tile max then runs 8 lanes wide (AVX2), as
    # the data does, instead of 4 with int64 keys.
    if isinstance(like, types.Float) and like.bitwidth == 32:
        return lambda n, like: np.empty(n, dtype=np.int32)
    if isinstance(like, types.Float) and like.bitwidth == 64:
        return lambda n, like: np.empty(n, dtype=np.int64)
    return None


@nb.njit(**JIT)
def _xent_index_tiles(
    z, labels, weight, smoothing, sample_weight, inv_t, grad_scale, grad, need_grad, loss, lse, lo, hi
):
    """Rows ``lo:hi`` of :func:`softmax_xent_index` for few classes, across rows."""
    start = lo
    if vec_tile(z.dtype.type(0.0)) and z.shape[1] < NARROW_V and weight.shape[0] == 0 and smoothing == 0.0:
        # float32, V <= 24, the common options: eight rows in registers (._narrow_vec);
        # a group with a row that needs care, and the last rows, take the tiles.
        n_groups = (hi - lo) // 8
        bad = np.empty(n_groups, dtype=np.int8)
        narrow_rows(z, labels, sample_weight, n_groups, lo, inv_t, grad_scale, grad, need_grad, loss, lse, bad)
        for k in range(n_groups):
            if bad[k]:
                _tiles(z, labels, weight, smoothing, sample_weight, inv_t, grad_scale, grad, need_grad,
                       loss, lse, lo + 8 * k, lo + 8 * k + 8)  # fmt: skip
        start = lo + 8 * n_groups
    if start < hi:
        _tiles(z, labels, weight, smoothing, sample_weight, inv_t, grad_scale, grad, need_grad, loss, lse, start, hi)


@nb.njit(**JIT)
def _tiles(z, labels, weight, smoothing, sample_weight, inv_t, grad_scale, grad, need_grad, loss, lse, lo, hi):
    """Rows ``lo:hi`` of :func:`softmax_xent_index` for few classes, by tiles of 64 transposed rows."""
    n_cls = z.shape[1]
    has_w = weight.shape[0] > 0
    has_sw = sample_weight.shape[0] > 0
    k1 = smoothing / n_cls
    keep = 1.0 - smoothing
    w_sum = 0.0
    for c in range(n_cls):
        w_sum += weight[c] if has_w else 1.0
    dt = z.dtype.type
    one = dt(1.0)
    zero = dt(0.0)
    it = dt(inv_t)
    plain = not has_w and k1 == 0.0
    # float32 without class weights or smoothing: the passes in explicit
    # vectors, eight rows per register (see _tile_vec), reading the labels
    # and sample weights and writing the losses in the batch's own arrays.
    vec = plain and vec_tile(zero)
    buf = np.empty((n_cls, _TILE), dtype=z.dtype)
    mk = _key_array(_TILE, zero)
    # Labels as integers of the data's width (int32 for float32), compared
    # with class numbers of the same type: a select on "y == c" then runs in
    # the lanes of the data. int64 labels against float32 data halved the
    # vector width of every loop they entered.
    yk = _key_array(_TILE, zero)
    cls = _key_array(n_cls, zero)
    for c in range(n_cls):
        cls[c] = c
    yt = np.empty(_TILE, dtype=np.int64)  # a partial tile's labels for the vector passes
    m = np.empty(_TILE, dtype=z.dtype)
    ties = np.empty(_TILE, dtype=z.dtype)  # counts <= 64: exact in any float
    xy = np.empty(_TILE, dtype=z.dtype)  # the label's logit
    rs = np.empty(_TILE)
    wd = np.empty(_TILE)
    special = np.empty(_TILE, dtype=np.int32)  # 1: a row for the row kernel
    coef = np.empty(_TILE)
    tsum = np.empty(_TILE)
    wys = np.empty(_TILE)
    tops = np.empty(_TILE)
    acoef = np.empty(_TILE)
    sws = np.empty(_TILE)
    losses = np.empty(_TILE)
    lses = np.empty(_TILE)
    g_lab = np.empty(_TILE)  # the label's gradient entry, eq. (16)
    # The gradient's per-row constants in the data's dtype (uniform t_c).
    g_top = np.empty(_TILE, dtype=z.dtype)
    g_a = np.empty(_TILE, dtype=z.dtype)
    g_t = np.empty(_TILE, dtype=z.dtype)
    g_y = np.empty(_TILE, dtype=z.dtype)  # the label's exponential, then its gradient entry
    for base in range(lo, hi, _TILE):
        nr = min(_TILE, hi - base)
        # Rows along the vector lanes (see _short_rows: 8x8 transposes in
        # registers). A last partial tile is padded with copies of its first
        # row.
        _copy_in(z, buf, base, nr)
        if base + _TILE < hi:
            _prefetch_rows(z, grad if need_grad else z, base + _TILE, min(_TILE, hi - base - _TILE))
        for c in range(n_cls):
            for r in range(nr, _TILE):
                buf[c, r] = buf[c, 0]
        direct = vec and nr == _TILE  # the vector passes on the batch's arrays
        if not direct:
            # Per-row inputs, contiguous: the label (-1: ignored, matches no
            # class) and the sample weight.
            for r in range(nr):
                y = labels[base + r]
                yk[r] = y if y >= 0 else -1
            for r in range(nr):
                sws[r] = sample_weight[base + r] if has_sw else 1.0
            for r in range(nr, _TILE):
                yk[r] = yk[0]
                sws[r] = sws[0]
        if direct:
            plain_tile(buf, labels, sample_weight, has_sw, base, inv_t, grad_scale, need_grad, loss, lse, special)
        elif vec:
            for r in range(_TILE):
                yt[r] = yk[r]
            plain_tile(buf, yt, sws, True, 0, inv_t, grad_scale, need_grad, losses, lses, special)
        else:
            # Pass 1: max per row, on integer keys (a float compare-and-select
            # became a masked store, microcoded and slow on AMD); the label's
            # logit and weight picked by selects over the classes, not gathered
            # row by row (measured again with the 8x8 copies: a load per row
            # from the tile, and the label's gradient written after the copy
            # back, were 5-15% slower at V = 3, 10, 20).
            for r in range(_TILE):
                mk[r] = order_key(dt(-np.inf))
                xy[r] = zero
            for c in range(n_cls):
                kc = cls[c]
                for r in range(_TILE):
                    mk[r] = max(mk[r], order_key(buf[c, r]))
                    # A sum of one value and zeros: written as select-or-keep
                    # (xy if not the label), the whole tile ran twice as slow.
                    xy[r] += buf[c, r] if yk[r] == kc else zero
            for r in range(_TILE):
                m[r] = from_key(mk[r], zero)
                wys[r] = 1.0 if yk[r] >= 0 else 0.0
            if has_w:
                for r in range(_TILE):
                    wys[r] = 0.0
                for c in range(n_cls):
                    kc = cls[c]
                    wc = weight[c]
                    for r in range(_TILE):
                        wys[r] += wc if yk[r] == kc else 0.0
            # sum_c w_c d_c, for label smoothing only, before the exponentials
            # overwrite the logits.
            if k1 > 0.0:
                for r in range(_TILE):
                    wd[r] = 0.0
                for c in range(n_cls):
                    wc = weight[c] if has_w else 1.0
                    if wc > 0.0:
                        for r in range(_TILE):
                            wd[r] += wc * np.float64((buf[c, r] - m[r]) * it)
            # Pass 2: exponentials in place, then s = ties + rs as in _split_sum.
            # Separate loops, so that each runs at its own dtype's vector width:
            # a float64 sum in the exponential's loop would run all of it at
            # float64's; the tie count stays in the data's dtype.
            for r in range(_TILE):
                ties[r] = zero
                rs[r] = 0.0
            for c in range(n_cls):
                for r in range(_TILE):
                    buf[c, r] = vexp((buf[c, r] - m[r]) * it)
                for r in range(_TILE):
                    ties[r] += one if buf[c, r] == one else zero
                for r in range(_TILE):
                    e = buf[c, r]
                    rs[r] += np.float64(zero if e == one else e)
            # Per-row scalars, across rows (padding lanes compute harmless
            # values): the label's e_y = exp(d_y) has the bits of its stored
            # exponential (same operands, same function).
            for r in range(_TILE):
                g_y[r] = vexp((xy[r] - m[r]) * it)
            # Two loops, so that each vectorises (one with every per-row array
            # in it was left scalar: too many arrays for LLVM's alias checks).
            for r in range(_TILE):
                mr = np.float64(m[r])
                wy = wys[r]
                t_sum = (keep * wy + k1 * w_sum) if yk[r] >= 0 else 0.0
                tr = np.float64(ties[r])
                u = (tr - 1.0) + rs[r]
                s = tr + rs[r]
                log_s = _vlog1p(u)
                counts = sws[r] * t_sum > 0.0
                d_y = (np.float64(xy[r]) - mr) * inv_t
                # A label of weight 0 adds nothing, even on a masked class (0 * -inf).
                row_loss = sws[r] * (
                    t_sum * log_s - (keep * wy * d_y if wy > 0.0 else 0.0) - (k1 * wd[r] if k1 > 0.0 else 0.0)
                )
                coef[r] = sws[r] * inv_t * grad_scale if counts else 0.0
                tsum[r] = t_sum
                tops[r] = -t_sum * (u / s)  # t_sum (a_max - 1), exact: a_max - 1 = -(s - 1)/s
                acoef[r] = t_sum / s
                lses[r] = mr * inv_t + log_s
                losses[r] = row_loss if counts else 0.0
            for r in range(_TILE):
                cf = coef[r]
                top = tops[r]
                ac = acoef[r]
                wy = wys[r]
                # The label's entry also carries (1 - eps) w_y of the target: eq. (16).
                e_y = np.float64(g_y[r])
                lab = (top + k1 * (w_sum - wy)) if e_y == 1.0 else (ac * e_y - (k1 + keep) * wy)
                g_lab[r] = lab * cf
                g_y[r] = dt(lab * cf)
                g_a[r] = dt(ac * cf)
                g_top[r] = dt((top + (tsum[r] - k1)) * cf)
                g_t[r] = dt(k1 * cf)
            # Bitwise, not short-circuit: a branch per row kept the loop scalar.
            for r in range(nr):
                mr = np.float64(m[r])
                special[r] = not (math.isfinite(mr) & (rs[r] == rs[r]) & ((k1 == 0.0) | math.isfinite(wd[r])))
            if need_grad:
                # eq. (15) across rows, the label's entry selected in the same
                # loop (a scatter row by row cost more than the whole loop).
                # Without smoothing the top class needs no case of its own (as
                # in _grad_row); with it, it avoids the cancellation.
                if not has_w and k1 == 0.0:
                    for c in range(n_cls):
                        kc = cls[c]
                        for r in range(_TILE):
                            buf[c, r] = g_y[r] if yk[r] == kc else buf[c, r] * g_a[r]
                elif not has_w:  # uniform t_c: per-row constants, the data's dtype
                    for c in range(n_cls):
                        kc = cls[c]
                        for r in range(_TILE):
                            e = buf[c, r]
                            v = g_top[r] if e == one else e * g_a[r] - g_t[r]
                            buf[c, r] = g_y[r] if yk[r] == kc else v
                else:
                    for c in range(n_cls):
                        t_c = k1 * weight[c]
                        kc = cls[c]
                        for r in range(_TILE):
                            e = np.float64(buf[c, r])
                            val = (tops[r] + (tsum[r] - t_c)) if e == 1.0 else (acoef[r] * e - t_c)
                            buf[c, r] = g_lab[r] if yk[r] == kc else val * coef[r]
        if not direct:
            for r in range(nr):
                loss[base + r] = losses[r]
                lse[base + r] = lses[r]
        if need_grad:
            # The copy back writes whole blocks of rows: a row left to the
            # row kernel gets its logits back first, so that in place the
            # row kernel still finds them.
            n_special = 0
            for r in range(nr):
                n_special += special[r]
            if n_special:
                for r in range(nr):
                    if special[r]:
                        for c in range(n_cls):
                            buf[c, r] = z[base + r, c]
            _copy_out(buf, grad, base, nr)
        for r in range(nr):
            if special[r]:
                _xent_index_rows(
                    z, labels, weight, smoothing, sample_weight, inv_t, grad_scale, grad, need_grad,
                    loss, lse, base + r, base + r + 1,
                )  # fmt: skip

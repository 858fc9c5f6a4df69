"""Transposes between short rows and the few-class tiles of :mod:`._tiles`.

The tile kernel runs across rows: it copies a tile of rows into a (V, R)
buffer, works along its rows (the vector lanes), and copies the gradient
back. Written as plain loops, with V known only at run time, both copies
ran one element at a time: about 1.5 ns an element for the two together,
half the whole kernel's time at 65536x10 float32 (one core, AVX2). Here:

* :func:`_t8x8`, an 8x8 float32 transpose in vector registers: eight rows
  of eight loaded as vectors, shuffled (three rounds of eight
  ``shufflevector``: unpack, pairs, halves), stored as eight vectors. For
  V >= 8 every row is covered by blocks of eight classes, the last one
  overlapping the one before (``c0 = V - 8``), so that no load or store
  leaves the row: the gradient may be written over the logits themselves
  (``inplace``), and rows of other threads' blocks are never touched;
* :func:`_copy_in` / :func:`_copy_out`: a tile's copies, through
  :func:`_t8x8` for float32 and V >= 8 (eight rows at a time, the rest
  one by one), else through loops specialised for each V < 8, where LLVM,
  knowing the trip count, vectorises the strided accesses (65536x3: 0.46
  against 3.6 ns an element for both copies).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from ._jit import JIT, JIT_SUM
from ._row_vec import group_rows, vec_rows
from ._rows import _xent_index_rows
from ._tile_vec import transpose8
from ._vmath import _vlog1p, bits_float, float_bits, vexp

# --------------------------------------------------------------------------- 8x8 transpose


@intrinsic
def _t8x8(typingctx, src, i, c, dst, j, r):
    """``dst[j + m, r + k] = src[i + k, c + m]`` for k, m in 0..7: float32 2-D arrays.

    The caller guarantees the 8x8 blocks lie inside both arrays (no bounds
    checks) and that they do not overlap.
    """
    f32 = types.float32
    if not (isinstance(src, types.Array) and isinstance(dst, types.Array)):
        return None
    if src.dtype != f32 or dst.dtype != f32 or src.ndim != 2 or dst.ndim != 2:
        return None
    if not all(isinstance(a, types.Integer) for a in (i, c, j, r)):
        return None

    def codegen(context, builder, signature, args):
        srcty, ity, cty, dstty, jty, rty = signature.args
        s = context.make_array(srcty)(context, builder, args[0])
        d = context.make_array(dstty)(context, builder, args[3])
        si = context.cast(builder, args[1], ity, types.intp)
        sc = context.cast(builder, args[2], cty, types.intp)
        dj = context.cast(builder, args[4], jty, types.intp)
        dr = context.cast(builder, args[5], rty, types.intp)
        vec = ir.VectorType(ir.FloatType(), 8)

        def ptr(aryty, ary, row, k, col):
            at = builder.add(row, ir.Constant(row.type, k))
            p = cgutils.get_item_pointer(context, builder, aryty, ary, [at, col], wraparound=False)
            return builder.bitcast(p, vec.as_pointer())

        w = transpose8(builder, [builder.load(ptr(srcty, s, si, k, sc), align=4) for k in range(8)])
        for m in range(8):
            builder.store(w[m], ptr(dstty, d, dj, m, dr), align=4)
        return context.get_dummy_value()

    return types.none(src, i, c, dst, j, r), codegen


@intrinsic
def _prefetch2(typingctx, arr, i, j, write):
    """Hint the CPU to fetch the cache line of ``arr[i, j]`` (2-D; ``j`` may run
    past the row: the address is ``i * stride0 + j * stride1`` from the data,
    which for C order is the flat element ``i * V + j``). ``write`` (a
    literal bool) asks for the line to be written. Never faults."""
    if not (isinstance(arr, types.Array) and arr.ndim == 2):
        return None
    if not (isinstance(i, types.Integer) and isinstance(j, types.Integer)):
        return None
    if not isinstance(write, types.BooleanLiteral):
        return None
    rw = 1 if write.literal_value else 0

    def codegen(context, builder, signature, args):
        aryty, ity, jty, _ = signature.args
        ary = context.make_array(aryty)(context, builder, args[0])
        ii = context.cast(builder, args[1], ity, types.intp)
        jj = context.cast(builder, args[2], jty, types.intp)
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [ii, jj], wraparound=False)
        byte_ptr = builder.bitcast(ptr, ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [byte_ptr.type, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(fn, [byte_ptr, i32(rw), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.none(arr, i, j, write), codegen


@nb.njit(inline="always", **JIT)
def _prefetch_rows(z, g, i, nr):
    """Ask for rows ``i:i + nr`` of ``z`` (and of ``g`` for writing, unless it is
    ``z``): while one tile computes, memory brings the next (the tile's
    loads then hit the cache; 65536x10 float32, one core: about a third of
    the time went to waiting on them)."""
    step = 64 // z.itemsize
    n = nr * z.shape[1]
    for j in range(0, n, step):
        _prefetch2(z, i, j, False)
    if g.ctypes.data != z.ctypes.data:
        for j in range(0, n, step):
            _prefetch2(g, i, j, True)


@intrinsic
def _fetch_add(typingctx, counter, index, value):
    """Atomically add ``value`` to the int64 ``counter[index]`` and return its
    previous value (``atomicrmw add``, sequentially consistent)."""
    if not (isinstance(counter, types.Array) and counter.dtype == types.int64):
        return None
    if not (isinstance(index, types.Integer) and isinstance(value, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        aryty, ity, vty = signature.args
        ary = context.make_array(aryty)(context, builder, args[0])
        at = context.cast(builder, args[1], ity, types.intp)
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [at], wraparound=False)
        val = context.cast(builder, args[2], vty, types.int64)
        return builder.atomic_rmw("add", ptr, val, "seq_cst")

    return types.int64(counter, index, value), codegen


# --------------------------------------------------------------------------- tile copies


@nb.njit(inline="always", **JIT)
def _rows_in(z, buf, base, r0, r1, n_cls):
    """``buf[c, r] = z[base + r, c]`` for rows r0:r1, one row at a time (``n_cls``
    a constant where the caller specialises it)."""
    for r in range(r0, r1):
        for c in range(n_cls):
            buf[c, r] = z[base + r, c]


@nb.njit(inline="always", **JIT)
def _rows_out(buf, g, base, r0, r1, n_cls):
    """``g[base + r, c] = buf[c, r]`` for rows r0:r1."""
    for r in range(r0, r1):
        for c in range(n_cls):
            g[base + r, c] = buf[c, r]


@nb.njit(**JIT)
def _blocks_in(z, buf, base, nr):
    """Rows ``base:base + nr`` of float32 ``z`` (V >= 8) into ``buf`` (V, R): by 8x8 blocks."""
    n_cls = z.shape[1]
    full = nr - nr % 8
    for r0 in range(0, full, 8):
        for c0 in range(0, n_cls - 7, 8):
            _t8x8(z, base + r0, c0, buf, c0, r0)
        if n_cls % 8:
            _t8x8(z, base + r0, n_cls - 8, buf, n_cls - 8, r0)
    _rows_in(z, buf, base, full, nr, n_cls)


@nb.njit(**JIT)
def _blocks_out(buf, g, base, nr):
    """``buf`` (V, R) back into rows ``base:base + nr`` of float32 ``g`` (V >= 8)."""
    n_cls = g.shape[1]
    full = nr - nr % 8
    for r0 in range(0, full, 8):
        for c0 in range(0, n_cls - 7, 8):
            _t8x8(buf, c0, r0, g, base + r0, c0)
        if n_cls % 8:
            _t8x8(buf, n_cls - 8, r0, g, base + r0, n_cls - 8)
    _rows_out(buf, g, base, full, nr, n_cls)


def _copy_in(z, buf, base, nr):  # pragma: no cover - replaced by the overload inside jitted code
    """``buf[c, r] = z[base + r, c]`` for r < nr (buf is (V, R), R >= nr)."""
    raise NotImplementedError


def _copy_out(buf, g, base, nr):  # pragma: no cover - replaced by the overload inside jitted code
    """``g[base + r, c] = buf[c, r]`` for r < nr."""
    raise NotImplementedError


@nb.njit(**JIT)
def _short_in(z, buf, base, nr):
    """:func:`_copy_in` one row at a time, with a constant V for each V < 8:
    LLVM unrolls the classes and vectorises along rows (a run-time V left
    both loops scalar)."""
    n_cls = z.shape[1]
    if n_cls == 1:
        _rows_in(z, buf, base, 0, nr, 1)
    elif n_cls == 2:
        _rows_in(z, buf, base, 0, nr, 2)
    elif n_cls == 3:
        _rows_in(z, buf, base, 0, nr, 3)
    elif n_cls == 4:
        _rows_in(z, buf, base, 0, nr, 4)
    elif n_cls == 5:
        _rows_in(z, buf, base, 0, nr, 5)
    elif n_cls == 6:
        _rows_in(z, buf, base, 0, nr, 6)
    elif n_cls == 7:
        _rows_in(z, buf, base, 0, nr, 7)
    else:
        _rows_in(z, buf, base, 0, nr, n_cls)


@nb.njit(**JIT)
def _short_out(buf, g, base, nr):
    """:func:`_copy_out` one row at a time (as :func:`_short_in`)."""
    n_cls = g.shape[1]
    if n_cls == 1:
        _rows_out(buf, g, base, 0, nr, 1)
    elif n_cls == 2:
        _rows_out(buf, g, base, 0, nr, 2)
    elif n_cls == 3:
        _rows_out(buf, g, base, 0, nr, 3)
    elif n_cls == 4:
        _rows_out(buf, g, base, 0, nr, 4)
    elif n_cls == 5:
        _rows_out(buf, g, base, 0, nr, 5)
    elif n_cls == 6:
        _rows_out(buf, g, base, 0, nr, 6)
    elif n_cls == 7:
        _rows_out(buf, g, base, 0, nr, 7)
    else:
        _rows_out(buf, g, base, 0, nr, n_cls)


def _is_f32(a):
    return isinstance(a, types.Array) and a.dtype == types.float32


@overload(_copy_in, inline="always")
def _copy_in_overload(z, buf, base, nr):
    # Resolved when numba compiles: float64 never meets the float32 transpose.
    if _is_f32(z) and _is_f32(buf):

        def copy32(z, buf, base, nr):
            if z.shape[1] >= 8:
                _blocks_in(z, buf, base, nr)
            else:
                _short_in(z, buf, base, nr)

        return copy32
    return lambda z, buf, base, nr: _short_in(z, buf, base, nr)


@overload(_copy_out, inline="always")
def _copy_out_overload(buf, g, base, nr):
    if _is_f32(g) and _is_f32(buf):

        def copy32(buf, g, base, nr):
            if g.shape[1] >= 8:
                _blocks_out(buf, g, base, nr)
            else:
                _short_out(buf, g, base, nr)

        return copy32
    return lambda buf, g, base, nr: _short_out(buf, g, base, nr)


# --------------------------------------------------------------------------- rows of 65-256 classes
#
# Between the tiles (V <= 64) and the long rows of _rows.py, a row is a few
# vectors long: the row loop of _rows.py spent more time per row outside its
# passes (a view per row and argument, so reference counts; a call per pass;
# libm's log per row) than in them (8192x100 float32, one core: about 1.6 ns
# an element, of which the passes' vector work is under a third). Here
# rows go by groups of _GROUP: passes 1 and 2 of each row on 2-D indices
# (no views), then the per-row scalars of the whole group at once, across
# rows (vectorised: the log through _vlog1p), then pass 3 of each row while
# the group is still in L1. Same sums as _rows.py (one float32 block of at
# most 256 terms, the exact split for confident rows), so the same accuracy.
# Label smoothing and rows that need care (NaN or +-inf max, every class
# masked) go to the row kernel, which sees them untouched. float32 rows take
# :func:`._row_vec.group_rows` instead, every pass and the per-row work in
# explicit vectors, eight rows at a time (one thread, 2048 rows in cache,
# V = 100: 95-103 ns a row with these numba passes, 89-90 with vector
# passes 1-3 and the per-row work here, 78-80 with everything in vectors);
# these numba passes remain for float64.

_GROUP = 16
_MID_V = 256


@nb.njit(**JIT_SUM)
def _group_exp(z, lo, ng, e, e_lo, inv_t, ms, ss):
    """Passes 1 and 2 of rows ``lo:lo + ng``: ``ms[k]`` = the row's max (NaN,
    +-inf: the row is left alone), ``e[e_lo + k] = exp((z[lo + k] - m) / T)``
    and ``ss[k]`` = their float32 (data dtype) sum as float64. ``e`` must
    not be ``z`` (see :func:`_group_exp_self`). One function for the group,
    so that LLVM hoists the exponential's constants out of the row loop (a
    call per row and pass cost more than the row's vector work)."""
    lowest = z.dtype.type(-np.inf)
    it = z.dtype.type(inv_t)
    scaled = inv_t != 1.0
    for k in range(ng):
        i = lo + k
        # Pass 1 as _rows._row_max: integer max and min of the bits.
        top = float_bits(lowest)
        low = top
        for c in range(z.shape[1]):
            b = float_bits(z[i, c])
            top = b if b > top else top
            low = b if b < low else low
        mm = bits_float(top if top >= 0 else low, lowest)
        m = np.float64(mm)
        ms[k] = m
        if not math.isfinite(m):
            continue
        j = e_lo + k
        acc = z.dtype.type(0.0)
        for c in range(z.shape[1]):
            d = z[i, c] - mm
            v = vexp(d * it if scaled else d)
            e[j, c] = v
            acc += v
        ss[k] = np.float64(acc)


@nb.njit(**JIT_SUM)
def _group_exp_self(z, lo, ng, inv_t, ms, ss):
    """:func:`_group_exp` in place: one array, so that LLVM's vector loop is
    not sent to its scalar fallback by an overlap check."""
    lowest = z.dtype.type(-np.inf)
    it = z.dtype.type(inv_t)
    scaled = inv_t != 1.0
    for k in range(ng):
        i = lo + k
        top = float_bits(lowest)
        low = top
        for c in range(z.shape[1]):
            b = float_bits(z[i, c])
            top = b if b > top else top
            low = b if b < low else low
        mm = bits_float(top if top >= 0 else low, lowest)
        m = np.float64(mm)
        ms[k] = m
        if not math.isfinite(m):
            continue
        acc = z.dtype.type(0.0)
        for c in range(z.shape[1]):
            d = z[i, c] - mm
            v = vexp(d * it if scaled else d)
            z[i, c] = v
            acc += v
        ss[k] = np.float64(acc)


@nb.njit(**JIT)
def _group_scale(g, lo, ng, fs, ys, vals, state):
    """Pass 3 of rows ``lo:lo + ng`` (``state`` 0): ``g[i] *= fs[k]``, then the
    label's entry ``g[i, ys[k]] = vals[k]``."""
    for k in range(ng):
        if state[k] != 0:
            continue
        i = lo + k
        ff = g.dtype.type(fs[k])
        for c in range(g.shape[1]):
            g[i, c] = g[i, c] * ff
        g[i, ys[k]] = vals[k]


@nb.njit(**JIT_SUM)
def _split_at(e, j):
    """``(ties, r)`` of stored exponentials ``e[j]``: the count of ones and the
    float64 sum of the others (:func:`._rows._split_sum`)."""
    ties = 0.0
    r = 0.0
    for c in range(e.shape[1]):
        v = np.float64(e[j, c])
        top = np.float64(v == 1.0)
        ties += top
        r += v * (1.0 - top)
    return ties, r


@nb.njit(**JIT)
def _fill_at(g, i, value):
    for c in range(g.shape[1]):
        g[i, c] = value


@nb.njit(**JIT)
def _xent_index_short(z, labels, weight, sample_weight, inv_t, grad_scale, grad, need_grad, loss, lse, lo, hi):
    """Rows ``lo:hi`` of :func:`softmax_xent_index` without label smoothing,
    for rows of a few vectors (64 < V <= 256). float64: same results as
    :func:`._rows._xent_index_rows` (to the last bit but for the log of the
    normaliser, which :func:`_vlog1p` gives to about 1 ulp); float32:
    :func:`._row_vec.group_rows`, the same math to rounding."""
    n_cls = z.shape[1]
    has_w = weight.shape[0] > 0
    has_sw = sample_weight.shape[0] > 0
    in_place = need_grad and grad.ctypes.data == z.ctypes.data
    if vec_rows(z):  # float32: every pass in explicit vectors (._row_vec), eight rows at a time
        state = np.zeros(hi - lo, dtype=np.int8)
        e = grad if need_grad else np.empty((8, n_cls), dtype=z.dtype)
        group_rows(z, labels, weight, sample_weight, lo, hi, inv_t, grad_scale, e, need_grad, loss, lse, state)
        for i in range(lo, hi):
            if state[i - lo] == 1:  # NaN, +inf or every class -inf: the row kernel's cases
                _xent_index_rows(
                    z, labels, weight, 0.0, sample_weight, inv_t, grad_scale, grad, need_grad, loss, lse, i, i + 1
                )
            elif state[i - lo] == 2:  # a negative NaN (below -inf's bits) slipped past the max
                y = labels[i]
                counts = y >= 0 and (weight[y] if has_w else 1.0) * (sample_weight[i] if has_sw else 1.0) > 0.0
                lse[i] = np.nan
                loss[i] = np.nan if counts else 0.0
                if need_grad:
                    _fill_at(grad, i, np.nan if counts else 0.0)
        return
    # Without a gradient the exponentials go to scratch rows: the same
    # summation as with one, so the loss is identical bit for bit.
    scratch = np.empty((0 if need_grad else _GROUP, n_cls), dtype=z.dtype)
    xy = np.empty(_GROUP)
    ms = np.empty(_GROUP)
    ss = np.empty(_GROUP)
    us = np.zeros(_GROUP)  # lanes of rows left out stay harmless for _vlog1p
    wys = np.empty(_GROUP)
    sws = np.empty(_GROUP)
    log_s = np.empty(_GROUP)
    state = np.zeros(_GROUP, dtype=np.int8)  # 0 normal, 1 to the row kernel, 2 NaN sum
    fs = np.zeros(_GROUP)
    vals = np.zeros(_GROUP)
    ys = np.zeros(_GROUP, dtype=np.int64)
    for g0 in range(lo, hi, _GROUP):
        ng = min(_GROUP, hi - g0)
        for k in range(ng):
            i = g0 + k
            y = labels[i]
            kept = y >= 0
            ys[k] = y if kept else 0
            wys[k] = (weight[y] if has_w else 1.0) if kept else 0.0
            sws[k] = sample_weight[i] if has_sw else 1.0
            xy[k] = np.float64(z[i, y]) if kept else 0.0  # read before an in-place pass 2
        if not need_grad:
            _group_exp(z, g0, ng, scratch, 0, inv_t, ms, ss)
        elif in_place:
            _group_exp_self(z, g0, ng, inv_t, ms, ss)
        else:
            _group_exp(z, g0, ng, grad, g0, inv_t, ms, ss)
        for k in range(ng):
            s = ss[k]
            if not math.isfinite(ms[k]):  # NaN, +inf or every class -inf: the row kernel's cases
                state[k] = 1
            elif s != s:  # a negative NaN (below -inf's bits) slipped past the max
                state[k] = 2
            elif s < 2.0:  # confident: s = ties + r summed exactly, log s = log1p(ties - 1 + r)
                state[k] = 0
                ties, r = _split_at(scratch, k) if not need_grad else _split_at(grad, g0 + k)
                us[k] = (ties - 1.0) + r
                ss[k] = ties + r
            else:
                state[k] = 0
                us[k] = s - 1.0  # exact for s >= 2
        # The log of each row's normaliser, across the group (vectorised).
        for k in range(_GROUP):
            log_s[k] = _vlog1p(us[k])
        for k in range(ng):
            i = g0 + k
            if state[k] == 1:
                _xent_index_rows(
                    z, labels, weight, 0.0, sample_weight, inv_t, grad_scale, grad, need_grad, loss, lse, i, i + 1
                )
                continue
            wy = wys[k]
            sw = sws[k]
            counts = sw * wy > 0.0
            if state[k] == 2:  # NaN in, NaN out for the row
                lse[i] = np.nan
                loss[i] = np.nan if counts else 0.0
                if need_grad:
                    _fill_at(grad, i, np.nan if counts else 0.0)
                state[k] = 3
                continue
            m = ms[k]
            ls = log_s[k]
            lse[i] = m * inv_t + ls
            if not counts:  # ignored or weighted 0: exactly 0, whatever the logits
                loss[i] = 0.0
                if need_grad:
                    _fill_at(grad, i, 0.0)
                state[k] = 3
                continue
            d_y = (xy[k] - m) * inv_t
            # eq. (7) with t = w_y e_y: w_y (log s - d_y).
            loss[i] = sw * (wy * ls - wy * d_y)
            coef = sw * inv_t * grad_scale
            a_coef = wy / ss[k]
            # Without smoothing every class but the label is a_c w_y coef,
            # the top one included (see _rows._grad_row).
            fs[k] = a_coef * coef
            # The label's entry, eq. (16): w_y (a_y - 1), from expm1 when the
            # label is a top class (a_y -> 1 cancels).
            # e_y as pass 2 stored it: the same bits its sum took, without a scalar exponential.
            e_y = np.float64(grad[i, ys[k]]) if need_grad else np.float64(scratch[k, ys[k]])
            val = wy * math.expm1(-ls) if e_y == 1.0 else a_coef * e_y - wy
            vals[k] = val * coef
        if need_grad:
            _group_scale(grad, g0, ng, fs, ys, vals, state)

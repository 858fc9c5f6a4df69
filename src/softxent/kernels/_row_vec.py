"""Passes of rows of 65-256 float32 classes in explicit vectors, for :func:`._short_rows._xent_index_short`.

A row of V classes is ``V // 8`` whole vectors of eight and, when 8 does
not divide V, a last vector that overlaps the one before it (classes
``V - 8 .. V - 1``), so that no load or store leaves the row. Written as
numba loops with V known only at run time, LLVM vectorised each pass four
vectors at a time and ran what was left, up to 31 classes (4 at V = 100),
one class at a time through the scalar exponential.

* :func:`group_exp` (passes 1 and 2 of a group of rows): the max, then
  :math:`e_c = e^{(z_c - m)/T}` stored and summed in float32; the
  overlapping vector's exponentials are stored whole (the overlapped
  classes get the same bits again) and only its new lanes are summed. Its
  logits are loaded before the row's whole vectors, so that ``e`` may be
  ``z`` itself (in place).
* :func:`group_scale` (pass 3): ``g[i] *= f`` and the label's entry; the
  overlapping vector is loaded before the whole ones are scaled and
  stored after them, so that no class is scaled twice.

Same contract as the numba passes they replace (:func:`._short_rows._group_exp`
and ``_group_scale``): a NaN among the logits is skipped by the max
(``fcmp ogt``) and makes the sum NaN, which the caller sends to its NaN
case; a max of +-inf is left for the row kernel. The sums run in another
order than LLVM's (one vector accumulator), so results agree with the
numba passes to rounding, not bit for bit.
"""

from __future__ import annotations

import math

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from ._tile_vec import _F32, _F64, _I32, _VF, _VI, _intp, _loop, _splat, _Vec

_LANES = 8


def _hreduce(b: ir.IRBuilder, x, op):
    """``op`` across the eight lanes of ``x`` (three halvings), the result as a scalar."""
    for width in (4, 2, 1):
        idx = [k + width for k in range(width)] + [0] * (8 - width)
        x = op(x, b.shuffle_vector(x, x, ir.Constant(_VI, idx)))
    return b.extract_element(x, _I32(0))


def _row_ptr(context, builder, aty, arr, row):
    """A ``float*`` to ``arr[row, 0]`` of a 2-D C-order float32 array."""
    p = cgutils.get_item_pointer(context, builder, aty, arr, [row, ir.Constant(row.type, 0)], wraparound=False)
    return p


def _vload(b, base, c):
    return b.load(b.bitcast(b.gep(base, [c]), _VF.as_pointer()), align=4)


def _vstore(b, value, base, c):
    b.store(value, b.bitcast(b.gep(base, [c]), _VF.as_pointer()), align=4)


def _unpack(context, b, sig, args, arrays, ints):
    """The intrinsic's array arguments (numba array structs) and integer ones (as intp), by position."""
    return (
        [context.make_array(sig[k])(context, b, args[k]) for k in arrays],
        [context.cast(b, args[k], sig[k], types.intp) for k in ints],
    )


def _f32_2d(a) -> bool:
    return isinstance(a, types.Array) and a.dtype == types.float32 and a.ndim == 2 and a.layout == "C"


def _f64_1d(a) -> bool:
    return isinstance(a, types.Array) and a.dtype == types.float64 and a.ndim == 1


@intrinsic
def _group_exp_f32(typingctx, z, lo, ng, e, e_lo, inv_t, ms, ss):
    """:func:`group_exp` for float32 (V >= 8, ``ms``/``ss`` C-contiguous float64)."""
    if not (_f32_2d(z) and _f32_2d(e) and _f64_1d(ms) and _f64_1d(ss)):
        return None
    if not all(isinstance(a, types.Integer) for a in (lo, ng, e_lo)):
        return None

    def codegen(context, builder, signature, args):
        sig = signature.args
        b = builder
        v = _Vec(b)
        (za, ea, msa, ssa), (row0, n, erow0) = _unpack(context, b, sig, args, (0, 3, 6, 7), (1, 2, 4))
        it = v.broadcast(b.fptrunc(context.cast(b, args[5], sig[5], types.float64), _F32), _VF)
        n_cls = b.extract_value(za.shape, 1)
        n_full = b.udiv(n_cls, _intp(_LANES))
        rem = b.sub(n_cls, b.mul(n_full, _intp(_LANES)))
        last = b.sub(n_cls, _intp(_LANES))
        # The overlapping vector's lanes that hold classes no whole vector covered.
        lane = ir.Constant(_VI, list(range(_LANES)))
        new_lanes = b.icmp_signed(">=", lane, v.broadcast(b.trunc(b.sub(_intp(_LANES), rem), _I32), _VI))
        has_tail = b.icmp_signed(">", rem, _intp(0))
        ninf = _splat(_VF, -math.inf)
        zero = _splat(_VF, 0.0)

        def ms_ptr(k):
            return cgutils.get_item_pointer(context, b, sig[6], msa, [k], wraparound=False)

        # Pass 1 for every row of the group, then pass 2 for every row: no row's exponentials wait
        # for its own max's horizontal reduction, so the out-of-order core overlaps the rows.
        def row_max(k, st):
            zp = _row_ptr(context, b, sig[0], za, b.add(row0, k))

            def p1(c, s):
                x = _vload(b, zp, b.mul(c, _intp(_LANES)))
                return [b.select(b.fcmp_ordered(">", x, s[0]), x, s[0])]

            (mv,) = _loop(b, n_full, [ninf], p1)
            tail = _vload(b, zp, last)
            mv = b.select(b.fcmp_ordered(">", tail, mv), tail, mv)
            m = _hreduce(b, mv, lambda x, y: b.select(b.fcmp_ordered(">", x, y), x, y))
            b.store(b.fpext(m, _F64), ms_ptr(k))
            return []

        def row_exp(k, st):
            zp = _row_ptr(context, b, sig[0], za, b.add(row0, k))
            ep = _row_ptr(context, b, sig[3], ea, b.add(erow0, k))
            m64 = b.load(ms_ptr(k))
            finite = b.fcmp_ordered("<", b.call(_fabs(b), [m64]), ir.Constant(_F64, math.inf))
            with b.if_then(finite):
                tail = _vload(b, zp, last)  # before anything is stored over the row (in place)
                mb = v.broadcast(b.fptrunc(m64, _F32), _VF)

                def p2(c, s):
                    at = b.mul(c, _intp(_LANES))
                    ev = v.exp32(b.fmul(b.fsub(_vload(b, zp, at), mb), it))
                    _vstore(b, ev, ep, at)
                    return [b.fadd(s[0], ev)]

                (acc,) = _loop(b, n_full, [zero], p2)
                et = v.exp32(b.fmul(b.fsub(tail, mb), it))
                with b.if_then(has_tail):
                    _vstore(b, et, ep, last)
                acc = b.fadd(acc, b.select(new_lanes, et, zero))  # no lane when 8 divides V
                total = _hreduce(b, acc, b.fadd)
                b.store(b.fpext(total, _F64), cgutils.get_item_pointer(context, b, sig[7], ssa, [k], wraparound=False))
            return []

        _loop(b, n, [], row_max)
        _loop(b, n, [], row_exp)
        return context.get_dummy_value()

    return types.none(z, lo, ng, e, e_lo, inv_t, ms, ss), codegen


def _fabs(b: ir.IRBuilder):
    return cgutils.get_or_insert_function(b.module, ir.FunctionType(_F64, [_F64]), "llvm.fabs.f64")


@intrinsic
def _group_scale_f32(typingctx, g, lo, ng, fs, ys, vals, state):
    """:func:`group_scale` for float32 (V >= 8)."""
    if not (_f32_2d(g) and _f64_1d(fs) and _f64_1d(vals)):
        return None
    if not (isinstance(ys, types.Array) and ys.dtype == types.int64 and ys.ndim == 1):
        return None
    if not (isinstance(state, types.Array) and state.dtype == types.int8 and state.ndim == 1):
        return None

    def codegen(context, builder, signature, args):
        sig = signature.args
        b = builder
        v = _Vec(b)
        (ga, *arrs), (row0, n) = _unpack(context, b, sig, args, (0, 3, 4, 5, 6), (1, 2))
        n_cls = b.extract_value(ga.shape, 1)
        n_full = b.udiv(n_cls, _intp(_LANES))
        last = b.sub(n_cls, _intp(_LANES))

        def item(j, k):
            return b.load(cgutils.get_item_pointer(context, b, sig[3 + j], arrs[j], [k], wraparound=False))

        def row(k, st):
            with b.if_then(b.icmp_signed("==", item(3, k), ir.Constant(ir.IntType(8), 0))):
                gp = _row_ptr(context, b, sig[0], ga, b.add(row0, k))
                f = v.broadcast(b.fptrunc(item(0, k), _F32), _VF)
                tail = b.fmul(_vload(b, gp, last), f)  # before the whole vectors are scaled

                def p3(c, s):
                    at = b.mul(c, _intp(_LANES))
                    _vstore(b, b.fmul(_vload(b, gp, at), f), gp, at)
                    return []

                _loop(b, n_full, [], p3)
                _vstore(b, tail, gp, last)
                b.store(b.fptrunc(item(2, k), _F32), b.gep(gp, [item(1, k)]))
            return []

        _loop(b, n, [], row)
        return context.get_dummy_value()

    return types.none(g, lo, ng, fs, ys, vals, state), codegen


def group_exp(z, lo, ng, e, e_lo, inv_t, ms, ss):  # pragma: no cover - replaced by the overload in jitted code
    """Passes 1 and 2 of rows ``lo:lo + ng`` of ``z`` (float32, 8 <= V), the exponentials
    into rows ``e_lo:e_lo + ng`` of ``e`` (``z`` itself for in place): ``ms[k]`` the max,
    ``ss[k]`` the float32 sum of the exponentials (rows whose max is not finite: ``ms`` only)."""
    raise NotImplementedError


@overload(group_exp, inline="always")
def _group_exp_overload(z, lo, ng, e, e_lo, inv_t, ms, ss):
    # Other dtypes: nothing (the caller takes its numba passes; see :func:`vec_rows`).
    if _f32_2d(z) and _f32_2d(e):
        return lambda z, lo, ng, e, e_lo, inv_t, ms, ss: _group_exp_f32(z, lo, ng, e, e_lo, inv_t, ms, ss)
    return lambda z, lo, ng, e, e_lo, inv_t, ms, ss: None


def group_scale(g, lo, ng, fs, ys, vals, state):  # pragma: no cover - replaced by the overload in jitted code
    """Pass 3 of rows ``lo:lo + ng`` whose ``state`` is 0: ``g[i] *= fs[k]``, then the
    label's entry ``g[i, ys[k]] = vals[k]`` (float32, 8 <= V)."""
    raise NotImplementedError


@overload(group_scale, inline="always")
def _group_scale_overload(g, lo, ng, fs, ys, vals, state):
    if _f32_2d(g):
        return lambda g, lo, ng, fs, ys, vals, state: _group_scale_f32(g, lo, ng, fs, ys, vals, state)
    return lambda g, lo, ng, fs, ys, vals, state: None


def vec_rows(z):  # pragma: no cover - replaced by the overload inside jitted code
    """True (a constant, known when numba compiles) where :func:`group_exp` and
    :func:`group_scale` run: 2-D C-order float32 ``z``."""
    raise NotImplementedError


@overload(vec_rows, inline="always")
def _vec_rows_overload(z):
    if _f32_2d(z):
        return lambda z: True
    return lambda z: False

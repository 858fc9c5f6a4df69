"""Rows of 65-256 float32 classes in explicit vectors, for :func:`._short_rows._xent_index_short`.

A row of V classes is ``V // 8`` whole vectors of eight and, when 8 does
not divide V, a last vector that overlaps the one before it (classes
``V - 8 .. V - 1``), so that no load or store leaves the row. Written as
numba loops with V known only at run time, LLVM vectorised each pass four
vectors at a time and ran what was left, up to 31 classes (4 at V = 100),
one class at a time through the scalar exponential.

:func:`group_rows` runs every row of a block, eight rows at a time:

* the label's logit, class weight and sample weight of each row (read
  before anything is stored over the row, which may be in place), and
  each row's max (pass 1);
* pass 2, row by row: :math:`e_c = e^{(z_c - m)/T}` stored and summed in
  float32; the overlapping vector's exponentials are stored whole (the
  overlapped classes get the same bits again) and only its new lanes are
  summed; its logits are loaded before the row's whole vectors, so that the
  exponentials may go over the logits themselves. A confident row (sum
  below 2) is summed again exactly: the count of terms equal to 1 and the
  float64 sum of the others, as the tile kernel does. The label's e_y is
  read back from the store;
* the per-row float64 work of the eight rows in two ``<4 x double>``
  halves (:meth:`._tile_vec._Vec.row_terms`, shared with the tile kernel):
  the log of the normaliser, loss, log-sum-exp and the gradient's two
  coefficients, with every per-row quantity in a lane instead of a numba
  loop over the group's arrays (those loops were about 30 ns of a row's
  85 at V = 100);
* pass 3, row by row: ``g[i] *= a`` and the label's entry; the
  overlapping vector is loaded before the whole ones are scaled and stored
  after them, so that no class is scaled twice.

A NaN among the logits is skipped by the max (``fcmp ogt``) and makes the
sum NaN: the row's ``state`` is 2 and the caller writes NaN. A max of
+-inf or NaN (every class masked, a +inf logit) leaves the row untouched
with ``state`` 1, for the row kernel. The sums run in another order than
the numba passes of float64 rows (one vector accumulator), so results agree
with them to rounding, not bit for bit.
"""

from __future__ import annotations

import math

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from ._tile_vec import (
    _F32,
    _F64,
    _I32,
    _I64,
    _VD,
    _VF,
    _VF4,
    _VI,
    _hreduce,
    _intp,
    _loop,
    _splat,
    _Vec,
    _vload,
    _vptr,
    _vstore,
)

_LANES = 8


def _f32_2d(a) -> bool:
    return isinstance(a, types.Array) and a.dtype == types.float32 and a.ndim == 2 and a.layout == "C"


def _f64_1d(a) -> bool:
    return isinstance(a, types.Array) and a.dtype == types.float64 and a.ndim == 1 and a.layout == "C"


class _Row:
    """The shape of a row in vectors: ``n_full`` whole vectors, the overlapping
    one at ``last`` and, in ``new_lanes``, its lanes no whole vector covered."""

    def __init__(self, b: ir.IRBuilder, v: _Vec, n_cls):
        self.b, self.v = b, v
        self.n_full = b.udiv(n_cls, _intp(_LANES))
        rem = b.sub(n_cls, b.mul(self.n_full, _intp(_LANES)))
        self.last = b.sub(n_cls, _intp(_LANES))
        lane = ir.Constant(_VI, list(range(_LANES)))
        self.new_lanes = b.icmp_signed(">=", lane, v.broadcast(b.trunc(b.sub(_intp(_LANES), rem), _I32), _VI))
        self.has_tail = b.icmp_signed(">", rem, _intp(0))

    def max(self, zp):
        """Pass 1: the row's max (NaN skipped), float32."""
        b = self.b

        def p1(c, s):
            x = _vload(b, zp, b.mul(c, _intp(_LANES)))
            return [b.select(b.fcmp_ordered(">", x, s[0]), x, s[0])]

        (mv,) = _loop(b, self.n_full, [_splat(_VF, -math.inf)], p1)
        tail = _vload(b, zp, self.last)
        mv = b.select(b.fcmp_ordered(">", tail, mv), tail, mv)
        return _hreduce(b, mv, lambda x, y: b.select(b.fcmp_ordered(">", x, y), x, y))

    def exp_sum(self, zp, ep, m, it, unit):
        """Pass 2: ``e = exp((z - m) * it)`` stored at ``ep`` (which may be ``zp``);
        returns their float32 sum. ``unit`` (i1): ``it`` is 1, and the loop
        runs without the multiply (the default temperature; the same bits,
        one instruction and one step of the exponential's chain fewer a
        vector, which this latency-bound loop feels: 75.1 -> 73.4 ns a row
        at V = 100, one thread in cache)."""
        b, v = self.b, self.v
        tail = _vload(b, zp, self.last)  # before anything is stored over the row (in place)
        mb = v.broadcast(m, _VF)

        def body(scaled):
            def p2(c, s):
                at = b.mul(c, _intp(_LANES))
                x = b.fsub(_vload(b, zp, at), mb)
                ev = v.exp32(b.fmul(x, it) if scaled else x, clamp=True)
                _vstore(b, ev, ep, at)
                return [b.fadd(s[0], ev)]

            return p2

        with b.if_else(unit) as (plain, scaled):
            with plain:
                (acc_1,) = _loop(b, self.n_full, [_splat(_VF, 0.0)], body(False))
                from_1 = b.block
            with scaled:
                (acc_t,) = _loop(b, self.n_full, [_splat(_VF, 0.0)], body(True))
                from_t = b.block
        acc = b.phi(_VF)
        acc.add_incoming(acc_1, from_1)
        acc.add_incoming(acc_t, from_t)
        et = v.exp32(b.fmul(b.fsub(tail, mb), it), clamp=True)
        with b.if_then(self.has_tail):
            _vstore(b, et, ep, self.last)
        acc = b.fadd(acc, b.select(self.new_lanes, et, _splat(_VF, 0.0)))  # no lane when 8 divides V
        return _hreduce(b, acc, b.fadd)

    def split_sum(self, ep):
        """A confident row's stored exponentials summed exactly: ``(ties, r)``, the
        count of terms equal to 1 and the float64 sum of the others (as
        :func:`._rows._split_sum`)."""
        b, v = self.b, self.v
        one = _splat(_VF, 1.0)
        zero = _splat(_VF, 0.0)

        def add(e, st, lanes=None):
            ties, r_lo, r_hi = st
            is1 = b.fcmp_ordered("==", e, one)
            if lanes is not None:
                e = b.select(lanes, e, zero)
                is1 = b.and_(is1, lanes)
            rest = b.select(is1, zero, e)
            return [
                b.fadd(ties, b.select(is1, one, zero)),
                b.fadd(r_lo, b.fpext(v.half(rest, False), _VD)),
                b.fadd(r_hi, b.fpext(v.half(rest, True), _VD)),
            ]

        st = _loop(b, self.n_full, [zero, _splat(_VD, 0.0), _splat(_VD, 0.0)],
                   lambda c, s: add(_vload(b, ep, b.mul(c, _intp(_LANES))), s))  # fmt: skip
        ties, r_lo, r_hi = add(_vload(b, ep, self.last), st, self.new_lanes)
        return b.fpext(_hreduce(b, ties, b.fadd), _F64), _hreduce(b, b.fadd(r_lo, r_hi), b.fadd)

    def scale(self, gp, f, label, g_label):
        """Pass 3: ``g *= f`` over the row, then ``g[label] = g_label``."""
        b = self.b
        fv = self.v.broadcast(f, _VF)
        tail = b.fmul(_vload(b, gp, self.last), fv)  # before the whole vectors are scaled

        def p3(c, s):
            at = b.mul(c, _intp(_LANES))
            _vstore(b, b.fmul(_vload(b, gp, at), fv), gp, at)
            return []

        _loop(b, self.n_full, [], p3)
        _vstore(b, tail, gp, self.last)
        b.store(g_label, b.gep(gp, [label]))


@intrinsic
def _group_rows_f32(typingctx, z, labels, weight, sws, lo, hi, inv_t, grad_scale, e, need_grad, loss, lse, state):
    """:func:`group_rows` for float32 ``z`` (8 <= V)."""
    if not (_f32_2d(z) and _f32_2d(e) and all(_f64_1d(a) for a in (weight, sws, loss, lse))):
        return None
    if not (isinstance(labels, types.Array) and labels.dtype == types.int64 and labels.ndim == 1):
        return None
    if not (isinstance(state, types.Array) and state.dtype == types.int8 and state.ndim == 1):
        return None
    if not all(isinstance(a, types.Integer) for a in (lo, hi)):
        return None

    def codegen(context, builder, signature, args):
        sig = signature.args
        b = builder
        v = _Vec(b)
        arr = {k: context.make_array(sig[k])(context, b, args[k]) for k in (0, 1, 2, 3, 8, 10, 11, 12)}
        row_lo = context.cast(b, args[4], sig[4], types.intp)
        row_hi = context.cast(b, args[5], sig[5], types.intp)
        it64 = context.cast(b, args[6], sig[6], types.float64)
        it = v.broadcast(b.fptrunc(it64, _F32), _VF)
        unit = b.fcmp_ordered("==", it64, ir.Constant(_F64, 1.0))
        it_d = v.broadcast(it64, _VD)
        gs_d = v.broadcast(b.fmul(it64, context.cast(b, args[7], sig[7], types.float64)), _VD)
        need = context.cast(b, args[9], sig[9], types.boolean)
        row = _Row(b, v, b.extract_value(arr[0].shape, 1))
        has_w = b.icmp_signed(">", b.extract_value(arr[2].shape, 0), _intp(0))
        has_sw = b.icmp_signed(">", b.extract_value(arr[3].shape, 0), _intp(0))
        i8 = ir.IntType(8)

        def at(k, idx):
            return cgutils.get_item_pointer(context, b, sig[k], arr[k], idx, wraparound=False)

        def row_ptr(k, i):
            return at(k, [i, _intp(0)])

        # The group's per-row values, one slot a row, read back as vectors.
        one64 = cgutils.alloca_once_value(b, ir.Constant(_F64, 1.0))
        slots = {
            name: cgutils.alloca_once(b, ir.ArrayType(ty, _LANES), name=name)
            for name, ty in (("m", _F32), ("xy", _F32), ("ey", _F32), ("u", _F64), ("s", _F64), ("wy", _F64),
                             ("sw", _F64), ("lse", _F64), ("loss", _F64), ("gy", _F32), ("ga", _F32), ("y", _I64),
                             ("st", i8))
        }  # fmt: skip

        def slot(name, k):
            return b.gep(slots[name], [_intp(0), k])

        def lanes(name, h, ty):
            return b.load(_vptr(b, slot(name, _intp(4 * h)), _intp(0), ty), align=4)

        n_groups = b.udiv(b.add(b.sub(row_hi, row_lo), _intp(_LANES - 1)), _intp(_LANES))

        def group(gi, st_):
            g0 = b.add(row_lo, b.mul(gi, _intp(_LANES)))
            left = b.sub(row_hi, g0)
            ng = b.select(b.icmp_signed("<", left, _intp(_LANES)), left, _intp(_LANES))

            def gather(k, s_):  # the label's values, then pass 1
                i = b.add(g0, k)
                y = b.load(at(1, [i]))
                kept = b.icmp_signed(">=", y, _intp(0))
                yy = b.select(kept, y, _intp(0))
                b.store(yy, slot("y", k))
                b.store(b.select(kept, b.load(at(0, [i, yy])), ir.Constant(_F32, 0.0)), slot("xy", k))
                wy = b.load(b.select(has_w, at(2, [yy]), one64))
                b.store(b.select(kept, wy, ir.Constant(_F64, 0.0)), slot("wy", k))
                b.store(b.load(b.select(has_sw, at(3, [i]), one64)), slot("sw", k))
                b.store(row.max(row_ptr(0, i)), slot("m", k))
                return []

            _loop(b, ng, [], gather)

            def exps(k, s_):  # pass 2, row by row (no row waits for its own max)
                i = b.add(g0, k)
                ep = row_ptr(8, b.select(need, i, k))
                m = b.load(slot("m", k))
                finite = b.fcmp_ordered("<", b.call(_fabs(b), [b.fpext(m, _F64)]), ir.Constant(_F64, math.inf))
                b.store(ir.Constant(_F64, 0.0), slot("u", k))  # harmless lanes for rows left out
                b.store(ir.Constant(_F64, 1.0), slot("s", k))
                b.store(ir.Constant(_F32, 0.0), slot("ey", k))
                b.store(ir.Constant(i8, 1), slot("st", k))
                with b.if_then(finite):
                    total = row.exp_sum(row_ptr(0, i), ep, m, it, unit)
                    b.store(b.load(b.gep(ep, [b.load(slot("y", k))])), slot("ey", k))  # the bits summed
                    t64 = b.fpext(total, _F64)
                    b.store(b.select(b.fcmp_ordered("==", t64, t64), ir.Constant(i8, 0), ir.Constant(i8, 2)),
                            slot("st", k))  # fmt: skip
                    with b.if_else(b.fcmp_ordered("<", t64, ir.Constant(_F64, 2.0))) as (confident, plain):
                        with confident:  # s = ties + r exactly, log s = log1p(ties - 1 + r)
                            ties, r = row.split_sum(ep)
                            b.store(b.fadd(b.fsub(ties, ir.Constant(_F64, 1.0)), r), slot("u", k))
                            b.store(b.fadd(ties, r), slot("s", k))
                        with plain:
                            b.store(b.fsub(t64, ir.Constant(_F64, 1.0)), slot("u", k))  # exact for s >= 2
                            b.store(t64, slot("s", k))
                b.store(b.load(slot("st", k)), at(12, [b.sub(i, row_lo)]))
                return []

            _loop(b, ng, [], exps)

            for h in (0, 1):  # the per-row float64 work, four rows a vector
                lse_h, loss_h, gy4, ga4 = v.row_terms(
                    b.fpext(lanes("m", h, _VF4), _VD), lanes("u", h, _VD), lanes("s", h, _VD),
                    b.fpext(lanes("xy", h, _VF4), _VD), b.fpext(lanes("ey", h, _VF4), _VD),
                    lanes("wy", h, _VD), lanes("sw", h, _VD), it_d, gs_d,
                )  # fmt: skip
                for name, val in (("lse", lse_h), ("loss", loss_h), ("gy", gy4), ("ga", ga4)):
                    b.store(val, _vptr(b, slot(name, _intp(4 * h)), _intp(0), val.type), align=4)

            def out(k, s_):  # the row's results, then pass 3
                i = b.add(g0, k)
                b.store(b.load(slot("loss", k)), at(10, [i]))
                b.store(b.load(slot("lse", k)), at(11, [i]))
                normal = b.icmp_signed("==", b.load(slot("st", k)), ir.Constant(i8, 0))
                with b.if_then(b.and_(need, normal)):
                    row.scale(row_ptr(8, i), b.load(slot("ga", k)), b.load(slot("y", k)), b.load(slot("gy", k)))
                return []

            _loop(b, ng, [], out)
            return []

        _loop(b, n_groups, [], group)
        return context.get_dummy_value()

    return types.none(z, labels, weight, sws, lo, hi, inv_t, grad_scale, e, need_grad, loss, lse, state), codegen


def _fabs(b: ir.IRBuilder):
    return cgutils.get_or_insert_function(b.module, ir.FunctionType(_F64, [_F64]), "llvm.fabs.f64")


def group_rows(z, labels, weight, sws, lo, hi, inv_t, grad_scale, e, need_grad, loss, lse, state):  # pragma: no cover
    """Rows ``lo:hi`` of ``z`` (float32, 8 <= V, no label smoothing), eight at a time.

    ``labels`` int64 (negative: an ignored row; else in ``[0, V)``),
    ``weight`` the class weights and ``sws`` the sample weights (float64,
    size 0 when absent). ``e`` takes the exponentials and then the gradient:
    the gradient array itself (``z`` for in place) when ``need_grad``, else a
    scratch array of eight rows. Writes ``loss[i]`` and ``lse[i]``, and
    ``state[i - lo]``: 0 done, 1 a row for the row kernel (non-finite max;
    left untouched), 2 a NaN sum (the caller writes NaN). Replaced by the
    overload in jitted code; see the module docstring.
    """
    raise NotImplementedError


@overload(group_rows, inline="always")
def _group_rows_overload(z, labels, weight, sws, lo, hi, inv_t, grad_scale, e, need_grad, loss, lse, state):
    # Other dtypes: nothing (the caller takes its numba passes; see :func:`vec_rows`).
    if _f32_2d(z) and _f32_2d(e):

        def run(z, labels, weight, sws, lo, hi, inv_t, grad_scale, e, need_grad, loss, lse, state):
            _group_rows_f32(z, labels, weight, sws, lo, hi, inv_t, grad_scale, e, need_grad, loss, lse, state)

        return run
    return lambda z, labels, weight, sws, lo, hi, inv_t, grad_scale, e, need_grad, loss, lse, state: None


def vec_rows(z):  # pragma: no cover - replaced by the overload inside jitted code
    """True (a constant, known when numba compiles) where :func:`group_rows`
    runs: 2-D C-order float32 ``z``."""
    raise NotImplementedError


@overload(vec_rows, inline="always")
def _vec_rows_overload(z):
    if _f32_2d(z):
        return lambda z: True
    return lambda z: False

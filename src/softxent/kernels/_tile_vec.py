"""The few-class tile's passes for float32 in explicit vectors (no class weights, no smoothing).

:func:`._tiles._xent_index_tiles` holds a tile of 64 rows transposed, one
class per row of ``buf`` (V, 64), the rows along the vector lanes. Written
as numba loops, its passes ran as about a dozen loops over the tile, each
loading and storing per-row arrays (the max, the sums, the label's logit,
the coefficients) between them: about 9.5 ns a row whatever V, most of
the kernel's time at V <= 20 (see ``benchmarks/README.md``).

:func:`_plain_tile_f32` emits the same math for eight rows at a time in
LLVM vectors (``<8 x float>`` across the eight rows, ``<4 x double>`` for
the per-row float64 work), so that every per-row quantity stays in a
register from the first class to the last store:

* pass 1, over the classes: the max (``fcmp ogt`` + select: ``vmaxps``)
  and the label's logit (a select where the label equals the class);
* pass 2, over the classes: :math:`e_c = \\exp((z_c - m)/T)` stored back,
  the count of terms equal to 1 (ties of the max) and the float64 sum of
  the others, and the label's :math:`e_y` picked from the stored values
  (the same bits, without a second exponential);
* the per-row float64 work, in two halves of four rows: :math:`\\log s` as
  ``log1p(ties - 1 + r)`` (:func:`_vlog1p`'s method), the loss, the
  log-sum-exp and the gradient's coefficients (eq. (16));
* pass 3, over the classes: the gradient :math:`e_c \\cdot a` (the label's
  entry selected), written over the tile.

A full tile's labels and sample weights are read, and its losses and
log-sum-exps written, in the batch's own arrays (no per-tile copies: about
2 ns a row at V = 3, 13.4 -> 12.1 ns, one thread in cache).

The exponential is :func:`._vmath._vexp32`'s polynomial and reduction with
explicit FMAs; the log is :func:`._vmath._vlog1p`'s. Rows that need care
(a non-finite max, a NaN sum) are flagged in ``special`` for the row
kernel, as in the numba passes. Results match those passes to the
docstrings' bounds (FMAs may be placed differently), not bit for bit.
"""

from __future__ import annotations

import math

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from ._vmath import _ATANH, _C32, _L2E32, _LN2, _LN2_32, _LO32, _M32, _SQRT2

_F32 = ir.FloatType()
_F64 = ir.DoubleType()
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_VF = ir.VectorType(_F32, 8)  # eight rows of float32
_VD = ir.VectorType(_F64, 4)  # four rows of float64
_VI = ir.VectorType(_I32, 8)
_VI4 = ir.VectorType(_I32, 4)
_VL = ir.VectorType(_I64, 4)
_VF4 = ir.VectorType(_F32, 4)
_LANES = 8


def _intp(k: int) -> ir.Constant:
    return ir.Constant(_I64, k)


def _splat(ty: ir.VectorType, value) -> ir.Constant:
    return ir.Constant(ty, [value] * ty.count)


class _Vec:
    """The few vector operations the passes need, on one IR builder."""

    def __init__(self, builder: ir.IRBuilder):
        self.b = builder
        mod = builder.module
        self._fma = {
            ty: cgutils.get_or_insert_function(mod, ir.FunctionType(ty, [ty, ty, ty]), f"llvm.fma.{name}")
            for ty, name in ((_VF, "v8f32"), (_VD, "v4f64"))
        }

    def fma(self, a, x, c):
        """``a * x + c`` in one rounding."""
        return self.b.call(self._fma[a.type], [a, x, c])

    def fabs(self, x):
        fn = cgutils.get_or_insert_function(self.b.module, ir.FunctionType(x.type, [x.type]), "llvm.fabs.v4f64")
        return self.b.call(fn, [x])

    def broadcast(self, x, ty: ir.VectorType):
        """The scalar ``x`` (of ``ty``'s element type) in every lane of ``ty``."""
        w = self.b.insert_element(ir.Constant(ty, ir.Undefined), x, _I32(0))
        return self.b.shuffle_vector(w, w, ir.Constant(ir.VectorType(_I32, ty.count), [0] * ty.count))

    def exp32(self, x, clamp=False):
        """:func:`._vmath._vexp32`'s polynomial and reduction on eight lanes:
        exp(x) for x <= 0, 0 below the float32 range (and for -inf), NaN in
        -> NaN out.

        ``clamp``: the range is bounded at the head instead of by
        ``_vexp32``'s select at the end. x = max(x, -88) rounds to n = -127,
        whose 2**n built from t's bits is +0, so that exp gives exactly 0
        for x <= -87.68 (-inf included); NaN passes the clamp (an ordered
        compare is False). Between -87.68 and ``_LO32`` (-87.34) n = -126
        and the result is the polynomial's, a few 1e-39, where the select
        gives 0: both are below float32's smallest normal number. One
        instruction fewer a vector and the chain's last step moved off its
        end, which the latency-bound loops of :mod:`._row_vec` feel (76.6 ->
        75.1 ns a row at V = 100, one thread in cache); the fully unrolled
        code of :mod:`._narrow_vec` and the tiles ran 1% slower with it, and
        keeps the select.
        """
        b = self.b
        if clamp:
            lo = _splat(_VF, -88.0)
            x = b.select(b.fcmp_ordered(">", lo, x), lo, x)  # vmaxps; NaN keeps x
        m = _splat(_VF, float(_M32))
        t = self.fma(x, _splat(_VF, float(_L2E32)), m)  # n + M, rounded to an integer by the add
        n = b.fsub(t, m)
        r = self.fma(b.fsub(_splat(_VF, 0.0), n), _splat(_VF, float(_LN2_32)), x)  # x - n ln2
        c0, c1, c2, c3 = (_splat(_VF, float(c)) for c in _C32)
        r2 = b.fmul(r, r)
        q = self.fma(self.fma(c0, r, c1), r2, self.fma(c2, r, c3))
        w = self.fma(r2, q, r)  # exp(r) - 1
        scale = b.bitcast(b.shl(b.bitcast(t, _VI), _splat(_VI, 23)), _VF)  # 2**n from t's low bits (+0 at n = -127)
        e = self.fma(w, scale, scale)
        if clamp:
            return e
        low = b.fcmp_ordered("<", x, _splat(_VF, float(_LO32)))  # NaN: False, so NaN propagates
        return b.select(low, _splat(_VF, 0.0), e)

    def log1p64(self, u):
        """:func:`._vmath._vlog1p` on four lanes: log(1 + u) for u >= 0."""
        b = self.b
        one = _splat(_VD, 1.0)
        s = b.fadd(one, u)
        bits = b.bitcast(s, _VL)
        k = b.sub(b.trunc(b.lshr(bits, _splat(_VL, 52)), _VI4), _splat(_VI4, 1023))
        mant = b.or_(b.and_(bits, _splat(_VL, 0x000FFFFFFFFFFFFF)), _splat(_VL, 0x3FF0000000000000))
        f = b.bitcast(mant, _VD)
        big = b.fcmp_ordered(">", f, _splat(_VD, _SQRT2))
        f = b.select(big, b.fmul(f, _splat(_VD, 0.5)), f)
        k = b.select(big, b.add(k, _splat(_VI4, 1)), k)
        k0 = b.icmp_signed("==", k, _splat(_VI4, 0))
        # k = 0: w = u / (2 + u) keeps a tiny u's digits; else (f - 1)/(f + 1).
        num = b.select(k0, u, b.fsub(f, one))
        den = b.select(k0, b.fadd(_splat(_VD, 2.0), u), b.fadd(f, one))
        w = b.fdiv(num, den)
        # 2 atanh(w) = w * sum_k c_k (w^2)^k, Estrin's scheme as _estrin12.
        x = b.fmul(w, w)
        x2 = b.fmul(x, x)
        x4 = b.fmul(x2, x2)
        x8 = b.fmul(x4, x4)
        c = [_splat(_VD, v) for v in _ATANH]

        def quad(i):
            return self.fma(self.fma(c[i + 3], x, c[i + 2]), x2, self.fma(c[i + 1], x, c[i]))

        series = self.fma(quad(8), x8, self.fma(quad(4), x4, quad(0)))
        return self.fma(b.sitofp(k, _VD), _splat(_VD, _LN2), b.fmul(w, series))

    def row_terms(self, m, u, s, xy, ey, wy, sw, inv_t, gscale):
        """The per-row float64 work of eq. (7) and (16) on four rows.

        ``m`` the row's max, ``s`` its sum of exponentials and ``u = s - 1``
        (kept apart so that a confident row's small terms are not rounded
        away), ``xy`` / ``ey`` the label's logit and stored exponential,
        ``wy`` the label's class weight (0 for an ignored row), ``sw`` the
        sample weight, ``gscale`` = inv_t * the gradient's scale. Returns
        ``(lse, loss, g_label, g_other)``: the log-sum-exp of ``z / T``, the
        loss (0 for a row that does not count), and the gradient's label
        entry and its factor for the other exponentials, as float32.
        """
        b = self.b
        one = _splat(_VD, 1.0)
        zero = _splat(_VD, 0.0)
        log_s = self.log1p64(u)
        d_y = b.fmul(b.fsub(xy, m), inv_t)
        labelled = b.fcmp_ordered(">", wy, zero)
        # eq. (7) with t = w_y e_y: w_y (log s - d_y).
        loss = b.fmul(sw, b.fsub(b.fmul(wy, log_s), b.select(labelled, b.fmul(wy, d_y), zero)))
        counts = b.fcmp_ordered(">", b.fmul(sw, wy), zero)
        coef = b.select(counts, b.fmul(sw, gscale), zero)
        # One division per row for both coefficients: the divider, not the
        # FMAs, bounds this part (two more divisions per four rows cost
        # about a quarter of the tile's time at V = 3).
        ac = b.fmul(wy, b.fdiv(one, s))
        top = b.fmul(b.fsub(zero, ac), u)  # w_y (a_max - 1) = -w_y (s - 1)/s
        # The label's entry, eq. (16): w_y (a_y - 1), without cancellation when e_y = 1.
        lab = b.select(b.fcmp_ordered("==", ey, one), top, b.fsub(b.fmul(ac, ey), wy))
        return (
            b.fadd(b.fmul(m, inv_t), log_s),
            b.select(counts, loss, zero),
            b.fptrunc(b.fmul(lab, coef), _VF4),
            b.fptrunc(b.fmul(ac, coef), _VF4),
        )

    def half_rows(self, hi: bool, m, ties, rs, xy, ey, y, sw, inv_t, gscale):
        """:meth:`row_terms` for rows 0-3 (or 4-7 if ``hi``) of eight held in
        float32 lanes: ``m`` the max, ``ties`` the count of terms equal to 1,
        ``xy`` / ``ey`` the label's logit and exponential, ``y`` the labels as
        int32 (-1: ignored); ``rs`` (four float64 lanes) the sum of the other
        terms. Returns ``row_terms``' four results and, as int32 lanes of 1,
        the rows for the row kernel: a max that is not finite, a NaN sum."""
        b = self.b
        one = _splat(_VD, 1.0)
        mr = b.fpext(self.half(m, hi), _VD)
        tr = b.fpext(self.half(ties, hi), _VD)
        u = b.fadd(b.fsub(tr, one), rs)  # s - 1, without rounding away r
        s = b.fadd(tr, rs)
        wy = b.select(b.icmp_signed(">=", self.half(y, hi), _splat(_VI4, 0)), one, _splat(_VD, 0.0))
        xy_d = b.fpext(self.half(xy, hi), _VD)
        ey_d = b.fpext(self.half(ey, hi), _VD)
        terms = self.row_terms(mr, u, s, xy_d, ey_d, wy, sw, inv_t, gscale)
        finite = b.fcmp_ordered("<", self.fabs(mr), _splat(_VD, math.inf))
        sane = b.fcmp_ordered("==", rs, rs)
        return (*terms, b.zext(b.not_(b.and_(finite, sane)), _VI4))

    def load_or_ones(self, given, ptr):
        """Four float64 lanes loaded from ``ptr`` if ``given``, else ones (no load
        then: the array may be empty)."""
        b = self.b
        with b.if_else(given) as (yes, no):
            with yes:
                got = b.load(ptr, align=8)
                from_yes = b.block
            with no:
                from_no = b.block
        out = b.phi(_VD)
        out.add_incoming(got, from_yes)
        out.add_incoming(_splat(_VD, 1.0), from_no)
        return out

    def labels32(self, y):
        """Four int64 labels as int32 lanes, every negative one as -1."""
        b = self.b
        neg = b.icmp_signed("<", y, _splat(_VL, 0))
        return b.trunc(b.select(neg, _splat(_VL, -1), y), _VI4)

    def half(self, v, hi: bool):
        """Lanes 0-3 (or 4-7) of an eight-lane vector."""
        idx = [4, 5, 6, 7] if hi else [0, 1, 2, 3]
        return self.b.shuffle_vector(v, v, ir.Constant(_VI4, idx))

    def join(self, lo, hi):
        return self.b.shuffle_vector(lo, hi, ir.Constant(_VI, list(range(8))))


# The three rounds of an 8x8 transpose's shuffles (indices into the
# concatenation of two vectors of eight): interleave pairs of lanes, then
# pairs of pairs, then the 128-bit halves; LLVM lowers them to
# vunpck*/vshufps/vperm2f128.
_LO1, _HI1 = (0, 8, 1, 9, 4, 12, 5, 13), (2, 10, 3, 11, 6, 14, 7, 15)
_LO2, _HI2 = (0, 1, 8, 9, 4, 5, 12, 13), (2, 3, 10, 11, 6, 7, 14, 15)
_LO4, _HI4 = (0, 1, 2, 3, 8, 9, 10, 11), (4, 5, 6, 7, 12, 13, 14, 15)


def transpose8(builder: ir.IRBuilder, v: list) -> list:
    """Eight vectors of eight floats transposed: lane k of result m is lane m of ``v[k]``."""

    def shuf(a, b, mask):
        return builder.shuffle_vector(a, b, ir.Constant(_VI, list(mask)))

    t = []
    for k in range(0, 8, 2):
        t += [shuf(v[k], v[k + 1], _LO1), shuf(v[k], v[k + 1], _HI1)]
    # t[2q] = lanes 0,1,4,5 of rows 2q, 2q+1 interleaved; t[2q+1] lanes 2,3,6,7.
    u = [None] * 8
    for h in (0, 4):
        u[h + 0] = shuf(t[h + 0], t[h + 2], _LO2)
        u[h + 1] = shuf(t[h + 0], t[h + 2], _HI2)
        u[h + 2] = shuf(t[h + 1], t[h + 3], _LO2)
        u[h + 3] = shuf(t[h + 1], t[h + 3], _HI2)
    # u[h + q] holds classes q and q + 4 of rows h..h+3.
    w = [None] * 8
    for q in range(4):
        w[q] = shuf(u[q], u[q + 4], _LO4)
        w[q + 4] = shuf(u[q], u[q + 4], _HI4)
    return w


def _hreduce(b: ir.IRBuilder, x, op):
    """``op`` across the lanes of ``x`` (halvings), the result as a scalar."""
    n = x.type.count
    width = n // 2
    while width >= 1:
        idx = [k + width for k in range(width)] + [0] * (n - width)
        x = op(x, b.shuffle_vector(x, x, ir.Constant(ir.VectorType(_I32, n), idx)))
        width //= 2
    return b.extract_element(x, _I32(0))


def _vptr(b, base, c, ty=_VF):
    """A pointer to ``ty`` at element ``c`` of ``base`` (no alignment assumed)."""
    return b.bitcast(b.gep(base, [c]), ty.as_pointer())


def _vload(b, base, c):
    return b.load(_vptr(b, base, c), align=4)


def _vstore(b, value, base, c):
    b.store(value, _vptr(b, base, c), align=4)


def _loop(builder: ir.IRBuilder, count, state: list, body):
    """``for c in range(count)``: ``state = body(c, state)``, the state in phi
    nodes (registers). Returns the final state."""
    pre = builder.block
    head = builder.append_basic_block("tv.head")
    loop = builder.append_basic_block("tv.body")
    done = builder.append_basic_block("tv.done")
    builder.branch(head)
    builder.position_at_end(head)
    c = builder.phi(count.type)
    c.add_incoming(ir.Constant(count.type, 0), pre)
    phis = []
    for s in state:
        p = builder.phi(s.type)
        p.add_incoming(s, pre)
        phis.append(p)
    builder.cbranch(builder.icmp_signed("<", c, count), loop, done)
    builder.position_at_end(loop)
    new = body(c, phis)
    nxt = builder.add(c, ir.Constant(count.type, 1))
    end = builder.block
    c.add_incoming(nxt, end)
    for p, s in zip(phis, new):
        p.add_incoming(s, end)
    builder.branch(head)
    builder.position_at_end(done)
    return phis


@intrinsic
def _plain_tile_f32(typingctx, buf, labels, sws, has_sw, base, inv_t, grad_scale, need_grad, losses, lses, special):
    """The passes of :func:`._tiles._xent_index_tiles` without class weights
    or smoothing, on a float32 tile ``buf`` (V, 64), C order, whose row r is
    row ``base + r`` of the batch. Reads the labels ``labels[base + r]``
    (int64, negative: an ignored row) and, when ``has_sw``, the sample
    weights ``sws[base + r]`` (float64; 1 without); writes ``losses[base +
    r]`` and ``lses[base + r]`` (float64), ``special[r]`` (int32, 64: 1 for
    a row the row kernel must take) and, when ``need_grad``, the gradient
    over ``buf``. A full tile passes the batch's own arrays (no copies of
    the labels in, nor of the losses out: about 2 ns a row at V = 3); a
    partial one, arrays of 64 padded by the caller, with ``base`` 0."""
    arrays = (buf, labels, sws, losses, lses, special)
    if not all(isinstance(a, types.Array) for a in arrays):
        return None
    dtypes = (types.float32, types.int64, types.float64, types.float64, types.float64, types.int32)
    if any(a.dtype != d for a, d in zip(arrays, dtypes)) or buf.ndim != 2 or buf.layout != "C":
        return None
    if any(a.ndim != 1 or a.layout != "C" for a in arrays[1:]) or not isinstance(base, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        sig = signature.args
        v = _Vec(builder)
        b = builder
        ary = {}
        for k, at in ((0, "buf"), (1, "labels"), (2, "sws"), (8, "losses"), (9, "lses"), (10, "special")):
            ary[at] = (sig[k], context.make_array(sig[k])(context, builder, args[k]))
        use_sw = context.cast(builder, args[3], sig[3], types.boolean)
        row0 = context.cast(builder, args[4], sig[4], types.intp)
        inv_t_v = context.cast(builder, args[5], sig[5], types.float64)
        scale_v = context.cast(builder, args[6], sig[6], types.float64)
        need = context.cast(builder, args[7], sig[7], types.boolean)
        barr = ary["buf"][1]
        n_cls = builder.extract_value(barr.shape, 0)
        width = builder.extract_value(barr.shape, 1)
        it_f = v.broadcast(b.fptrunc(inv_t_v, _F32), _VF)
        it_d = v.broadcast(inv_t_v, _VD)
        gs_d = v.broadcast(b.fmul(inv_t_v, scale_v), _VD)

        def vptr(name, idx, ty):
            aty, arr = ary[name]
            p = cgutils.get_item_pointer(context, builder, aty, arr, idx, wraparound=False)
            return b.bitcast(p, ty.as_pointer())

        def tile_ptr(c, g):
            return vptr("buf", [c, g], _VF)

        def class_vec(c):
            return v.broadcast(b.trunc(c, _I32), _VI)

        zero_f = _splat(_VF, 0.0)
        one_f = _splat(_VF, 1.0)
        zero_d = _splat(_VD, 0.0)
        n_groups = b.udiv(width, ir.Constant(width.type, _LANES))

        def group(gi, state):
            g = b.mul(gi, ir.Constant(gi.type, _LANES))
            at = b.add(row0, g)  # the group's first row in the batch
            # The labels, int64 to int32 lanes; any negative one (an ignored
            # row, whatever its value) becomes -1 before the truncation.
            y = v.join(*(v.labels32(b.load(vptr("labels", [b.add(at, _intp(k))], _VL), align=8)) for k in (0, 4)))

            # Pass 1: the max and the label's logit.
            def p1(c, st):
                m, xy = st
                x = b.load(tile_ptr(c, g), align=4)
                m = b.select(b.fcmp_ordered(">", x, m), x, m)
                xy = b.select(b.icmp_signed("==", y, class_vec(c)), x, xy)
                return [m, xy]

            m, xy = _loop(b, n_cls, [_splat(_VF, -math.inf), zero_f], p1)

            # Pass 2: exponentials stored back; ties (terms equal to 1) in
            # float32 (counts <= 64 are exact), the other terms summed in float64.
            def p2(c, st):
                ties, rs_lo, rs_hi, ey = st
                p = tile_ptr(c, g)
                e = v.exp32(b.fmul(b.fsub(b.load(p, align=4), m), it_f))
                b.store(e, p, align=4)
                is1 = b.fcmp_ordered("==", e, one_f)
                ties = b.fadd(ties, b.select(is1, one_f, zero_f))
                rest = b.select(is1, zero_f, e)
                rs_lo = b.fadd(rs_lo, b.fpext(v.half(rest, False), _VD))
                rs_hi = b.fadd(rs_hi, b.fpext(v.half(rest, True), _VD))
                ey = b.select(b.icmp_signed("==", y, class_vec(c)), e, ey)
                return [ties, rs_lo, rs_hi, ey]

            ties, rs_lo, rs_hi, ey = _loop(b, n_cls, [zero_f, zero_d, zero_d, zero_f], p2)

            # Per row, float64, four rows at a time (eq. (7) and (16)).
            g_y, g_a = [], []
            for hi, rs in ((False, rs_lo), (True, rs_hi)):
                gh = b.add(g, ir.Constant(g.type, 4 if hi else 0))
                rh = b.add(at, _intp(4 if hi else 0))
                sw = v.load_or_ones(use_sw, vptr("sws", [rh], _VD))
                lse, row_loss, gy4, ga4, odd = v.half_rows(hi, m, ties, rs, xy, ey, y, sw, it_d, gs_d)
                b.store(lse, vptr("lses", [rh], _VD), align=8)
                b.store(row_loss, vptr("losses", [rh], _VD), align=8)
                g_y.append(gy4)
                g_a.append(ga4)
                b.store(odd, vptr("special", [gh], _VI4), align=4)
            gy = v.join(*g_y)
            ga = v.join(*g_a)

            # Pass 3: the gradient over the tile.
            with b.if_then(need):

                def p3(c, st):
                    p = tile_ptr(c, g)
                    e = b.load(p, align=4)
                    b.store(b.select(b.icmp_signed("==", y, class_vec(c)), gy, b.fmul(e, ga)), p, align=4)
                    return []

                _loop(b, n_cls, [], p3)
            return []

        _loop(b, n_groups, [], group)
        return context.get_dummy_value()

    sig = (buf, labels, sws, has_sw, base, inv_t, grad_scale, need_grad, losses, lses, special)
    return types.none(*sig), codegen


def vec_tile(like):  # pragma: no cover - replaced by the overload inside jitted code
    """True (a constant, known when numba compiles) where :func:`plain_tile`
    runs the vector passes: float32 data (``like``, a scalar of its dtype)."""
    raise NotImplementedError


@overload(vec_tile, inline="always")
def _vec_tile_overload(like):
    if isinstance(like, types.Float) and like.bitwidth == 32:
        return lambda like: True
    return lambda like: False


def plain_tile(buf, labels, sws, has_sw, base, inv_t, grad_scale, need_grad, losses, lses, special):  # pragma: no cover
    """:func:`_plain_tile_f32` for a float32 tile; nothing for any other dtype
    (callers check :func:`vec_tile` first). Replaced by the overload in jitted code."""
    raise NotImplementedError


@overload(plain_tile, inline="always")
def _plain_tile_overload(buf, labels, sws, has_sw, base, inv_t, grad_scale, need_grad, losses, lses, special):
    if isinstance(buf, types.Array) and buf.dtype == types.float32:

        def run(buf, labels, sws, has_sw, base, inv_t, grad_scale, need_grad, losses, lses, special):
            _plain_tile_f32(buf, labels, sws, has_sw, base, inv_t, grad_scale, need_grad, losses, lses, special)

        return run
    return lambda buf, labels, sws, has_sw, base, inv_t, grad_scale, need_grad, losses, lses, special: None

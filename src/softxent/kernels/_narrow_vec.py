"""Rows of up to 24 float32 classes, eight rows in registers, for :func:`._tiles._xent_index_tiles`.

The tile kernel copies 64 rows into a (V, 64) buffer, runs its passes
across rows and copies the gradient back. With few classes eight rows fit
in registers: :func:`narrow_rows` loads them and sorts their lanes into one
vector per class (lane r holding row r), runs the tile's passes on those
registers (the max and the label's logit; the exponentials, the count of
ties and the float64 sum of the others; :meth:`._tile_vec._Vec.half_rows`
for the per-row float64 work; the gradient) and sorts the gradient's lanes
back, stored over the same eight rows. No buffer, no copies, no per-tile
set-up. Below eight classes the eight rows are V vectors of eight floats,
sorted with ``shufflevector`` (:func:`_pick`); from eight classes on, 8x8
blocks of the rows (the last one overlapping the one before) are
transposed in registers (:func:`._tile_vec.transpose8`).

One thread, 16384 rows in cache, against the tile kernel: V = 3 11.8 ->
8.6-9.9 ns a row, V = 10 17.6-18.2 -> 12.7-12.9, V = 16 22.3-22.8 ->
16.8-17.6, V = 20 27.1-27.3 -> 19.9-21.5. It also wins at V = 32 (38 ->
30-32 ns), but each V is a loop of its own (V is known only at run time:
the kernel jumps to the loop for the batch's V, its lane orders fixed), and
the first float32 call's compilation grows with them: about 57 s with
V < 8 only, 67 with V <= 16, 77 with V <= 24, 96 with V <= 32. So it stops
at 24 (``NARROW_V``).

A group of eight rows with a row that needs care (a max that is not
finite, a NaN sum) is left untouched and flagged in ``bad``; the caller
sends it to the tile kernel, which sends that row on to the row kernel.
The math is the tile kernel's vector passes', so results match them to
rounding (FMAs and summation order may differ), not bit for bit.
"""

from __future__ import annotations

import math

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from ._tile_vec import _I32, _VD, _VF, _VI, _VL, _hreduce, _intp, _loop, _splat, _Vec, _vload, _vstore, transpose8

_LANES = 8
NARROW_V = 25  # rows of fewer classes than this take narrow_rows


def _pick(b: ir.IRBuilder, srcs: list, picks: list):
    """A vector whose lane k is lane ``picks[k][1]`` of ``srcs[picks[k][0]]``,
    built by two-input shuffles, one per source vector after the first."""
    order = sorted({j for j, _ in picks})
    first = order[0]
    x = srcs[first]
    have = [lane if j == first else 0 for j, lane in picks]
    x = b.shuffle_vector(x, x, ir.Constant(_VI, have))
    for j in order[1:]:
        mask = [(_LANES + lane) if pj == j else k for k, (pj, lane) in enumerate(picks)]
        x = b.shuffle_vector(x, srcs[j], ir.Constant(_VI, mask))
    return x


def _group(context, b: ir.IRBuilder, v: _Vec, n_cls: int, zp, gp, arr, g0, consts):
    """One group of eight rows of logits at ``zp`` (their first float), the gradient to ``gp``, V = ``n_cls``."""
    it, it_d, gs_d, has_sw, need, sig = consts
    xs = _classes_in(b, zp, n_cls)

    def ptr(k, i, ty):
        p = cgutils.get_item_pointer(context, b, sig[k], arr[k], [i], wraparound=False)
        return b.bitcast(p, ty.as_pointer())

    y = v.join(*(v.labels32(b.load(ptr(1, b.add(g0, _intp(h)), _VL), align=8)) for h in (0, 4)))
    is_y = [b.icmp_signed("==", y, _splat(_VI, c)) for c in range(n_cls)]
    zero_f = _splat(_VF, 0.0)
    one_f = _splat(_VF, 1.0)
    m = _splat(_VF, -math.inf)
    xy = zero_f
    for c, x in enumerate(xs):  # pass 1: the max (NaN skipped) and the label's logit
        m = b.select(b.fcmp_ordered(">", x, m), x, m)
        xy = b.select(is_y[c], x, xy)
    ties, rs, ey, es = zero_f, [_splat(_VD, 0.0)] * 2, zero_f, []
    for c, x in enumerate(xs):  # pass 2: ties in float32 (exact), the other terms in float64
        e = v.exp32(b.fmul(b.fsub(x, m), it))
        es.append(e)
        is1 = b.fcmp_ordered("==", e, one_f)
        ties = b.fadd(ties, b.select(is1, one_f, zero_f))
        rest = b.select(is1, zero_f, e)
        rs = [b.fadd(rs[h], b.fpext(v.half(rest, h == 1), _VD)) for h in (0, 1)]
        ey = b.select(is_y[c], e, ey)
    g_y, g_a, bad = [], [], []
    for h in (0, 1):  # the per-row float64 work, four rows a vector
        at = b.add(g0, _intp(4 * h))
        sw = v.load_or_ones(has_sw, ptr(2, at, _VD))
        lse, loss, gy4, ga4, odd = v.half_rows(h == 1, m, ties, rs[h], xy, ey, y, sw, it_d, gs_d)
        b.store(lse, ptr(10, at, _VD), align=8)
        b.store(loss, ptr(9, at, _VD), align=8)
        g_y.append(gy4)
        g_a.append(ga4)
        bad.append(odd)
    flag = _hreduce(b, b.or_(bad[0], bad[1]), b.or_)
    gy, ga = v.join(*g_y), v.join(*g_a)
    with b.if_then(b.and_(need, b.icmp_signed("==", flag, _I32(0)))):  # pass 3, stored over the rows
        _classes_out(b, [b.select(is_y[c], gy, b.fmul(e, ga)) for c, e in enumerate(es)], gp, n_cls)
    return flag


def _blocks(n_cls: int) -> list:
    """The first classes of the 8x8 blocks that cover a row of 8 classes or more (the last may overlap)."""
    return list(range(0, n_cls - _LANES, _LANES)) + [n_cls - _LANES]


def _classes_in(b: ir.IRBuilder, zp, n_cls: int) -> list:
    """The group's eight rows at ``zp`` as one vector per class, lane r holding row r."""
    if n_cls < _LANES:  # V vectors hold the eight rows: class c of row r is float r V + c
        rows = [_vload(b, zp, _intp(j * _LANES)) for j in range(n_cls)]
        return [_pick(b, rows, [divmod(r * n_cls + c, _LANES) for r in range(_LANES)]) for c in range(n_cls)]
    xs = [None] * n_cls
    for c0 in _blocks(n_cls):  # 8x8 blocks, transposed in registers
        w = transpose8(b, [_vload(b, zp, _intp(r * n_cls + c0)) for r in range(_LANES)])
        for m in range(_LANES):
            xs[c0 + m] = w[m]
    return xs


def _classes_out(b: ir.IRBuilder, gs: list, gp, n_cls: int) -> None:
    """The inverse of :func:`_classes_in`: one vector per class stored as the eight rows at ``gp``."""
    if n_cls < _LANES:
        for j in range(n_cls):
            flat = [j * _LANES + k for k in range(_LANES)]
            _vstore(b, _pick(b, gs, [(f % n_cls, f // n_cls) for f in flat]), gp, _intp(j * _LANES))
        return
    for c0 in _blocks(n_cls):  # an overlapping block stores the same values twice
        w = transpose8(b, gs[c0 : c0 + _LANES])
        for r in range(_LANES):
            _vstore(b, w[r], gp, _intp(r * n_cls + c0))


@intrinsic
def _narrow_rows_f32(typingctx, z, labels, sws, n_groups, lo, inv_t, grad_scale, g, need_grad, loss, lse, bad):
    """:func:`narrow_rows` for float32 ``z`` (V < ``NARROW_V``)."""
    if not all(isinstance(a, types.Array) and a.dtype == types.float32 and a.ndim == 2 and a.layout == "C"
               for a in (z, g)):  # fmt: skip
        return None
    one_d = ((labels, types.int64), (sws, types.float64), (loss, types.float64), (lse, types.float64),
             (bad, types.int8))  # fmt: skip
    if not all(isinstance(a, types.Array) and a.dtype == d and a.ndim == 1 and a.layout == "C" for a, d in one_d):
        return None
    if not (isinstance(n_groups, types.Integer) and isinstance(lo, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        sig = signature.args
        b = builder
        v = _Vec(b)
        arr = {k: context.make_array(sig[k])(context, b, args[k]) for k in (0, 1, 2, 7, 9, 10, 11)}
        count = context.cast(b, args[3], sig[3], types.intp)
        row0 = context.cast(b, args[4], sig[4], types.intp)
        it64 = context.cast(b, args[5], sig[5], types.float64)
        it = v.broadcast(b.fptrunc(it64, ir.FloatType()), _VF)
        it_d = v.broadcast(it64, _VD)
        gs_d = v.broadcast(b.fmul(it64, context.cast(b, args[6], sig[6], types.float64)), _VD)
        need = context.cast(b, args[8], sig[8], types.boolean)
        has_sw = b.icmp_signed(">", b.extract_value(arr[2].shape, 0), _intp(0))
        consts = (it, it_d, gs_d, has_sw, need, sig)
        n_cls = b.extract_value(arr[0].shape, 1)
        done = b.append_basic_block("narrow.done")
        switch = b.switch(n_cls, done)
        for width in range(1, NARROW_V):
            block = b.append_basic_block(f"narrow.v{width}")
            switch.add_case(ir.Constant(n_cls.type, width), block)
            b.position_at_end(block)

            def one(gi, st, width=width):
                g0 = b.add(row0, b.mul(gi, _intp(_LANES)))
                zp = cgutils.get_item_pointer(context, b, sig[0], arr[0], [g0, _intp(0)], wraparound=False)
                gp = cgutils.get_item_pointer(context, b, sig[7], arr[7], [g0, _intp(0)], wraparound=False)
                flag = _group(context, b, v, width, zp, gp, arr, g0, consts)
                p = cgutils.get_item_pointer(context, b, sig[11], arr[11], [gi], wraparound=False)
                b.store(b.trunc(flag, ir.IntType(8)), p)
                return []

            _loop(b, count, [], one)
            b.branch(done)
        b.position_at_end(done)
        return context.get_dummy_value()

    sig = (z, labels, sws, n_groups, lo, inv_t, grad_scale, g, need_grad, loss, lse, bad)
    return types.none(*sig), codegen


def narrow_rows(z, labels, sws, n_groups, lo, inv_t, grad_scale, g, need_grad, loss, lse, bad):  # pragma: no cover
    """Rows ``lo:lo + 8 n_groups`` of ``z`` (float32, 1 <= V < ``NARROW_V``, no class weights
    or smoothing), eight at a time, the gradient to ``g`` when ``need_grad``
    (``g`` may be ``z``: each group is loaded whole before it is stored). ``labels``
    int64 (negative: ignored), ``sws`` float64 sample weights (size 0 when
    absent). Writes ``loss[i]`` and ``lse[i]`` and ``bad[g]``: 1 for a group
    left untouched (a row that needs care; its loss and lse are to be
    overwritten). Replaced by the overload in jitted code.
    """
    raise NotImplementedError


@overload(narrow_rows, inline="always")
def _narrow_rows_overload(z, labels, sws, n_groups, lo, inv_t, grad_scale, g, need_grad, loss, lse, bad):
    if isinstance(z, types.Array) and z.dtype == types.float32:

        def run(z, labels, sws, n_groups, lo, inv_t, grad_scale, g, need_grad, loss, lse, bad):
            _narrow_rows_f32(z, labels, sws, n_groups, lo, inv_t, grad_scale, g, need_grad, loss, lse, bad)

        return run
    return lambda z, labels, sws, n_groups, lo, inv_t, grad_scale, g, need_grad, loss, lse, bad: None

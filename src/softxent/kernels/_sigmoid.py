"""Binary cross-entropy of independent sigmoid heads: the elementwise row
(:func:`_sigmoid_row`: float64 arithmetic for float64 logits, float32 for
float32 ones) and two families of loops over it:

* :func:`sigmoid_xent_total` and its parallel driver
  :func:`sigmoid_xent_total_blocks` (what the public functions and the
  estimators call): the loss's float64 total, the gradient and, when asked,
  each element's loss, with the labels checked in the same sweep; without
  weights, flat tiles and a shorter pass 3 (:func:`_plain_element`); with
  weights, flat tiles of rows for few labels, a row at a time for many.

Work per element, loss and gradient (the budget in ``benchmarks/README.md``):
2 loads (logit, label) and 1 store (gradient) from memory; one exponential,
one log1p and one division (shared by log1p and the sigmoid), in vector
passes over a tile of 2048 elements (see ``_exp_pass``) whose intermediates
stay in L1/L2: float32 three passes (exp; log1p and the reciprocal; loss
and gradient), float64 two (the last two joined, see
:func:`_plain_finish_log1p`), then one loop that sums the tile's losses in
float64 and counts its bad labels. Weights add 2 loads per element (the
per-label weights, repeated along the tile). float64 runs 4 lanes to an
AVX2 vector, with polynomials long enough for float64 (a degree-13
exponential, a degree-23 atanh series); float32 input runs 8 lanes and
polynomials of degree 7 and 9, which is why it has its own arithmetic
rather than float64's.

Accuracy: float64 as the NumPy oracle (a few ulps). float32 input in
float32 arithmetic: each element's loss within 3.5 eps (float32's) of the
float64 result, relative, and its gradient within 3.1 eps of the larger of
its two terms (w (1 - y) sigma(z) and w p y sigma(-z): where they cancel,
float32 itself can do no better), measured on 1.6e6 elements over
[-90, 90] with hard and soft labels and weights (the unweighted pass: 3.2
and 2.2 eps); tiny results (a confident element's exp(-|z|)) keep the same
relative precision, and results below float32's smallest normal number
(exp(-87.3) times the weights) are flushed to 0. Sums of the loss (rows,
tiles) are taken in float64 in both cases.
"""

from __future__ import annotations

import numba as nb
import numpy as np
from numba import prange, types
from numba.extending import overload

from ._jit import JIT, JIT_ELEMENT, JIT_SUM
from ._vmath import _log1p_recip, _log1p_recip32, _vexp32_fine, vexp

_ZERO32, _ONE32, _NAN32 = np.float32(0.0), np.float32(1.0), np.float32(np.nan)


# Three passes over a row (or a tile of rows), each a vector loop: exp(-|z|),
# then log1p and the reciprocal, then the loss and the gradient. One fused
# loop ran at 5.0 ns an element in float64 (one thread, in cache), bound by
# the latency of its chain (exponential -> division -> atanh series, about
# 100 cycles deep) with one vector in flight; three shorter loops keep
# several vectors in flight: 3.7 ns. The intermediates live in scratch
# tiles in L1/L2.


def _exp_nabs(z):  # pragma: no cover - replaced by the overload below
    """exp(-|z|) in the arithmetic of ``z``'s dtype."""
    raise NotImplementedError


@overload(_exp_nabs, inline="always")
def _exp_nabs_overload(z):
    if z == types.float32:
        return lambda z: _vexp32_fine(-abs(z))
    if isinstance(z, types.Float):
        return lambda z: vexp(-abs(np.float64(z)))
    return None


def _l1p_recip(a):  # pragma: no cover - replaced by the overload below
    """``(log1p(a), 1 / (1 + a))`` in the arithmetic of ``a``'s dtype."""
    raise NotImplementedError


@overload(_l1p_recip, inline="always")
def _l1p_recip_overload(a):
    if a == types.float32:
        return lambda a: _log1p_recip32(a)
    if a == types.float64:
        return lambda a: _log1p_recip(a)
    return None


@nb.njit(**JIT_ELEMENT)
def _exp_pass(x, ta):
    """Pass 1: ``ta = exp(-|x|)`` in (0, 1]: sigma(+-z) and log sigma(+-z) all
    follow from it without overflow; log sigma(z) = min(z, 0) - log1p(a)."""
    for c in range(x.shape[0]):
        ta[c] = _exp_nabs(x[c])


@nb.njit(**JIT_ELEMENT)
def _log1p_pass(ta, tl, ti):
    """Pass 2: ``tl = log1p(ta)``, ``ti = 1 / (1 + ta)`` (one division for both)."""
    for c in range(ta.shape[0]):
        tl[c], ti[c] = _l1p_recip(ta[c])


@nb.njit(**JIT_ELEMENT)
def _sigmoid_row64(x, yr, pos_w, w, sw, grad_scale, g, e, ta, tl, ti):
    """Pass 3 in float64: the losses into ``e``, the gradient into ``g``, from passes 1-2.

    Elementwise and branch-free (the conditions below compile to selects),
    so LLVM vectorises it; the row's sum is taken afterwards.
    """
    for c in range(x.shape[0]):
        zc = np.float64(x[c])
        a, l1p, inv = ta[c], tl[c], ti[c]
        pos = zc >= 0.0
        sig_p = inv if pos else a * inv  # sigma(z)
        sig_n = a * inv if pos else inv  # sigma(-z) = 1 - sigma(z), without cancelling
        cp = pos_w[c] * np.float64(yr[c])  # weight of -log sigma(z)
        cn = 1.0 - np.float64(yr[c])  # weight of -log sigma(-z)
        scale = w[c] * sw
        # 0 * inf = 0: a term with no weight adds nothing even at z = +-inf.
        lp = cp * (l1p - min(zc, 0.0)) if cp != 0.0 else 0.0
        ln = cn * (l1p - min(-zc, 0.0)) if cn != 0.0 else 0.0
        nan = zc != zc  # NaN in, NaN out, even where both weights are 0
        e[c] = np.nan if nan else scale * (lp + ln)
        gc = scale * (cn * sig_p - cp * sig_n) * grad_scale
        g[c] = np.nan if nan else gc


@nb.njit(**JIT_ELEMENT)
def _sigmoid_row32(x, yr, pos_w, w, sw, grad_scale, g, e, ta, tl, ti):
    """:func:`_sigmoid_row64` in float32 arithmetic, for float32 logits.

    ``pos_w``, ``w``, ``e`` and the scratch tiles are float32; every
    constant is a float32, so nothing widens to float64 (numba promotes
    float32 op Python float to float64, which would halve the vector width).
    Passes 1-2 use the float32 exponential and log1p of :mod:`._vmath`
    (about 1 and 2.9 eps; see the module docstring for the element's bound).
    """
    sw32 = np.float32(sw)
    gs32 = np.float32(grad_scale)
    for c in range(x.shape[0]):
        zc = x[c]
        a, l1p, inv = ta[c], tl[c], ti[c]
        pos = zc >= _ZERO32
        ainv = a * inv
        sig_p = inv if pos else ainv
        sig_n = ainv if pos else inv
        cp = pos_w[c] * np.float32(yr[c])
        cn = _one_minus32(yr[c])
        scale = w[c] * sw32
        lp = cp * (l1p - min(zc, _ZERO32)) if cp != _ZERO32 else _ZERO32
        ln = cn * (l1p - min(-zc, _ZERO32)) if cn != _ZERO32 else _ZERO32
        nan = zc != zc
        e[c] = _NAN32 if nan else scale * (lp + ln)
        gc = scale * (cn * sig_p - cp * sig_n) * gs32
        g[c] = _NAN32 if nan else gc


def _one_minus32(y):  # pragma: no cover - replaced by the overload below
    """``1 - y`` as a float32, for a float32 or float64 label ``y``."""
    raise NotImplementedError


@overload(_one_minus32, inline="always")
def _one_minus32_overload(y):
    # A float64 label is subtracted in float64 and then rounded: rounding y
    # first would cost 1 - y its digits near y = 1 (y = 1 - 8e-6 in float32
    # is 0.4% off in 1 - y). A float32 label's 1 - y is exact above 0.5.
    if y == types.float32:
        return lambda y: _ONE32 - y
    if isinstance(y, types.Float):
        return lambda y: np.float32(1.0 - np.float64(y))
    return None


def _finish(x, yr, pos_w, w, sw, grad_scale, g, e, ta, tl, ti):  # pragma: no cover - replaced by the overload
    """Pass 3 in the arithmetic of ``x``'s dtype (see the overload)."""
    raise NotImplementedError


@overload(_finish, inline="always")
def _finish_overload(x, yr, pos_w, w, sw, grad_scale, g, e, ta, tl, ti):
    if isinstance(x, types.Array) and x.dtype == types.float32:
        return lambda x, yr, pos_w, w, sw, grad_scale, g, e, ta, tl, ti: _sigmoid_row32(
            x, yr, pos_w, w, sw, grad_scale, g, e, ta, tl, ti
        )
    if isinstance(x, types.Array) and x.dtype == types.float64:
        return lambda x, yr, pos_w, w, sw, grad_scale, g, e, ta, tl, ti: _sigmoid_row64(
            x, yr, pos_w, w, sw, grad_scale, g, e, ta, tl, ti
        )
    return None


@nb.njit(**JIT)
def _sigmoid_row(x, yr, pos_w, w, sw, grad_scale, g, e, ta, tl, ti):
    """One row (or tile) of sigmoid heads in the arithmetic of ``x``'s dtype:
    the three passes; ``e`` and the scratch ``ta``, ``tl``, ``ti`` (at least
    ``x``'s length) are of ``x``'s dtype."""
    n = x.shape[0]
    _exp_pass(x, ta[:n])
    _log1p_pass(ta[:n], tl[:n], ti[:n])
    _finish(x, yr, pos_w, w, sw, grad_scale, g, e, ta[:n], tl[:n], ti[:n])


# Few labels (K <= _SMALL_K): a row is too short for a vector loop along it (K = 14 ran at 20-27 ns
# an element, a 1000-wide row at 7), so tiles of rows run as one flat elementwise loop, with the
# per-label weights repeated along the tile.
_SMALL_K = 64
_FLAT_TILE = 2048  # elements per tile (about 8-16 KiB per operand)


# --------------------------------------------------------------------------- totals, labels checked in the sweep
#
# The public functions need the loss's total (or its elements, for
# reduction="none") and the gradient, never the row sums; the row sums of
# the earlier row kernels' per-row sums cost 10% of it (four rows side by side, scalar).
# So each tile's losses are summed by one vector loop (float64 lanes) that
# also counts the tile's labels outside [0, 1] (NaN included): the wrappers'
# separate check read every label a second time from memory (0.16 ms of 2.7
# at 65536 x 14 float32). Without weights (the common case) tiles ignore row
# boundaries and pass 3 is shorter: no weight tiles to fill, load and
# multiply (see _plain_finish). The total is summed tile by tile in a fixed
# order within a block of rows and block by block in a fixed order, blocks
# fixed by the shape: the same bits whatever the thread count.

_TOTAL_TILE = 2048  # elements per tile: the scratch (4 tiles) and the tile's operands stay in L1/L2


def _in_dtype_of(y, like):  # pragma: no cover - replaced by the overload below
    """``y`` (a label, a constant) in the arithmetic of ``like``'s dtype."""
    raise NotImplementedError


@overload(_in_dtype_of, inline="always")
def _in_dtype_of_overload(y, like):
    if like == types.float32:
        return lambda y, like: np.float32(y)
    if like == types.float64:
        return lambda y, like: np.float64(y)
    return None


def _one_minus_in(y, like):  # pragma: no cover - replaced by the overload below
    """``1 - y`` in the arithmetic of ``like``'s dtype (float64 labels subtracted before rounding)."""
    raise NotImplementedError


@overload(_one_minus_in, inline="always")
def _one_minus_in_overload(y, like):
    if like == types.float32:
        return lambda y, like: _one_minus32(y)
    if like == types.float64:
        return lambda y, like: 1.0 - np.float64(y)
    return None


@nb.njit(inline="always", **JIT_ELEMENT)
def _plain_element(zc, yv, a, l1p, inv, gs):
    """One element without weights, in the arithmetic of ``zc``'s dtype: ``(loss, gradient)``.

    With ``a = exp(-|z|)``: ``-log sigma(z) = log1p(a) + max(-z, 0)`` and
    ``-log sigma(-z) = log1p(a) + max(z, 0)``, so the loss
    ``y (-log sigma(z)) + (1 - y)(-log sigma(-z))`` is ``log1p(a) + c |z|``,
    ``c`` the label weight of the side that ``z`` points away from (``1 - y``
    for ``z >= 0``, ``y`` below): two non-negative terms, no cancellation.
    ``c = 0`` adds 0 even at ``z = +-inf`` (0 * inf = 0); a NaN logit makes
    ``a``, hence both results, NaN. The gradient is written as two products,
    ``(1 - y) sigma(z) - y sigma(-z)``, as in the weighted pass.
    """
    zero = _in_dtype_of(0.0, zc)
    yc = _in_dtype_of(yv, zc)
    cn = _one_minus_in(yv, zc)
    pos = zc >= zero
    ainv = a * inv
    sig_p = inv if pos else ainv  # sigma(z)
    sig_n = ainv if pos else inv  # sigma(-z)
    away = cn if pos else yc
    return l1p + (away * abs(zc) if away != zero else zero), (cn * sig_p - yc * sig_n) * gs


@nb.njit(**JIT_ELEMENT)
def _plain_finish(x, yr, grad_scale, g, e, ta, tl, ti):
    """Pass 3 without weights (float32): losses into ``e``, gradients into ``g``, from passes 1-2."""
    gs = x.dtype.type(grad_scale)
    for c in range(x.shape[0]):
        e[c], g[c] = _plain_element(x[c], yr[c], ta[c], tl[c], ti[c], gs)


@nb.njit(**JIT_ELEMENT)
def _plain_finish_log1p(x, yr, grad_scale, g, e, ta):
    """Passes 2 and 3 in one loop without weights (float64): in float64 the separate log1p pass
    cost 10% more at 65536 x 14 (one thread), in float32 the joined loop 5%."""
    gs = x.dtype.type(grad_scale)
    for c in range(x.shape[0]):
        a = ta[c]
        l1p, inv = _l1p_recip(a)
        e[c], g[c] = _plain_element(x[c], yr[c], a, l1p, inv, gs)


def _plain_tile(x, yr, grad_scale, g, e, ta, tl, ti):  # pragma: no cover - replaced by the overload
    """Passes 1-3 without weights over a tile, in the arithmetic of ``x``'s dtype."""
    raise NotImplementedError


@overload(_plain_tile, inline="always")
def _plain_tile_overload(x, yr, grad_scale, g, e, ta, tl, ti):
    if isinstance(x, types.Array) and x.dtype == types.float32:

        def three_passes(x, yr, grad_scale, g, e, ta, tl, ti):
            _exp_pass(x, ta)
            _log1p_pass(ta, tl, ti)
            _plain_finish(x, yr, grad_scale, g, e, ta, tl, ti)

        return three_passes
    if isinstance(x, types.Array) and x.dtype == types.float64:

        def two_passes(x, yr, grad_scale, g, e, ta, tl, ti):
            _exp_pass(x, ta)
            _plain_finish_log1p(x, yr, grad_scale, g, e, ta)

        return two_passes
    return None


@nb.njit(**JIT_SUM)
def _sum_check(e, yr):
    """``(float64 sum of e, count of yr's entries outside [0, 1] or NaN)``: one vector loop (reassoc).

    The count is kept in the labels' dtype (8 float32 lanes; a float64 count
    cost 0.05 ns an element more, a sixth of this loop); it only ever grows,
    so it is nonzero whenever a label is bad, however long the row.
    """
    lo, hi = yr.dtype.type(0.0), yr.dtype.type(1.0)
    total = 0.0
    n_bad = lo
    for c in range(e.shape[0]):
        total += np.float64(e[c])
        v = yr[c]
        n_bad += lo if (v >= lo) & (v <= hi) else hi
    return total, n_bad


@nb.njit(**JIT)
def _total_plain(zf, yf, grad_scale, gf, need_grad, ef, want_elem):
    """Flat ``zf``, ``yf`` without weights: ``(total, bad)``, tile by tile (``bad``: some label is not in [0, 1])."""
    n = zf.shape[0]
    t = min(n, _TOTAL_TILE)
    ta, tl, ti = np.empty(t, dtype=zf.dtype), np.empty(t, dtype=zf.dtype), np.empty(t, dtype=zf.dtype)
    e_t = np.empty(t, dtype=zf.dtype)
    g_t = np.empty(0 if need_grad else t, dtype=gf.dtype)
    total = 0.0
    for a in range(0, n, _TOTAL_TILE):
        b = min(n, a + _TOTAL_TILE)
        m = b - a
        e = ef[a:b] if want_elem else e_t[:m]
        g = gf[a:b] if need_grad else g_t[:m]
        _plain_tile(zf[a:b], yf[a:b], grad_scale, g, e, ta[:m], tl[:m], ti[:m])
        s, n_bad = _sum_check(e, yf[a:b])
        if n_bad != 0:
            return total, True
        total += s
    return total, False


@nb.njit(**JIT)
def _total_weighted_flat(z, y, pos_w, w, sample_weight, grad_scale, grad, need_grad, loss_elem, lo, hi):
    """Rows ``lo:hi`` with weights and few labels: tiles of rows as one flat elementwise loop
    (:func:`_sigmoid_row`, ``w_c * s_i`` formed per element), summed by :func:`_sum_check`;
    ``pos_w``, ``w`` (K,) (ones where absent)."""
    k = z.shape[1]
    rows = max(1, _FLAT_TILE // k)
    has_sw = sample_weight.shape[0] > 0
    want_elem = loss_elem.shape[0] > 0
    zf, yf = z.reshape(-1), y.reshape(-1)
    gf = grad.reshape(-1)
    ef = loss_elem.reshape(-1)
    pos_t = np.empty(rows * k, dtype=z.dtype)  # weights in the arithmetic's dtype
    w_t = np.empty(rows * k, dtype=z.dtype)
    for r in range(rows):
        for c in range(k):
            pos_t[r * k + c] = pos_w[c]
            w_t[r * k + c] = w[c]
    wsw = np.empty(rows * k if has_sw else 0, dtype=z.dtype)
    e_t = np.empty(rows * k, dtype=z.dtype)
    ta, tl, ti = np.empty(rows * k, dtype=z.dtype), np.empty(rows * k, dtype=z.dtype), np.empty(rows * k, dtype=z.dtype)
    g_t = np.empty(0 if need_grad else rows * k, dtype=grad.dtype)
    total = 0.0
    for base in range(lo, hi, rows):
        nr = min(rows, hi - base)
        a, b = base * k, (base + nr) * k
        scale = w_t[: b - a]
        if has_sw:
            for r in range(nr):
                sw = sample_weight[base + r]
                for c in range(k):
                    wsw[r * k + c] = w_t[r * k + c] * sw
            scale = wsw[: b - a]
        e = ef[a:b] if want_elem else e_t[: b - a]
        g = gf[a:b] if need_grad else g_t[: b - a]
        _sigmoid_row(zf[a:b], yf[a:b], pos_t[: b - a], scale, 1.0, grad_scale, g, e, ta, tl, ti)
        s, n_bad = _sum_check(e, yf[a:b])
        if n_bad != 0:
            return total, True
        total += s
    return total, False


@nb.njit(**JIT)
def _total_weighted_rows(z, y, pos_w, w, sample_weight, grad_scale, grad, need_grad, loss_elem, lo, hi):
    """Rows ``lo:hi`` with weights and many labels, one row at a time."""
    k = z.shape[1]
    has_sw = sample_weight.shape[0] > 0
    want_elem = loss_elem.shape[0] > 0
    pos_c = pos_w.astype(z.dtype)
    w_c = w.astype(z.dtype)
    e_t = np.empty(k, dtype=z.dtype)
    ta, tl, ti = np.empty(k, dtype=z.dtype), np.empty(k, dtype=z.dtype), np.empty(k, dtype=z.dtype)
    g_t = np.empty(0 if need_grad else k, dtype=grad.dtype)
    total = 0.0
    for i in range(lo, hi):
        sw = sample_weight[i] if has_sw else 1.0
        e = loss_elem[i] if want_elem else e_t
        g = grad[i] if need_grad else g_t
        _sigmoid_row(z[i], y[i], pos_c, w_c, sw, grad_scale, g, e, ta, tl, ti)
        s, n_bad = _sum_check(e, y[i])
        if n_bad != 0:
            return total, True
        total += s
    return total, False


@nb.njit(**JIT)
def _total_rows(z, y, pos_w, w, sample_weight, grad_scale, grad, need_grad, loss_elem, lo, hi):
    """Rows ``lo:hi`` of :func:`sigmoid_xent_total`: ``(float64 total of their losses, bad labels?)``."""
    k = z.shape[1]
    if pos_w.shape[0] == 0 and w.shape[0] == 0 and sample_weight.shape[0] == 0:
        want_elem = loss_elem.shape[0] > 0
        a, b = lo * k, hi * k
        return _total_plain(
            z.reshape(-1)[a:b], y.reshape(-1)[a:b], grad_scale, grad.reshape(-1)[a:b] if need_grad else grad.reshape(-1)[:0],
            need_grad, loss_elem.reshape(-1)[a:b] if want_elem else loss_elem.reshape(-1)[:0], want_elem,
        )  # fmt: skip
    pos_c = np.ones(k) if pos_w.shape[0] == 0 else pos_w
    w_c = np.ones(k) if w.shape[0] == 0 else w
    if k <= _SMALL_K:
        return _total_weighted_flat(z, y, pos_c, w_c, sample_weight, grad_scale, grad, need_grad, loss_elem, lo, hi)
    return _total_weighted_rows(z, y, pos_c, w_c, sample_weight, grad_scale, grad, need_grad, loss_elem, lo, hi)


@nb.njit(**JIT)
def sigmoid_xent_total(z, y, pos_w, w, sample_weight, grad_scale, grad, need_grad, loss_elem):
    """Binary cross-entropy of independent sigmoid heads, all rows on this thread: ``(total, bad)``.

    ``z``, ``y``: C-contiguous (N, K) (``y`` float32 or float64, unchecked:
    ``bad`` says that some label is outside [0, 1] or NaN, and the results
    are then incomplete); ``pos_w``, ``w``: float64 (K,) or size 0 (no
    weight); ``sample_weight`` float64 (N,) or size 0. ``total`` is the
    float64 sum of the (weighted) losses; the gradient times ``grad_scale``
    goes into ``grad`` (of ``z``'s dtype) when ``need_grad``, each element's
    loss into ``loss_elem`` ((N, K) of ``z``'s dtype; size 0: not asked for).
    Inputs of more than one block of rows (:func:`total_block_rows`) go to
    :func:`sigmoid_xent_total_blocks`, and only they.
    """
    return _total_rows(z, y, pos_w, w, sample_weight, grad_scale, grad, need_grad, loss_elem, 0, z.shape[0])


# Elements per parallel block, about: 1500 x 14 (21000 elements) runs as two
# blocks of 750 rows, on two threads in 50 us instead of 79 (float64; float32
# 24 instead of 31); at 65536 x 14, 56 blocks instead of 14 cost nothing
# measurable (one thread, and two). Blocks of equal size, so that two
# threads share the work evenly.
_TOTAL_BLOCK = 1 << 14


def total_block_rows(n_rows: int, k: int) -> int:
    """Rows per block of :func:`sigmoid_xent_total_blocks` for an (N, K) input: a function of the shape only,
    so that the blocks, hence the bits of the total, do not depend on the thread count."""
    n_blocks = max(1, -(-n_rows * k // _TOTAL_BLOCK))
    return -(-n_rows // n_blocks)


@nb.njit(parallel=True, **JIT)
def sigmoid_xent_total_blocks(z, y, pos_w, w, sample_weight, grad_scale, grad, need_grad, loss_elem, step):
    """:func:`sigmoid_xent_total` in blocks of ``step`` rows, in parallel; the blocks' totals summed in order."""
    n = z.shape[0]
    n_blocks = (n + step - 1) // step
    totals = np.empty(n_blocks)
    bad = np.zeros(n_blocks, dtype=np.bool_)
    for b in prange(n_blocks):
        lo = b * step
        hi = min(n, lo + step)
        totals[b], bad[b] = _total_rows(z, y, pos_w, w, sample_weight, grad_scale, grad, need_grad, loss_elem, lo, hi)
    total = 0.0
    for b in range(n_blocks):
        total += totals[b]
    return total, bad.any()

"""Binary cross-entropy of independent sigmoid heads: the elementwise row
(:func:`_sigmoid_row`), the row loop (:func:`_sigmoid_xent_rows`) and the
flat loop for few labels (:func:`_sigmoid_xent_flat`); the parallel driver
``sigmoid_xent`` lives in :mod:`softxent.kernels._cpu`.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ._jit import JIT, JIT_ELEMENT, JIT_SUM
from ._vmath import _log1p_recip, vexp


@nb.njit(**JIT_ELEMENT)
def _sigmoid_row(x, yr, pos_w, w, sw, grad_scale, g, e):
    """One row of independent sigmoid heads: losses into ``e``, the gradient into ``g``.

    Elementwise and branch-free (the conditions below compile to selects),
    so LLVM vectorises it, the exponential and log1p included; the row's sum
    is taken afterwards by :func:`_row_sum` with a vectorised reduction.
    """
    for c in range(x.shape[0]):
        zc = np.float64(x[c])
        # a = exp(-|z|) in (0, 1]: sigma(+-z) and log sigma(+-z) all follow
        # from it without overflow; log sigma(z) = min(z, 0) - log1p(a).
        a = vexp(-abs(zc))
        l1p, inv = _log1p_recip(a)
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


@nb.njit(**JIT_SUM)
def _row_sum(e):
    total = 0.0
    for c in range(e.shape[0]):
        total += e[c]
    return total


@nb.njit(**JIT)
def _sigmoid_xent_rows(z, y, pos_w, w, sample_weight, grad_scale, grad, need_grad, loss_elem, row_loss, lo, hi):
    """Rows ``lo:hi`` of :func:`sigmoid_xent`: one elementwise pass per row, then its sum.

    Without a gradient (or per-element losses) the row still goes through
    the same code, into a scratch row: the loss is bit-identical either way.
    """
    n_lab = z.shape[1]
    has_sw = sample_weight.shape[0] > 0
    want_elem = loss_elem.shape[0] > 0
    e_scratch = np.empty(n_lab)
    g_scratch = np.empty(n_lab, dtype=grad.dtype)
    for i in range(lo, hi):
        sw = sample_weight[i] if has_sw else 1.0
        e = loss_elem[i] if want_elem else e_scratch
        g = grad[i] if need_grad else g_scratch
        _sigmoid_row(z[i], y[i], pos_w, w, sw, grad_scale, g, e)
        row_loss[i] = _row_sum(e)


# Few labels (K <= _SMALL_K): a row is too short for the vector loop of
# _sigmoid_row (K = 14 ran at 20-27 ns an element, a 1000-wide row at 7), so
# tiles of rows run as one flat elementwise loop, with the per-label weights
# repeated along the tile; the row sums follow.
_SMALL_K = 64
_FLAT_TILE = 2048  # elements per tile (about 16 KiB of float64 per operand)


@nb.njit(**JIT)
def _sigmoid_xent_flat(z, y, pos_w, w, sample_weight, grad_scale, grad, need_grad, loss_elem, row_loss, lo, hi):
    """Rows ``lo:hi`` of :func:`sigmoid_xent` for few labels, a tile of rows at a time.

    The same elementwise code (:func:`_sigmoid_row`) and the same row sums
    (:func:`_row_sum`) as the row path, with ``w_c * s_i`` formed per
    element: the same results up to rounding (two compiled loops, which LLVM
    may vectorise differently; which one runs depends on the label count only,
    never on the batch).
    """
    k = z.shape[1]
    rows = max(1, _FLAT_TILE // k)
    has_sw = sample_weight.shape[0] > 0
    want_elem = loss_elem.shape[0] > 0
    zf = z.reshape(-1)
    yf = y.reshape(-1)
    gf = grad.reshape(-1) if need_grad else np.empty(0, dtype=grad.dtype)
    ef = loss_elem.reshape(-1) if want_elem else np.empty(0)
    pos_t = np.empty(rows * k)
    w_t = np.empty(rows * k)
    for r in range(rows):
        for c in range(k):
            pos_t[r * k + c] = pos_w[c]
            w_t[r * k + c] = w[c]
    wsw = np.empty(rows * k)
    e_scratch = np.empty(rows * k)
    g_scratch = np.empty(rows * k, dtype=grad.dtype)
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
        e = ef[a:b] if want_elem else e_scratch[: b - a]
        g = gf[a:b] if need_grad else g_scratch[: b - a]
        _sigmoid_row(zf[a:b], yf[a:b], pos_t[: b - a], scale, 1.0, grad_scale, g, e)
        for r in range(nr):
            row_loss[base + r] = _row_sum(e[r * k : (r + 1) * k])

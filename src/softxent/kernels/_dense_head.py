r"""The softmax head of the estimators on dense X, in one sweep over cached row chunks.

For rows ``lo:hi`` of a fit's (n, d) matrix X, :func:`softmax_head_rows`
computes, a chunk of rows at a time while the chunk is in cache,

* the logits :math:`z = X W^\top + b` (:func:`_logits`),
* the fused softmax cross-entropy loss and gradient :math:`G = s_i (a - y)`
  written over z (the kernels of :mod:`._tiles` / :mod:`._rows`),
* :math:`\partial L/\partial W \mathrel{+}= G^\top X` and
  :math:`\partial L/\partial b \mathrel{+}= \sum_i G_i` (:func:`_accumulate`).

Why not BLAS: the estimators' products are skinny (K = 10 classes against
hundreds of features). OpenBLAS packs X for each of them and runs them at
about 20 GFLOP/s on one core of the AMD EPYC (Zen 3, AVX2) this was written
on, where its large square products reach 30; the register-blocked loops
here (2 rows x 5 classes forward, 4 rows x 5 classes backward, the row
vectorised along the features) reach 27-33, read each chunk of X from cache
the second time, and need no Python between the three steps. The caller
(:mod:`softxent.models._data_term`) uses them only where they win: few
classes, W small enough to stay in the core's L2 (:func:`suits`).

Sums: each dot product is a reassociated (vectorised) sum in X's dtype, as
BLAS's are; the weight gradient is accumulated in X's dtype over ``flush``
rows (a block of the BLAS path) and then added into float64 accumulators, as
the BLAS path adds each block's product; the loss and the intercept's
gradient are summed in float64.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ._jit import JIT, JIT_SUM
from ._tiles import _xent_index_tiles
from ._vmath import _prefetch

__all__ = ["softmax_head_rows", "suits", "chunk_rows"]

# Where the loops beat OpenBLAS (one core of the Zen 3 host, loss and gradient of 2000-20000 rows, both
# ways in one run): W must stay in cache while a chunk of X streams past it (a 150 KiB float64 W at
# K = 64 ran 0.8x BLAS, a 94 KiB float32 W at d = 3000 0.9x), the rows must be long enough for the
# vector loop (float32 at d = 32 ran 0.85x, float64 at d = 32 1.9x), and the classes few (float32 at
# K = 50: 0.96x). Inside these bounds the sweep measured 1.4-3x.
_MAX_W_BYTES = 96 << 10
_MAX_FEATURES = 2048
_MAX_CLASSES = 32
_MIN_ROW_BYTES = 256  # 32 float64 or 64 float32 features
_LINE_BYTES = 64
# A chunk of X stays in L2 (512 KiB on Zen 3) beside W between the forward and backward loops
# (Fashion-MNIST rows, one core: 8 rows a chunk 39 ms per 20000 rows, 20 rows 34.5, 40 rows 33.4).
_CHUNK_BYTES = 256 << 10


def suits(n_features: int, n_classes: int, itemsize: int) -> bool:
    """Whether :func:`softmax_head_rows` should replace the BLAS products at this shape."""
    return (
        _MIN_ROW_BYTES <= n_features * itemsize
        and n_features <= _MAX_FEATURES
        and 2 <= n_classes <= _MAX_CLASSES
        and n_features * n_classes * itemsize <= _MAX_W_BYTES
    )


def chunk_rows(n_features: int, itemsize: int) -> int:
    """Rows per chunk: about 256 KiB of X, a multiple of 4."""
    rows = _CHUNK_BYTES // max(n_features * itemsize, 1)
    return int(max(4, rows - rows % 4))


@nb.njit(**JIT_SUM)
def _logits(X, W, b, has_b, z, flat, ahead_lo, ahead_hi):
    """``z = X W^T (+ b)``: two rows by five classes per inner loop, the loop along the features.

    Prefetches ``flat[ahead_lo:ahead_hi]`` (the next chunk of X, flattened) two rows' worth per
    pair of rows, so that memory streams it in while this chunk computes: without it the loads of
    each chunk waited for memory, then the arithmetic ran, one after the other (Fashion-MNIST,
    one core: 1.9 us a row, the sum of the two).
    """
    n, d = X.shape
    K = W.shape[0]
    zero = X.dtype.type(0.0)
    line = _LINE_BYTES // X.itemsize
    i = 0
    while i + 2 <= n:
        x0 = X[i]
        x1 = X[i + 1]
        for p in range(ahead_lo + i * d, min(ahead_lo + (i + 2) * d, ahead_hi), line):
            _prefetch(flat, p)
        k = 0
        while k + 5 <= K:
            w0 = W[k]
            w1 = W[k + 1]
            w2 = W[k + 2]
            w3 = W[k + 3]
            w4 = W[k + 4]
            a0 = a1 = a2 = a3 = a4 = zero
            c0 = c1 = c2 = c3 = c4 = zero
            for j in range(d):
                u = x0[j]
                v = x1[j]
                a0 += u * w0[j]
                a1 += u * w1[j]
                a2 += u * w2[j]
                a3 += u * w3[j]
                a4 += u * w4[j]
                c0 += v * w0[j]
                c1 += v * w1[j]
                c2 += v * w2[j]
                c3 += v * w3[j]
                c4 += v * w4[j]
            z[i, k], z[i, k + 1], z[i, k + 2], z[i, k + 3], z[i, k + 4] = a0, a1, a2, a3, a4
            z[i + 1, k], z[i + 1, k + 1], z[i + 1, k + 2], z[i + 1, k + 3], z[i + 1, k + 4] = c0, c1, c2, c3, c4
            k += 5
        while k < K:
            w = W[k]
            a = zero
            c = zero
            for j in range(d):
                a += x0[j] * w[j]
                c += x1[j] * w[j]
            z[i, k] = a
            z[i + 1, k] = c
            k += 1
        i += 2
    if i < n:
        x0 = X[i]
        for k in range(K):
            w = W[k]
            a = zero
            for j in range(d):
                a += x0[j] * w[j]
            z[i, k] = a
    if has_b:
        for r in range(n):
            for k in range(K):
                z[r, k] += b[k]


@nb.njit(**JIT_SUM)
def _accumulate(G, X, dW):
    """``dW += G^T X``: four rows by five classes per inner loop, the loop along the features."""
    n, d = X.shape
    K = G.shape[1]
    i = 0
    while i + 4 <= n:
        x0 = X[i]
        x1 = X[i + 1]
        x2 = X[i + 2]
        x3 = X[i + 3]
        k = 0
        while k + 5 <= K:
            d0 = dW[k]
            d1 = dW[k + 1]
            d2 = dW[k + 2]
            d3 = dW[k + 3]
            d4 = dW[k + 4]
            g00, g01, g02, g03, g04 = G[i, k], G[i, k + 1], G[i, k + 2], G[i, k + 3], G[i, k + 4]
            g10, g11, g12, g13, g14 = G[i + 1, k], G[i + 1, k + 1], G[i + 1, k + 2], G[i + 1, k + 3], G[i + 1, k + 4]
            g20, g21, g22, g23, g24 = G[i + 2, k], G[i + 2, k + 1], G[i + 2, k + 2], G[i + 2, k + 3], G[i + 2, k + 4]
            g30, g31, g32, g33, g34 = G[i + 3, k], G[i + 3, k + 1], G[i + 3, k + 2], G[i + 3, k + 3], G[i + 3, k + 4]
            for j in range(d):
                p = x0[j]
                q = x1[j]
                r = x2[j]
                s = x3[j]
                d0[j] += g00 * p + g10 * q + g20 * r + g30 * s
                d1[j] += g01 * p + g11 * q + g21 * r + g31 * s
                d2[j] += g02 * p + g12 * q + g22 * r + g32 * s
                d3[j] += g03 * p + g13 * q + g23 * r + g33 * s
                d4[j] += g04 * p + g14 * q + g24 * r + g34 * s
            k += 5
        while k < K:
            dk = dW[k]
            g0, g1, g2, g3 = G[i, k], G[i + 1, k], G[i + 2, k], G[i + 3, k]
            for j in range(d):
                dk[j] += g0 * x0[j] + g1 * x1[j] + g2 * x2[j] + g3 * x3[j]
            k += 1
        i += 4
    while i < n:
        x0 = X[i]
        for k in range(K):
            dk = dW[k]
            g = G[i, k]
            for j in range(d):
                dk[j] += g * x0[j]
        i += 1


@nb.njit(**JIT)
def _flush(dW, dW64, G_sum, db64):
    """Add the chunk-dtype accumulators into the float64 ones and zero them."""
    K, d = dW.shape
    for k in range(K):
        for j in range(d):
            dW64[k, j] += dW[k, j]
            dW[k, j] = 0.0
        db64[k] += G_sum[k]
        G_sum[k] = 0.0


@nb.njit(**JIT)
def softmax_head_rows(
    X, W, b, has_b, labels, weight, sample_weight, lo, hi, chunk, flush, z, dW, dW64, db64, row_loss, lse
):
    r"""Loss sum and gradient of the softmax head over rows ``lo:hi`` of X.

    Parameters (validated by the caller)
    ------------------------------------
    X : (n, d) C-contiguous float32/float64; W : (K, d) in X's dtype; b : (K,) in X's dtype
        (read only when ``has_b``).
    labels : int64 (n,) class indices in ``[0, K)``; weight : float64 (K,) class weights or
        size 0; sample_weight : float64 (n,) or size 0.
    chunk : rows per chunk; flush : rows between additions into the float64 accumulators
        (a multiple of ``chunk``).
    z : (chunk, K) scratch in X's dtype; dW : (K, d) scratch in X's dtype, zero on entry;
    row_loss, lse : float64 (chunk,) scratch.
    dW64 : (K, d) float64, db64 : (K,) float64: the gradient is added into them.

    Returns :math:`\sum_i s_i \ell_i` over the rows, float64.
    """
    K = W.shape[0]
    has_sw = sample_weight.shape[0] > 0
    g_sum = np.zeros(K)  # the intercept's gradient in float64, as the BLAS path sums it
    total = 0.0
    since = 0
    d = X.shape[1]
    flat = X.reshape(-1)
    for start in range(lo, hi, chunk):
        stop = min(start + chunk, hi)
        r = stop - start
        zc = z[:r]
        xc = X[start:stop]
        _logits(xc, W, b, has_b, zc, flat, stop * d, min(stop + chunk, hi) * d)
        sw = sample_weight[start:stop] if has_sw else sample_weight
        loss_c = row_loss[:r]
        lse_c = lse[:r]
        # G over z: no temperature, smoothing or scaling (the estimator's objective is a plain sum).
        _xent_index_tiles(zc, labels[start:stop], weight, 0.0, sw, 1.0, 1.0, zc, True, loss_c, lse_c, 0, r)
        for i in range(r):
            total += loss_c[i]
            for k in range(K):
                g_sum[k] += zc[i, k]
        _accumulate(zc, xc, dW)
        since += r
        if since >= flush:
            _flush(dW, dW64, g_sum, db64)
            since = 0
    _flush(dW, dW64, g_sum, db64)
    return total

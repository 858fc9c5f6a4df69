"""Row passes of softmax cross-entropy: one row at a time, in three passes.

Pass 1 (:func:`_row_max`), pass 2 (:func:`_exp_store` through
:func:`_exp_pass`: the exponentials stored and summed, the next row
prefetched), the normaliser (:func:`_normaliser`, exact for confident
rows) and pass 3 (:func:`_grad_row`); long rows by chunks
(``_chunked_*``, see ``_CHUNK_BYTES``); a large gradient in its own buffer
written by streaming stores from a scratch row (``*_stream``, see
``_STREAM_MIN_BYTES``; integer labels); and the row loops of the two
losses, :func:`_xent_index_rows` (integer labels) and
:func:`_xent_prob_rows` (probability labels), which the parallel drivers of
:mod:`softxent.kernels._cpu` run over blocks of rows. The softmax family
(:mod:`._softmax_rows`) and the few-class tiles (:mod:`._tiles`) use the
passes too.
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np

from ._jit import JIT, JIT_SUM
from ._vmath import _STREAM_BYTES, _prefetch, _store_fence, _stream_scaled, bits_float, float_bits, vexp

# --------------------------------------------------------------------------- row passes


@nb.njit(**JIT)
def _row_max(x):
    """Pass 1: the row max as float64 (NaN if the row holds a positive NaN).

    On the raw bits as signed integers, non-negative floats order as their
    bits and negative ones in reverse (+NaN above +inf, -0 at the bottom). So
    the max is the largest bits if any is >= 0, else the smallest: two
    integer reductions (vpmaxsd, vpminsd) instead of :func:`order_key`'s
    three operations and a max (about 0.055 -> 0.047 ns an element, in L2). Starting both
    at -inf's bits, a negative NaN (above -inf's bits) is never the min: it
    is caught in pass 2, like any NaN.
    """
    lowest = x.dtype.type(-np.inf)
    hi = float_bits(lowest)
    lo = hi
    for c in range(x.shape[0]):
        b = float_bits(x[c])
        hi = b if b > hi else hi
        lo = b if b < lo else lo
    return np.float64(bits_float(hi if hi >= 0 else lo, lowest))


@nb.njit(**JIT)
def _has_nan(x):
    for c in range(x.shape[0]):
        if x[c] != x[c]:
            return True
    return False


# Pass 2 sums its exponentials in blocks of _SUM_BLOCK terms in the data's
# dtype, then the block sums in float64. A float64 accumulator in the loop
# would make LLVM vectorise the whole loop at the width of float64 (4 lanes
# with AVX2), halving the float32 exponential's throughput. The block's terms
# are positive and LLVM spreads them over its vector accumulators (8 lanes x
# 4 with AVX2), so a float32 block sum is good to about 13 ulps (8 terms an
# accumulator, then a 32-way tree); even a scalar loop would stay within 256
# ulps (1.5e-5, a bound random rounding never comes near). The confident rows
# that need more (s < 2) are summed again exactly by _split_sum.
_SUM_BLOCK = 256


# While pass 2 computes on a row that sits in cache, it asks for the next
# row (``ahead``), a block's worth of cache lines per block: pass 1 of that
# row then reads from cache instead of waiting on memory, and the memory
# traffic overlaps the computation instead of following it (2048x32768
# float32, 2 threads: about 5% off the median time). 64-byte lines.
_LINE_BYTES = 64


# The next row is prefetched whole when two rows fit in a core's L2 with
# room to spare (512 KiB on the machines measured); a longer row would
# evict the one being worked on.
_AHEAD_BYTES = 256 << 10


@nb.njit(**JIT)
def _ahead_elements(z):
    """How much of the next row pass 2 prefetches: all of it, or nothing."""
    return z.shape[1] if z.shape[1] * z.itemsize <= _AHEAD_BYTES else 0


@nb.njit(**JIT_SUM)
def _exp_store(x, e, m, inv_t, ahead):
    """Pass 2: ``e = exp((x - m) / T)``, or over ``x`` itself when ``e`` is
    None; return the sum, block sums accumulated in float64 (NaN if any term
    is NaN). Prefetches ``ahead`` (the next row) along the way. Callers go
    through :func:`_exp_pass`."""
    mm = x.dtype.type(m)
    it = x.dtype.type(inv_t)
    n = x.shape[0]
    n_ahead = ahead.shape[0]
    line = _LINE_BYTES // ahead.itemsize
    scaled = inv_t != 1.0  # T = 1 skips a multiply (LLVM unswitches the loop)
    total = 0.0
    # Each block runs on slices: a loop over range(lo, hi) of the row itself
    # was left scalar by LLVM when written in place.
    for lo in range(0, n, _SUM_BLOCK):
        for p in range(lo, min(n_ahead, lo + _SUM_BLOCK), line):
            _prefetch(ahead, p)
        xb = x[lo : min(n, lo + _SUM_BLOCK)]
        acc = x.dtype.type(0.0)
        if e is None:  # resolved when numba compiles: one loop per specialisation
            for c in range(xb.shape[0]):
                d = xb[c] - mm
                v = vexp(d * it if scaled else d)
                xb[c] = v
                acc += v
        else:
            eb = e[lo : lo + xb.shape[0]]
            for c in range(xb.shape[0]):
                d = xb[c] - mm
                v = vexp(d * it if scaled else d)
                eb[c] = v
                acc += v
        total += np.float64(acc)
    return total


@nb.njit(**JIT)
def _exp_pass(x, e, m, inv_t, ahead):
    """Pass 2 into ``e``, which may be ``x`` itself (``inplace``), prefetching
    ``ahead``. In place it runs on one array: with two that alias, LLVM's
    vectorised loop is guarded by a run-time overlap check, which fails and
    sends the row to its scalar loop (measured 3-5x slower)."""
    if e.ctypes.data == x.ctypes.data:
        return _exp_store(x, None, m, inv_t, ahead)
    return _exp_store(x, e, m, inv_t, ahead)


@nb.njit(**JIT_SUM)
def _exp_sum64(x, m):
    """The float64 sum of ``exp(x - m)``, each term in float64 even for
    float32 ``x``: a log-sum-exp near 0 cancels ``m`` against ``log s``, and
    float32 terms would leave it tens of ulps off."""
    total = 0.0
    for c in range(x.shape[0]):
        total += vexp(np.float64(x[c]) - m)
    return total


@nb.njit(**JIT_SUM)
def _split_sum(x, m, inv_t, stored):
    """``(ties, r)``: the number of terms equal to 1 (the maxima) and the
    float64 sum of the others, from the stored exponentials (``stored``) or
    recomputed in float64 from the logits ``x`` (as :func:`_exp_sum64`).
    Used for confident rows only (s < 2), where ``log s = log1p(ties - 1 +
    r)`` must not lose ``r`` to rounding."""
    ties = 0.0
    r = 0.0
    for c in range(x.shape[0]):
        v = np.float64(x[c]) if stored else vexp((np.float64(x[c]) - m) * inv_t)
        top = np.float64(v == 1.0)
        ties += top
        r += np.float64(v) * (1.0 - top)
    return ties, r


@nb.njit(**JIT)
def _normaliser(x, m, inv_t, s, stored):
    """``(log s, s)`` for a row whose pass-2 sum is ``s``.

    When ``s < 2`` the row is confident (its top class has a > 1/2) and
    ``log s`` is taken as ``log1p(ties - 1 + r)`` from an exact split, so that
    ``a_max - 1 = expm1(-log s)`` keeps all its digits (e.g. -4e-18 at logits
    [40, 0], where ``1/s - 1`` would give 0).
    """
    if s < 2.0:
        ties, r = _split_sum(x, m, inv_t, stored)
        return math.log1p((ties - 1.0) + r), ties + r
    return math.log(s), s


@nb.njit(**JIT_SUM)
def _weighted_shift_sum(x, m, inv_t, weight):
    """``sum_c w_c d_c`` with ``d = (x - m) / T`` (``weight`` of size 0: all
    ones); classes of weight 0 are skipped, so a masked one adds no 0 * -inf."""
    total = 0.0
    if weight.shape[0] == 0:
        for c in range(x.shape[0]):
            total += (np.float64(x[c]) - m) * inv_t
    else:
        for c in range(x.shape[0]):
            wc = weight[c]
            total += wc * ((np.float64(x[c]) - m) * inv_t) if wc > 0.0 else 0.0
    return total


@nb.njit(**JIT)
def _fill(g, value):
    for c in range(g.shape[0]):
        g[c] = value


# Row states.
_NORMAL, _MASKED, _UNDEFINED = 0, 1, 2


@nb.njit(**JIT)
def _row_state(x, m):
    """After pass 1: NaN or +inf -> undefined; all -inf (or V = 0) -> masked."""
    if m != m or m == np.inf:
        return _UNDEFINED
    if m == -np.inf:
        return _UNDEFINED if _has_nan(x) else _MASKED
    return _NORMAL


# --------------------------------------------------------------------------- cross-entropy


@nb.njit(**JIT)
def _scale_row(g, f):
    ff = g.dtype.type(f)
    for c in range(g.shape[0]):
        g[c] = g[c] * ff


@nb.njit(**JIT)
def _grad_row(g, top, t_sum, a_coef, coef, weight, k1):
    """Pass 3: the stored e_c becomes coef * (a_c sum(t) - t_c), eq. (15), with
    t_c = k1 * w_c (the label's own share is added by the caller) and
    a_c = e_c / s = e_c * a_coef / t_sum. The top class (e_c == 1) uses
    t_sum (a - 1) + (t_sum - t_c), whose first term ``top`` = t_sum *
    expm1(-log s) has no cancellation.

    Without smoothing (k1 = 0) every t_c here is 0 and the top class's value
    is t_sum (a - 1) + t_sum = t_sum a, as for any other class (the caller
    rewrites the label's entry, the only one that cancels): the pass is a
    plain scale, one multiply an element instead of a compare, a multiply-add
    and a select (pass 3 alone about 25% faster)."""
    if k1 == 0.0:
        _scale_row(g, a_coef * coef)
        return
    if weight.shape[0] == 0:
        # Uniform t_c: constants per row, the loop runs in the data's dtype.
        dt = g.dtype.type
        one = dt(1.0)
        top_val = dt((top + (t_sum - k1)) * coef)
        ka = dt(a_coef * coef)
        kt = dt(k1 * coef)
        for c in range(g.shape[0]):
            e = g[c]
            g[c] = top_val if e == one else e * ka - kt
    else:
        for c in range(g.shape[0]):
            e = np.float64(g[c])
            t_c = k1 * weight[c]
            val = (top + (t_sum - t_c)) if e == 1.0 else (a_coef * e - t_c)
            g[c] = val * coef


# Rows longer than _CHUNK_BYTES run passes 1 and 2 chunk by chunk: each
# chunk gets its own max m_b and exponentials e^{(x - m_b)/T} while the next
# chunk is prefetched; the row's sum is sum_b s_b e^{(m_b - M)/T} with M the
# row max, and pass 3 scales each chunk by its factor (only chunks with m_b =
# M hold the top class). Still one exponential per element, and pass 1 of a
# chunk reads from cache instead of waiting on memory. Whole rows with the
# next one prefetched (_AHEAD_BYTES) did worse once a row outgrew 64 KiB:
# 512x131072 float32 (512 KiB rows, too long to prefetch at all) in place,
# 2 threads, 32 -> 27 ms; 2048x32768 (128 KiB rows) about 29 -> 27 ms
# (medians of four alternating benchmark runs each). Used without label
# smoothing only, whose sum_c w_c d_c needs M before x is overwritten.
_CHUNK_BYTES = 64 << 10


@nb.njit(**JIT)
def _chunk_elements(z, k1):
    """Elements per chunk of a long row; 0 when rows go whole."""
    if k1 > 0.0 or z.shape[1] * z.itemsize <= _CHUNK_BYTES:
        return 0
    return _CHUNK_BYTES // z.itemsize


@nb.njit(**JIT)
def _chunked_exp(x, e, inv_t, chunk, mb, nxt):
    """Passes 1 and 2 of a long row by chunks (see _CHUNK_BYTES): ``mb[b]``
    = the chunk's max, ``e`` = its exponentials relative to it. Returns
    ``(M, s)``, the row max and the float64 sum relative to it: ``(-inf,
    0)`` for a row of -inf only, NaN when a chunk holds NaN or +inf."""
    n = x.shape[0]
    big = -np.inf
    s = 0.0
    undefined = False
    for b in range(mb.shape[0]):
        lo = b * chunk
        hi = min(n, lo + chunk)
        xb = x[lo:hi]
        m_b = _row_max(xb)
        mb[b] = m_b
        state = _row_state(xb, m_b)
        if state == _UNDEFINED:
            undefined = True
            continue
        if state == _MASKED:  # every class of the chunk masked: e = 0 there
            _fill(e[lo:hi], 0.0)
            continue
        ahead = x[hi : min(n, hi + chunk)] if hi < n else nxt
        s_b = _exp_pass(xb, e[lo:hi], m_b, inv_t, ahead)
        # Rescale the running sum to the new max as it grows (online softmax).
        if m_b > big:
            s = s * math.exp((big - m_b) * inv_t) + s_b if big > -np.inf else s_b
            big = m_b
        else:
            s += s_b * math.exp((m_b - big) * inv_t)
    if undefined:
        return np.nan, np.nan
    return big, s


@nb.njit(**JIT)
def _chunked_normaliser(e, chunk, mb, big, inv_t, s):
    """:func:`_normaliser` of a chunked row: ties only in the chunks whose
    max is the row's; the other chunks' exponentials are scaled to M."""
    if s >= 2.0:
        return math.log(s), s
    n = e.shape[0]
    ties = 0.0
    r = 0.0
    for b in range(mb.shape[0]):
        if mb[b] == -np.inf:
            continue
        lo = b * chunk
        t_b, r_b = _split_sum(e[lo : min(n, lo + chunk)], 0.0, 1.0, True)
        if mb[b] == big:
            ties += t_b
            r += r_b
        else:  # its e = 1 terms are its own max, below M: not ties
            r += (t_b + r_b) * math.exp((mb[b] - big) * inv_t)
    return math.log1p((ties - 1.0) + r), ties + r


@nb.njit(**JIT)
def _chunked_grad(g, chunk, mb, big, inv_t, a_coef, coef):
    """Pass 3 of a chunked row (no smoothing, so t_c = 0 but for the label,
    which the caller rewrites): ``e * a e^{(m_b - M)/T} * coef``, the factor
    1 in the chunks whose max is the row's (see :func:`_grad_row`)."""
    n = g.shape[0]
    for b in range(mb.shape[0]):
        if mb[b] > -np.inf:  # an all-masked chunk already holds its zeros
            f = 1.0 if mb[b] == big else math.exp((mb[b] - big) * inv_t)
            _scale_row(g[b * chunk : min(n, b * chunk + chunk)], a_coef * f * coef)


# Streaming stores skip the cache: worth it only for a gradient too large to
# stay there for whoever reads it next (a smaller one would come back from
# memory); 16 MiB, half the L3 that a Zen 3 core shares with its neighbours.
# And only for long rows: each row starts and ends with ordinary stores into
# lines that its streamed part shares, and with short rows those lines are
# many (65536x300 float32, out=: 16 -> 54 ms when streamed).
_STREAM_MIN_BYTES = 16 << 20
_STREAM_MIN_ROW_BYTES = 16 << 10


@nb.njit(**JIT)
def _stream_scale(g, e, f):
    """``g = e * f`` through streaming stores (see :func:`._vmath._stream_scaled`):
    ordinary stores up to the first 32-byte boundary of ``g`` and after the
    last whole vector."""
    n = g.shape[0]
    ff = g.dtype.type(f)
    lanes = _STREAM_BYTES // g.itemsize
    addr = np.int64(g.ctypes.data)
    head = min(n, ((_STREAM_BYTES - addr % _STREAM_BYTES) % _STREAM_BYTES) // g.itemsize)
    for c in range(head):
        g[c] = e[c] * ff
    c = head
    while c + lanes <= n:
        _stream_scaled(g, c, e, c, ff)
        c += lanes
    for t in range(c, n):
        g[t] = e[t] * ff


@nb.njit(**JIT)
def _grad_row_stream(g, e, top, t_sum, a_coef, coef, weight, k1):
    """:func:`_grad_row` from the exponentials ``e`` (a scratch row, which it
    overwrites with smoothing) into ``g`` by streaming stores."""
    if k1 == 0.0:
        _stream_scale(g, e, a_coef * coef)
        return
    _grad_row(e, top, t_sum, a_coef, coef, weight, k1)
    _stream_scale(g, e, 1.0)


@nb.njit(**JIT)
def _chunked_grad_stream(g, e, chunk, mb, big, inv_t, a_coef, coef):
    """:func:`_chunked_grad` from the exponentials ``e`` (a scratch row) into
    ``g`` by streaming stores; an all-masked chunk gets its zeros."""
    n = g.shape[0]
    for b in range(mb.shape[0]):
        lo = b * chunk
        hi = min(n, lo + chunk)
        if mb[b] > -np.inf:
            f = 1.0 if mb[b] == big else math.exp((mb[b] - big) * inv_t)
            _stream_scale(g[lo:hi], e[lo:hi], a_coef * f * coef)
        else:
            _fill(g[lo:hi], 0.0)


@nb.njit(**JIT)
def _xent_index_rows(
    z, labels, weight, smoothing, sample_weight, inv_t, grad_scale, grad, need_grad, loss, lse, lo, hi
):
    """Rows ``lo:hi`` of :func:`softmax_xent_index` (integer labels)."""
    n_cls = z.shape[1]
    ahead_n = _ahead_elements(z)
    n_rows = z.shape[0]  # the next row may be the next block's: prefetch it all the same
    has_w = weight.shape[0] > 0
    has_sw = sample_weight.shape[0] > 0
    k1 = smoothing / n_cls if n_cls > 0 else 0.0
    chunk = _chunk_elements(z, k1)
    # A large gradient of long rows in its own buffer (out=, or a new array): the
    # exponentials go to a scratch row and pass 3 writes the gradient by
    # streaming stores, so that no line of it is read first (only where the
    # rows are aligned to their elements, so that stepping to a 32-byte
    # boundary lands on one).
    stream = (
        need_grad
        and grad.ctypes.data != z.ctypes.data
        and grad.size * grad.itemsize >= _STREAM_MIN_BYTES
        and n_cls * grad.itemsize >= _STREAM_MIN_ROW_BYTES
        and np.int64(grad.ctypes.data) % grad.itemsize == 0
    )
    scratch = np.empty(n_cls if (stream or not need_grad) else 0, dtype=z.dtype)
    mb = np.empty((n_cls + chunk - 1) // chunk if chunk > 0 else 0)
    w_sum = 0.0
    if has_w:
        for c in range(n_cls):
            w_sum += weight[c]
    else:
        w_sum = float(n_cls)
    for i in range(lo, hi):
        x = z[i]
        g = grad[i]
        dest = g if (need_grad and not stream) else scratch
        y = labels[i]
        sw = sample_weight[i] if has_sw else 1.0
        kept = y >= 0
        w_y = (weight[y] if has_w else 1.0) if kept else 0.0
        t_sum = ((1.0 - smoothing) * w_y + k1 * w_sum) if kept else 0.0
        counts = sw * t_sum > 0.0
        x_y = np.float64(x[y]) if kept else 0.0  # read before an in-place pass 2
        if chunk > 0:  # passes 1 and 2 by chunks
            m, s = _chunked_exp(x, dest, inv_t, chunk, mb, z[min(i + 1, n_rows - 1), :chunk])
            state = _UNDEFINED if m != m else (_MASKED if m == -np.inf else _NORMAL)
        else:
            m = _row_max(x)
            state = _row_state(x, m)
        if state == _MASKED:
            lse[i] = -np.inf
            loss[i] = np.nan if counts else 0.0
            if need_grad:
                _fill(g, 0.0)
            continue
        # sum_c w_c d_c for the smoothing term, before pass 2 may overwrite x.
        wd = _weighted_shift_sum(x, m, inv_t, weight) if (k1 > 0.0 and counts and state == _NORMAL) else 0.0
        # Without a gradient the exponentials go to a scratch row: the same
        # summation as with one, so the loss is identical bit for bit.
        if chunk == 0:
            s = _exp_pass(x, dest, m, inv_t, z[min(i + 1, n_rows - 1), :ahead_n])
        if s != s:
            state = _UNDEFINED
        log_s = np.nan
        if state == _NORMAL:
            if chunk > 0:
                log_s, s = _chunked_normaliser(dest, chunk, mb, m, inv_t, s)
            else:
                log_s, s = _normaliser(dest, m, inv_t, s, True)
        lse[i] = m * inv_t + log_s
        if not counts:  # ignored or weighted 0: exactly 0, whatever the logits
            loss[i] = 0.0
            if need_grad:
                _fill(g, 0.0)
            continue
        if state == _UNDEFINED:  # NaN in, NaN out for the row
            loss[i] = np.nan
            if need_grad:
                _fill(g, np.nan)
            continue
        d_y = (x_y - m) * inv_t
        # eq. (7) with t = (1-eps) w_y e_y + (eps/V) w:  sum_c t_c (log s - d_c);
        # a label of weight 0 adds nothing, even on a masked class (0 * -inf).
        label_term = (1.0 - smoothing) * w_y * d_y if w_y > 0.0 else 0.0
        loss[i] = sw * (t_sum * log_s - label_term - k1 * wd)
        if not need_grad:
            continue
        coef = sw * inv_t * grad_scale
        # The label's entry also carries (1 - eps) w_y of the target: eq. (16).
        e_y = np.float64(vexp(x.dtype.type(d_y)))
        # t_sum (a_max - 1) is read only with smoothing (by _grad_row) or when
        # the label is a top class: otherwise its expm1, a libm call, is
        # skipped (8192x100: about a fifth of a row's time outside its passes).
        top = t_sum * math.expm1(-log_s) if (k1 > 0.0 or e_y == 1.0) else 0.0
        a_coef = t_sum / s
        if stream and chunk > 0:
            _chunked_grad_stream(g, dest, chunk, mb, m, inv_t, a_coef, coef)
        elif stream:
            _grad_row_stream(g, dest, top, t_sum, a_coef, coef, weight, k1)
        elif chunk > 0:
            _chunked_grad(g, chunk, mb, m, inv_t, a_coef, coef)
        else:
            _grad_row(g, top, t_sum, a_coef, coef, weight, k1)
        t_y = k1 * w_y + (1.0 - smoothing) * w_y
        rest = k1 * (w_sum - w_y)  # t_sum - t_y, exactly 0 without smoothing
        val = (top + rest) if e_y == 1.0 else (a_coef * e_y - t_y)
        g[y] = val * coef
    if stream:
        _store_fence()


@nb.njit(**JIT_SUM)
def _target_sums(x, yrow, m, inv_t, weight, keep, k1, normal):
    """(sum_c t_c, sum_c t_c d_c) with t_c = w_c (keep * y_c + k1); terms with
    t_c = 0 are skipped (0 * -inf = 0)."""
    has_w = weight.shape[0] > 0
    t_sum = 0.0
    td = 0.0
    for c in range(x.shape[0]):
        t_c = (keep * np.float64(yrow[c]) + k1) * (weight[c] if has_w else 1.0)
        t_sum += t_c
        if normal:
            td += t_c * ((np.float64(x[c]) - m) * inv_t) if t_c > 0.0 else 0.0
    return t_sum, td


@nb.njit(**JIT)
def _xent_prob_rows(z, target, weight, smoothing, sample_weight, inv_t, grad_scale, grad, need_grad, loss, lse, lo, hi):
    """Rows ``lo:hi`` of :func:`softmax_xent_prob`: probability labels ``target`` (N, V),
    otherwise as :func:`_xent_index_rows`.

    The effective target is ``t_c = w_c ((1 - eps) target_c + eps / V)``.
    """
    n_cls = z.shape[1]
    ahead_n = _ahead_elements(z)
    n_rows = z.shape[0]  # the next row may be the next block's: prefetch it all the same
    has_w = weight.shape[0] > 0
    has_sw = sample_weight.shape[0] > 0
    k1 = smoothing / n_cls if n_cls > 0 else 0.0
    keep = 1.0 - smoothing
    scratch = np.empty(0 if need_grad else n_cls, dtype=z.dtype)
    for i in range(lo, hi):
        x = z[i]
        g = grad[i]
        yrow = target[i]
        sw = sample_weight[i] if has_sw else 1.0
        m = _row_max(x)
        state = _row_state(x, m)
        t_sum, td = _target_sums(x, yrow, m, inv_t, weight, keep, k1, state == _NORMAL)
        counts = sw * t_sum > 0.0
        if state == _MASKED:
            lse[i] = -np.inf
            loss[i] = np.nan if counts else 0.0
            if need_grad:
                _fill(g, 0.0)
            continue
        # Without a gradient the exponentials go to a scratch row: the same
        # summation as with one, so the loss is identical bit for bit.
        s = _exp_pass(x, g if need_grad else scratch, m, inv_t, z[min(i + 1, n_rows - 1), :ahead_n])
        if s != s:
            state = _UNDEFINED
        log_s = np.nan
        if state == _NORMAL:
            log_s, s = _normaliser(g if need_grad else scratch, m, inv_t, s, True)
        lse[i] = m * inv_t + log_s
        if not counts:
            loss[i] = 0.0
            if need_grad:
                _fill(g, 0.0)
            continue
        if state == _UNDEFINED:
            loss[i] = np.nan
            if need_grad:
                _fill(g, np.nan)
            continue
        loss[i] = sw * (t_sum * log_s - td)
        if not need_grad:
            continue
        coef = sw * inv_t * grad_scale
        top = t_sum * math.expm1(-log_s)
        a_coef = t_sum / s
        for c in range(n_cls):
            e = np.float64(g[c])
            t_c = (keep * np.float64(yrow[c]) + k1) * (weight[c] if has_w else 1.0)
            val = (top + (t_sum - t_c)) if e == 1.0 else (a_coef * e - t_c)
            g[c] = val * coef

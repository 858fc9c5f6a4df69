"""Row loops of the softmax family: softmax, log-softmax and log-sum-exp of
each row, from the same passes as the cross-entropy (:mod:`._rows`); the
parallel drivers ``softmax_rows`` and ``logsumexp_rows`` live in
:mod:`softxent.kernels._cpu`.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from ._jit import JIT
from ._rows import (
    _MASKED,
    _UNDEFINED,
    _ahead_elements,
    _exp_pass,
    _exp_sum64,
    _fill,
    _has_nan,
    _normaliser,
    _row_max,
    _row_state,
)


@nb.njit(**JIT)
def _softmax_rows(z, out, inv_t, log, lo, hi):
    """``out`` = softmax (or log-softmax if ``log``) of each row of ``z / T``.
    ``out`` must not alias ``z``. Row conventions as in :mod:`softxent._softmax`."""
    n_cls = z.shape[1]
    ahead_n = _ahead_elements(z)
    n_rows = z.shape[0]  # the next row may be the next block's: prefetch it all the same
    for i in range(lo, hi):
        x = z[i]
        o = out[i]
        m = _row_max(x)
        state = _row_state(x, m)
        if state == _MASKED:
            _fill(o, -np.inf if log else 0.0)
            continue
        s = _exp_pass(x, o, m, inv_t, z[min(i + 1, n_rows - 1), :ahead_n])
        if state == _UNDEFINED or s != s:
            _fill(o, np.nan)
            continue
        log_s, s = _normaliser(o, m, inv_t, s, True)
        if log:
            mm = x.dtype.type(m)
            it = x.dtype.type(inv_t)
            for c in range(n_cls):
                o[c] = np.float64((x[c] - mm) * it) - log_s
        else:
            inv_s = 1.0 / s
            for c in range(n_cls):
                o[c] = np.float64(o[c]) * inv_s


@nb.njit(**JIT)
def _logsumexp_rows(z, out, lo, hi):
    """``out[i]`` = log sum exp of row ``i`` (float64); row conventions as in
    :func:`softxent.logsumexp`."""
    for i in range(lo, hi):
        x = z[i]
        m = _row_max(x)
        state = _row_state(x, m)
        if state == _MASKED:
            out[i] = -np.inf
            continue
        if m == np.inf and not _has_nan(x):
            out[i] = np.inf
            continue
        s = _exp_sum64(x, m)
        if state == _UNDEFINED or s != s:
            out[i] = np.nan
        else:
            out[i] = m + _normaliser(x, m, 1.0, s, False)[0]
